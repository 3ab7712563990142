"""The sync engine's bookkeeping without a build: what is kept, what is deleted, safe
paths, and the schedule that decides when a source is due; the Celery task's beat entry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from connector_helpers import settings_with

from ingest.connectors.base import Doc, safe_relpath
from ingest.connectors.sync import _Mirror, due_sources, source_dir


def _previous(root, **docs):
    out = {}
    for doc_id, body in docs.items():
        path = root / "c" / f"{doc_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        out[doc_id] = {"version": "1", "path": f"{doc_id}.md", "collection": "c", "url": None}
    return out


def test_unreported_documents_go_and_failures_keep_their_last_copy(tmp_path):
    root = tmp_path / "docs"
    prev = _previous(root, keep="a", flaky="b", unshared="c", deleted="d", changed="e")
    m = _Mirror(root, prev, max_documents=100)
    m.unchanged("keep")
    m.failed("flaky", "timeout: ReadTimeout")  # transient: the last copy keeps serving
    m.failed("unshared", "HTTP 403: no longer readable", gone=True)
    m.put(Doc("changed", "2", "changed.md", "c"), b"new")
    m.put(Doc("new", "1", "new.md", "c"), b"fresh")
    assert m.finish() == 2  # unshared and deleted
    names = sorted(p.name for p in (root / "c").iterdir())
    assert names == ["changed.md", "flaky.md", "keep.md", "new.md"]
    assert (root / "c" / "changed.md").read_bytes() == b"new"
    assert [f["id"] for f in m.failures] == ["flaky", "unshared"]
    assert m.changed


def test_a_put_with_identical_bytes_changes_nothing(tmp_path):
    root = tmp_path / "docs"
    prev = _previous(root, same="body")
    m = _Mirror(root, prev, max_documents=100)
    m.put(Doc("same", "2", "same.md", "c"), b"body")
    assert m.finish() == 0 and not m.changed


def test_max_documents_and_path_collisions(tmp_path):
    m = _Mirror(tmp_path, {}, max_documents=2)
    m.put(Doc("A", "1", "a.md", "c"), b"1")
    m.put(Doc("a", "1", "a.md", "c"), b"2")  # same mirror path, another document
    m.put(Doc("b", "1", "b.md", "c"), b"3")  # over the limit
    assert m.full() and len(m.docs) == 2 and m.docs["a"]["path"].startswith("a~")


def test_safe_relpath():
    assert safe_relpath("../../etc/passwd") == "etc/passwd"
    assert safe_relpath(".github/CONTRIBUTING.md") == "_github/CONTRIBUTING.md"
    assert safe_relpath("/") == "index"
    assert safe_relpath("a/b c/<x>.md") == "a/b c/_x_.md"
    long = safe_relpath("x" * 300 + ".pdf")
    assert len(long) <= 100 and long.endswith(".pdf")
    assert safe_relpath("/".join(["d"] * 40)).count("/") == 15


def test_due_sources_follow_each_schedule(tmp_path):
    settings = settings_with(
        tmp_path,
        hourly={"kind": "git", "url": "/r", "collection": "c", "schedule": "0 * * * *"},
        manual={"kind": "git", "url": "/r", "collection": "c"},
        fresh={"kind": "git", "url": "/r", "collection": "c", "schedule": "0 * * * *"},
    )
    now = datetime(2026, 12, 3, 10, 5).astimezone()
    for name, last in (("hourly", now - timedelta(minutes=70)), ("fresh", now)):
        folder = source_dir(settings, name)
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"last_sync": last.isoformat()}))
    assert due_sources(settings, now) == ["hourly"]
    state = source_dir(settings, "fresh") / "state.json"
    state.write_text(json.dumps({"last_sync": now.isoformat(), "needs_build": True}))
    assert due_sources(settings, now) == ["fresh", "hourly"]  # a build is owed


def test_the_task_and_its_beat_entry_are_registered(tmp_path):
    from celery.signals import beat_init

    from lorebot import contracts
    from workers.app import create_app

    settings = settings_with(tmp_path)
    app = create_app(settings, warm=False)
    assert contracts.TASK_SOURCE_SYNC in app.tasks
    assert contracts.TASK_QUEUES[contracts.TASK_SOURCE_SYNC] == contracts.QUEUE_INGEST

    class Scheduler:
        entries: dict = {}

        def update_from_dict(self, d):
            self.entries.update(d)

    class Beat:
        pass

    beat = Beat()
    beat.app, beat.scheduler = app, Scheduler()
    beat_init.send(sender=beat)
    entry = beat.scheduler.entries["sources-due"]
    assert entry["task"] == contracts.TASK_SOURCE_SYNC and entry["kwargs"] == {"name": None}
    assert entry["options"]["queue"] == contracts.QUEUE_INGEST
    assert entry["schedule"] == settings.sources.check_every_s


def test_the_task_reports_each_source_without_raising(tmp_path):
    from workers.tasks.sources import sync_impl

    settings = settings_with(
        tmp_path, broken={"kind": "git", "url": str(tmp_path / "nope"), "collection": "c"}
    )
    result = sync_impl(settings, "broken")
    assert result["status"] == "failed"
    assert "git fetch failed" in result["sources"][0]["message"]
    assert sync_impl(settings, None) == {"status": "ok", "sources": []}  # nothing scheduled


def test_a_password_in_a_source_url_is_refused_without_echoing_it(tmp_path, monkeypatch):
    import pytest

    from lorebot.errors import ConfigError
    from lorebot.settings import load_settings

    monkeypatch.setenv("LOREBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOREBOT_SOURCES__DEFINED__R__KIND", "git")
    monkeypatch.setenv("LOREBOT_SOURCES__DEFINED__R__COLLECTION", "c")
    monkeypatch.setenv(
        "LOREBOT_SOURCES__DEFINED__R__URL", "https://bot:ghp_pw123@git.example.org/r"
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "holds a password" in err.value.one_line() and "ghp_pw123" not in err.value.one_line()


def test_documents_over_max_documents_are_counted_in_the_report(tmp_path):
    m = _Mirror(tmp_path, {}, max_documents=1)
    for i in range(3):
        m.put(Doc(str(i), "1", f"{i}.md", "c"), b"x")
    m.finish()
    assert m.failures[-1]["reason"].endswith("2 more documents not taken")


def test_documents_without_viewers_start_an_asker_source_over(tmp_path):
    """A Drive or Graph changes feed never reports an unchanged document again: documents
    synced before their viewers were read would answer nobody for ever, so the cursor is
    dropped and the whole source listed (unchanged documents are still not fetched)."""
    from ingest.connectors.sync import _save_state, load_state, sync_source

    settings = settings_with(
        tmp_path, gd={"kind": "gdrive", "collection": "c"}, gd2={"kind": "gdrive",
        "collection": "c", "permissions": "collections"})  # fmt: skip
    seen = []

    class Feed:
        def sync(self, sink, cursor):
            seen.append(dict(cursor))
            for doc_id in sink.known_ids():
                sink.viewers(doc_id, [["anyone"]])
                sink.unchanged(doc_id)
            return {"page_token": "9"}

    for name in ("gd", "gd2"):
        root = source_dir(settings, name) / "docs"
        _save_state(settings, name, {"cursor": {"page_token": "5"}, "needs_build": False,
                                     "docs": _previous(root, old="body")})  # fmt: skip
        sync_source(settings, name, connector=Feed())
    assert seen[0] == {} and seen[1] == {"page_token": "5"}
    assert load_state(settings, "gd")["docs"]["old"]["acl"] == [["anyone"]]
    seen.clear()
    sync_source(settings, "gd", connector=Feed())  # viewers known now: incremental again
    assert seen == [{"page_token": "9"}]
