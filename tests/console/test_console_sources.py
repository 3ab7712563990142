"""The Sources page's remote sources: their last sync and failures, and "Sync now".

Real Redis and stores (tests/console/conftest.py); a source added the way ``lorebot source
add`` adds it, another defined in settings, their state written as a sync leaves it.
"""

from __future__ import annotations

import base64
import json

import pytest

from lorebot import contracts
from lorebot.settings import SourceConfig
from tests.console.conftest import audit_lines, csrf_of, seed, sign_in


def write_state(settings, name: str, state: dict) -> None:
    from ingest.connectors.sync import STATE, source_dir

    folder = source_dir(settings, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE).write_text(json.dumps(state))


@pytest.fixture()
def remote_settings(tmp_path, redis_server, password_hash):
    from ingest.connectors.sync import add_source
    from tests.conftest import make_settings

    s = make_settings(
        tmp_path / "data",
        redis_server.url,
        console={"password_hash": password_hash, "secret_key": "k" * 40},
        sources={
            "defined": {
                "handbook": {"kind": "git", "collection": "eng", "url": "https://git.test/hb"}
            }
        },
    )
    seed(s)
    add_source(
        s,
        "wiki",
        SourceConfig(
            kind="web", collection="hr", url="https://wiki.test/", collections={"/it/": "it"}
        ),
    )
    write_state(
        s,
        "wiki",
        {
            "last_sync": "2026-12-02T07:00:00+00:00",
            "last_error": None,
            "collections": ["hr", "it"],
            "docs": {
                "https://wiki.test/a": {"path": "a.html", "collection": "hr", "version": "1"},
                "https://wiki.test/b": {"path": "b.html", "collection": "hr", "version": "1"},
            },
            "failures": [
                {"id": "https://wiki.test/c.pdf", "reason": "HTTP 500 after 3 tries"},
                {"id": "https://wiki.test/<x>", "reason": "too large: 40 MB > 25 MB"},
            ],
        },
    )
    write_state(
        s,
        "handbook",
        {"last_sync": "2026-12-02T06:00:00+00:00", "last_error": "git clone: auth failed"},
    )
    return s


@pytest.fixture()
def remote_client(remote_settings, redis_client, gateway):
    from starlette.testclient import TestClient

    from console.app import build_app

    app = build_app(remote_settings, redis=redis_client, gateway=gateway)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def test_source_overview_reads_every_source_without_changing_it(remote_settings):
    from ingest.connectors.sync import source_dir, source_overview

    before = (source_dir(remote_settings, "wiki") / "state.json").read_bytes()
    rows = {r["name"]: r for r in source_overview(remote_settings, max_failures=1)}
    assert set(rows) == {"wiki", "handbook"}
    wiki, hb = rows["wiki"], rows["handbook"]
    assert (wiki["kind"], wiki["defined_in"], wiki["collections"]) == ("web", "cli", ["hr", "it"])
    assert wiki["documents"] == 2 and wiki["failure_count"] == 2 and len(wiki["failures"]) == 1
    assert (hb["kind"], hb["defined_in"], hb["last_error"]) == (
        "git",
        "settings",
        "git clone: auth failed",
    )
    assert (source_dir(remote_settings, "wiki") / "state.json").read_bytes() == before


def test_the_sources_page_shows_remote_sources_their_failures_and_last_error(remote_client):
    sign_in(remote_client)
    page = remote_client.get("/sources").text
    assert 'id="remote-sources"' in page
    for text in ("wiki", "handbook", "web", "git", "hr, it", "2026-12-02T07:00:00+00:00"):
        assert text in page, text
    assert "git clone: auth failed" in page
    assert "HTTP 500 after 3 tries" in page and "too large: 40 MB &gt; 25 MB" in page
    assert "https://wiki.test/&lt;x&gt;" in page and "wiki.test/<x>" not in page
    assert page.count('action="/sources/sync"') == 2
    # the title search narrows the failures too
    found = remote_client.get("/sources", params={"q": "too large"}).text
    assert "too large: 40 MB" in found and "HTTP 500 after 3 tries" not in found


def test_a_damaged_source_list_is_shown_not_raised(remote_client, remote_settings):
    from ingest.connectors.sync import REGISTRY, connectors_dir

    (connectors_dir(remote_settings) / REGISTRY).write_text("{not json")
    sign_in(remote_client)
    r = remote_client.get("/sources")
    assert r.status_code == 200 and "cannot be read" in r.text and "leave.md" in r.text


def test_sync_now_sends_the_task_for_that_source_and_the_job_page_follows_it(
    remote_client, remote_settings, gateway
):
    sign_in(remote_client)
    token = csrf_of(remote_client.get("/sources").text)
    assert remote_client.post("/sources/sync", data={"source": "wiki"}).status_code == 403
    assert gateway.sent == []
    r = remote_client.post("/sources/sync", data={"csrf_token": token, "source": "wiki"})
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    (name, kwargs, queue, task_id) = gateway.sent[0]
    assert (name, kwargs, queue) == (
        contracts.TASK_SOURCE_SYNC,
        {"name": "wiki"},
        contracts.QUEUE_INGEST,
    )
    assert r.headers["location"] == f"/jobs/{task_id}"
    gateway.states[task_id] = [
        ("PROGRESS", None),
        (
            "SUCCESS",
            {
                "status": "ok",
                "sources": [
                    {
                        "source": "wiki",
                        "status": "ok",
                        "fetched": 3,
                        "unchanged": 1,
                        "deleted": 0,
                        "failures": [{"id": "https://wiki.test/d", "reason": "HTTP 403: gone"}],
                        "message": "source wiki: 3 fetched, 1 unchanged, 0 deleted, 1 failed",
                    }
                ],
            },
        ),
    ]
    page = remote_client.get(r.headers["location"])
    assert "data-poll" in page.text and "PROGRESS" in page.text
    frag = remote_client.get(f"/jobs/{task_id}/fragment", headers={"X-Console-Fragment": "1"})
    assert "data-done" in frag.text and "3 fetched" in frag.text
    assert "https://wiki.test/d" in frag.text and "HTTP 403: gone" in frag.text
    assert "sync wiki" in remote_client.get("/sources").text  # in the recent jobs
    entries = [e for e in audit_lines(remote_settings) if e["action"] == "source.sync"]
    assert [(e["result"], e["source"], e["task"]) for e in entries] == [("ok", "wiki", task_id)]


@pytest.mark.parametrize("source", ["nosuch", "../etc", "", "x" * 300])
def test_sync_now_refuses_an_unknown_or_malformed_source(
    remote_client, remote_settings, gateway, source
):
    sign_in(remote_client)
    token = csrf_of(remote_client.get("/sources").text)
    r = remote_client.post("/sources/sync", data={"csrf_token": token, "source": source})
    assert r.status_code == 303 and r.headers["location"] == "/sources"
    assert gateway.sent == []
    page = remote_client.get("/sources").text
    assert "no source named nosuch" in page if source == "nosuch" else "not a source name" in page
    entries = [e for e in audit_lines(remote_settings) if e["action"] == "source.sync"]
    assert [e["result"] for e in entries] == ["refused"]


def test_sync_now_with_a_real_broker_lands_on_the_ingest_queue(remote_settings, redis_client):
    """The real gateway (tasks by name over the Redis broker): one message more."""
    from starlette.testclient import TestClient

    from bot.gateway import WorkerGateway
    from console.app import build_app

    real = WorkerGateway(remote_settings.redis.effective_url)
    app = build_app(remote_settings, redis=redis_client, gateway=real)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        sign_in(c)
        token = csrf_of(c.get("/sources").text)
        before = redis_client.llen(contracts.QUEUE_INGEST)
        r = c.post("/sources/sync", data={"csrf_token": token, "source": "handbook"})
        assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
        assert redis_client.llen(contracts.QUEUE_INGEST) == before + 1
        body = json.loads(redis_client.lindex(contracts.QUEUE_INGEST, 0))
        assert body["headers"]["task"] == contracts.TASK_SOURCE_SYNC
        _args, kwargs, _embed = json.loads(base64.b64decode(body["body"]))
        assert kwargs == {"name": "handbook"}
        assert r.headers["location"] == f"/jobs/{body['headers']['id']}"
