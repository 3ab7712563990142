"""Building versions: incremental add/change/delete, full rebuilds, bad input, atomicity."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from ingest_fixtures import settings_for

from ingest import Source, build_index, current_version, list_versions, open_index
from lorebot.errors import IngestError


class CountingEmbedder:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.texts = 0

    def encode(self, texts, **kw):
        self.texts += len(texts)
        return self.inner.encode(texts, **kw)

    def encode_with_spans(self, texts, spans):
        self.texts += len(texts)
        return self.inner.encode_with_spans(texts, spans)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def docs(root: Path) -> None:
    write(root / "leave.md", "# Leave\n\nEmployees get 27 days of annual leave each year.\n")
    write(
        root / "vpn.txt", "VPN\n\nThe VPN gateway listens on port 51820 for the WireGuard client.\n"
    )
    write(
        root / "sub/expenses.md",
        "# Expenses\n\nMeals are reimbursed up to 45 euros a day on trips.\n",
    )


def sources_of(report):
    return {f.path: f.status for f in report.files}


def test_incremental_add_change_delete(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    docs(root)
    settings = settings_for(tmp_path)
    emb = CountingEmbedder(embedder)
    r1 = build_index(settings, [Source(root, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert sources_of(r1) == {"leave.md": "ok", "vpn.txt": "ok", "sub/expenses.md": "ok"}
    assert r1.new_version and current_version(settings) == r1.version
    first_embeds = emb.texts
    with open_index(settings, embedder=embedder) as ix:
        ids_v1 = {h.chunk.source: h.chunk.chunk_id for h in ix.search("leave vpn expenses", k=10)}

    # no change: nothing parsed or embedded, no new version
    r2 = build_index(settings, [Source(root, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert set(sources_of(r2).values()) == {"unchanged"}
    assert not r2.new_version and r2.version == r1.version
    assert emb.texts == first_embeds
    assert list_versions(settings) == [r1.version]

    # change one, add one, delete one
    write(root / "leave.md", "# Leave\n\nEmployees get 30 days of annual leave each year.\n")
    write(root / "parking.txt", "Parking\n\nVisitor parking is on level minus two.\n")
    (root / "vpn.txt").unlink()
    r3 = build_index(settings, [Source(root, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert sources_of(r3) == {"leave.md": "ok", "parking.txt": "ok", "sub/expenses.md": "unchanged"}
    assert r3.removed == ["vpn.txt"]
    assert emb.texts == first_embeds + r3.chunks_new  # only the changed and new files
    assert r3.chunks_new == 2
    with open_index(settings, embedder=embedder) as ix:
        hits = ix.search("annual leave days", k=5)
        leave = [h for h in hits if h.chunk.source == "leave.md"]
        assert leave and "30 days" in leave[0].chunk.text
        assert not any("27 days" in h.chunk.text for h in ix.search("27 days annual leave", k=10))
        assert not any(h.chunk.source == "vpn.txt" for h in ix.search("VPN port WireGuard", k=10))
        unchanged = [
            h for h in ix.search("meals reimbursed", k=3) if h.chunk.source == "sub/expenses.md"
        ]
        assert unchanged[0].chunk.chunk_id == ids_v1["sub/expenses.md"]  # carried, same id
        assert ix.stats()["documents"] == 3

    # full rebuild re-embeds everything
    before = emb.texts
    r4 = build_index(
        settings, [Source(root, "hr")], full=True, progress=False, embedder=emb, pool=parse_pool
    )
    assert set(sources_of(r4).values()) == {"ok"} and r4.new_version
    assert emb.texts - before == r4.chunks_total == 3


def test_other_sources_and_collections_are_kept(tmp_path, embedder, parse_pool):
    hr, eng = tmp_path / "hr", tmp_path / "eng"
    docs(hr)
    write(eng / "deploy.md", "# Deploys\n\nDeploys happen on Tuesdays.\n")
    settings = settings_for(tmp_path)
    build_index(settings, [Source(hr, "hr")], progress=False, embedder=embedder, pool=parse_pool)
    r = build_index(
        settings, [Source(eng, "eng")], progress=False, embedder=embedder, pool=parse_pool
    )
    assert sources_of(r) == {"deploy.md": "ok"}
    with open_index(settings, embedder=embedder) as ix:
        cols = ix.stats()["collections"]
        assert cols["hr"]["documents"] == 3 and cols["eng"]["documents"] == 1


def test_bad_files_are_recorded_and_never_indexed(tmp_path, embedder, bad_docs, parse_pool):
    folder, expected = bad_docs
    good = tmp_path / "mixed"
    docs(good)
    settings = settings_for(tmp_path)
    report = build_index(
        settings,
        [Source(good, "hr"), Source(folder, "hr")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
    )
    by_path = {f.path: f for f in report.files}
    for name, prefix in expected.items():
        res = by_path[name]
        assert res.status in ("failed", "skipped"), (name, res)
        assert res.reason and res.reason.startswith(prefix), (name, res.reason)
        assert res.chunks == 0
    assert by_path["utf16.txt"].status == "ok"  # UTF-16 text is fine
    assert by_path["locked.pdf"].status == "failed" and by_path["bundle.zip"].status == "skipped"
    with open_index(settings, embedder=embedder) as ix:
        indexed = {r[0] for r in ix.db.execute("SELECT DISTINCT source FROM chunks")}
    assert indexed == {"leave.md", "vpn.txt", "sub/expenses.md", "utf16.txt"}
    d = report.to_dict()
    assert d["counts"]["failed"] == report.failed >= 4
    json.dumps(d)  # machine-readable
    table = report.table()
    assert table.row_count >= 5

    # unchanged bad files are not parsed again; their failure is carried over
    again = build_index(
        settings,
        [Source(good, "hr"), Source(folder, "hr")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
    )
    assert not again.new_version
    assert {f.path: f.reason for f in again.files if f.status == "failed"} == {
        f.path: f.reason for f in report.files if f.status == "failed"
    }


def test_size_limit(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    docs(root)
    write(root / "huge.txt", "word " * 3000)
    settings = settings_for(tmp_path, max_file_mb=0.01)
    events = []
    report = build_index(
        settings,
        [Source(root, "hr")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
        on_progress=lambda *e: events.append(e),
    )
    huge = next(f for f in report.files if f.path == "huge.txt")
    assert huge.status == "skipped" and huge.reason.startswith("too large")
    # progress reported per stage, ending with the write
    assert ("parse", 3, 3) in events and ("embed", 3, 3) in events
    assert events[-1] == ("write", 1, 1)


def test_missing_path_and_empty_folder_write_nothing(tmp_path, embedder, parse_pool):
    settings = settings_for(tmp_path)
    with pytest.raises(IngestError) as err:
        build_index(settings, [Source(tmp_path / "missing", "hr")], progress=False, pool=parse_pool)
    assert "does not exist" in err.value.one_line()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("x")
    with pytest.raises(IngestError) as err:
        build_index(settings, [Source(tmp_path / "empty", "hr")], progress=False, pool=parse_pool)
    assert "no files found" in err.value.message and err.value.fix
    assert not settings.index_dir.exists() or not list_versions(settings)
    assert current_version(settings) is None


def test_nothing_indexable_is_an_error_with_the_report(tmp_path, embedder, bad_docs, parse_pool):
    folder, _ = bad_docs
    settings = settings_for(tmp_path)
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for name in ("locked.pdf", "broken.docx", "bundle.zip"):
        (only_bad / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(IngestError) as err:
        build_index(
            settings, [Source(only_bad, "hr")], progress=False, embedder=embedder, pool=parse_pool
        )
    assert err.value.report.failed == 2 and err.value.report.skipped == 1
    assert current_version(settings) is None and list_versions(settings) == []


def test_parse_timeout_is_recorded(tmp_path, embedder):
    root = tmp_path / "docs"
    docs(root)
    settings = settings_for(tmp_path)
    # a limit no parser can meet: every file times out, its worker is killed, the run
    # still ends with a report (and, having nothing to index, an error)
    with pytest.raises(IngestError) as err:
        build_index(
            settings, [Source(root, "hr")], progress=False, embedder=embedder, file_timeout_s=0.001
        )
    files = err.value.report.files
    assert len(files) == 3 and {f.status for f in files} == {"failed"}
    assert all(f.reason.startswith("timeout") for f in files)
    assert current_version(settings) is None


def test_keep_n_versions_and_old_reader_survives(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    docs(root)
    settings = settings_for(tmp_path, keep_versions=2)
    seen = []
    first_reader = None
    for i in range(4):
        write(root / "counter.txt", f"Build number {i} of the counter file.\n")
        r = build_index(
            settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
        )
        seen.append(r.version)
        if first_reader is None:
            first_reader = open_index(settings, embedder=embedder)
    assert seen == sorted(seen)
    assert list_versions(settings) == seen[-2:]
    assert current_version(settings) == seen[-1]
    # a worker still holding a pruned version keeps answering until it reloads
    assert first_reader.search("annual leave", k=1)
    first_reader.close()
    assert open_index(settings, version=seen[-2], embedder=embedder).version == seen[-2]


def test_near_duplicates_returned_once(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    notice = "All travel must be approved in writing by your line manager before booking."
    write(root / "a.md", f"# Travel A\n\n{notice}\n")
    write(root / "b.md", f"# Travel B\n\n{notice.upper()}\n")
    write(root / "c.md", "# Other\n\nThe canteen serves soup on Fridays.\n")
    settings = settings_for(tmp_path)
    build_index(settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool)
    with open_index(settings, embedder=embedder) as ix:
        hits = ix.search("travel approval before booking", k=3)
    texts = [h.chunk.text.lower() for h in hits]
    assert sum(notice.lower() in t for t in texts) == 1
    assert len(hits) == 2


def test_one_build_at_a_time(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    docs(root)
    settings = settings_for(tmp_path)
    settings.index_dir.mkdir(parents=True)
    with open(settings.index_dir / ".build.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(IngestError) as err:
            build_index(
                settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
            )
    assert "another ingest" in err.value.message


def test_hnsw_index_searches_and_filters(tmp_path, embedder, parse_pool):
    hr, eng = tmp_path / "hr", tmp_path / "eng"
    docs(hr)
    write(eng / "deploy.md", "# Deploys\n\nDeploys happen on Tuesdays after the stand-up.\n")
    settings = settings_for(tmp_path)
    report = build_index(
        settings,
        [Source(hr, "hr"), Source(eng, "eng")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
        index_type="hnsw",
    )
    assert report.index_type == "hnsw"
    with open_index(settings, embedder=embedder) as ix:
        assert ix.stats()["index_type"] == "hnsw"
        assert ix.search("when are deploys", k=1)[0].chunk.source == "deploy.md"
        hits = ix.search("when are deploys", k=10, collections=["hr"])
        assert hits and {h.chunk.collection for h in hits} == {"hr"}


def test_live_index_reloads_between_tasks(tmp_path, embedder, parse_pool):
    from ingest import LiveIndex

    root = tmp_path / "docs"
    docs(root)
    settings = settings_for(tmp_path)
    r1 = build_index(
        settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    live = LiveIndex(settings, embedder=embedder)
    first = live.get()
    assert first.version == r1.version and live.get() is first  # no change: same reader
    write(root / "extra.md", "# Extra\n\nThe library lends laptops for a week.\n")
    r2 = build_index(
        settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    second = live.get()
    assert second.version == r2.version != r1.version
    assert second.search("borrow a laptop from the library", k=1)[0].chunk.source == "extra.md"
    live.close()
