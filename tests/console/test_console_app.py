"""The console through Starlette's TestClient: sign-in, CSRF, bounded forms, every page.

Real Redis (the suite's redis-server), real stores in a temporary data dir, a fake
gateway in place of the workers (tests/console/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.routing import Route

from console.app import Guard, build_app, routes
from lorebot import contracts, feedback
from tests.console.conftest import PASSWORD, audit_lines, csrf_of, sign_in


def _route_list(app):
    out = []
    for r in routes(app.state.console):
        if isinstance(r, Route):
            path = r.path.replace("{task_id}", "abc123")
            for method in sorted(r.methods - {"HEAD"}):
                out.append((method, path))
    return out


PUBLIC = {("GET", "/login"), ("GET", "/healthz")}


def test_every_route_refuses_an_anonymous_request(client):
    checked = 0
    for method, path in _route_list(client.app):
        if (method, path) in PUBLIC:
            continue
        if method == "GET":
            r = client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next="), path
            r = client.get(path, headers={"X-Console-Fragment": "1"})
            assert r.status_code == 401, path
        else:
            r = client.post(path, data={"csrf_token": "x"})
            # /login is public, so only its CSRF check stands in the way
            assert r.status_code == (403 if path == "/login" else 401), path
        checked += 1
    assert checked >= 15
    # an unknown path says nothing either
    assert client.get("/no/such/page").status_code == 303
    assert client.get("/static/console.css").status_code == 200


def test_sign_in_with_the_password_then_out(client, console_settings):
    r = sign_in(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-lorebot-console=")
    for flag in ("secure", "httponly", "samesite=lax", "path=/"):
        assert flag in cookie.lower()
    page = client.get("/")
    assert page.status_code == 200 and "Status" in page.text and "admin" in page.text
    r = client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/").status_code == 303
    actions = [(e["action"], e["result"]) for e in audit_lines(console_settings)]
    assert ("sign-in", "ok") in actions and ("sign-out", "ok") in actions


def test_wrong_password_and_wrong_name_are_refused_audited_and_throttled(client, console_settings):
    r = sign_in(client, password="wrong")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "Wrong name or password" in client.get("/login").text
    assert client.get("/").status_code == 303
    assert sign_in(client, user="root").headers["location"] == "/login"
    for _ in range(3):
        sign_in(client, password="wrong")
    # five failures: even the right password is refused for a while
    assert sign_in(client).headers["location"] == "/login"
    assert "Too many failed sign-ins" in client.get("/login").text
    results = [e["result"] for e in audit_lines(console_settings) if e["action"] == "sign-in"]
    assert results.count("refused") == 5 and results[-1] == "throttled"
    assert all(PASSWORD not in json.dumps(e) for e in audit_lines(console_settings))


def test_sign_in_needs_the_csrf_token_of_the_login_page(client):
    client.get("/login")
    r = client.post("/login", data={"user": "admin", "password": PASSWORD})
    assert r.status_code == 403
    r = client.post("/login", data={"csrf_token": "forged", "user": "admin", "password": PASSWORD})
    assert r.status_code == 403
    assert client.get("/").status_code == 303


def test_every_form_refuses_a_missing_wrong_or_cross_origin_token(
    client, console_settings, gateway
):
    sign_in(client)
    token = csrf_of(client.get("/").text)
    posts = [p for m, p in _route_list(client.app) if m == "POST" and p != "/login"]
    assert len(posts) >= 6
    for path in posts:
        assert client.post(path, data={"channel": "C0X"}).status_code == 403, path
        assert client.post(path, data={"csrf_token": token + "x"}).status_code == 403, path
        r = client.post(path, data={"csrf_token": token}, headers={"Origin": "https://evil.test"})
        assert r.status_code == 403, path
        r = client.post(path, data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403, path
    assert gateway.sent == [] and gateway.calls == []
    refused = [e for e in audit_lines(console_settings) if e["action"] == "csrf"]
    assert len(refused) == 4 * len(posts)
    # the session still works, and the right token from the same origin goes through
    r = client.post(
        "/access/reset",
        data={"csrf_token": token, "channel": "C0HR"},
        headers={"Origin": "https://testserver"},
    )
    assert r.status_code == 303


def _raw_post(app, content_length: bytes) -> int:
    """Status of a POST sent straight to the ASGI app (headers httpx would not send)."""
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/access/set",
        "raw_path": b"/access/set",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 443),
        "headers": [(b"host", b"testserver"), (b"content-length", content_length)],
    }
    statuses = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return statuses[0]


def test_bodies_are_bounded_before_anything_reads_them(client):
    sign_in(client)
    token = csrf_of(client.get("/").text)
    big = client.post(
        "/access/set",
        content=b"a=" + b"x" * (65 << 10),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413
    js = client.post(
        "/access/set",
        content=json.dumps({"csrf_token": token}),
        headers={"Content-Type": "application/json"},
    )
    assert js.status_code == 415
    assert client.put("/access/set").status_code == 405
    for length in (b"-1", b"1e3", b"\xb2"):  # "²" (latin-1) passes str.isdigit()
        assert _raw_post(client.app, length) == 400, length
    bad = client.post(
        "/access/set",
        content=b"\xff\xfe=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 400


def test_security_headers_on_pages_and_refusals(client):
    for r in (client.get("/login"), client.get("/"), client.post("/login")):
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"


def test_next_never_leaves_the_site(client):
    for bad in ("//evil.test/", "https://evil.test/", "/\\evil.test"):
        token = csrf_of(client.get("/login").text)
        r = client.post(
            "/login",
            data={"csrf_token": token, "user": "admin", "password": PASSWORD, "next": bad},
        )
        assert r.headers["location"] == "/", bad
        client.post("/logout", data={"csrf_token": csrf_of(client.get("/").text)})


def test_a_session_ends_after_its_max_age(client, console_settings, monkeypatch):
    sign_in(client)
    assert client.get("/").status_code == 200
    later = time.time() + console_settings.console.session_max_age_s + 1
    monkeypatch.setattr("console.app.time.time", lambda: later)
    assert client.get("/").status_code == 303


def test_pages_render_the_stores(client, redis_client):
    redis_client.hset(contracts.CHANNEL_COLLECTIONS, "C0ALL", json.dumps("*"))
    redis_client.set(
        contracts.LAST_REFRESH, json.dumps({"status": "rejected", "message": "no better"})
    )
    redis_client.hset(
        contracts.SERVING,
        "host1:42",
        json.dumps({"index": "v20261201-020000-abcd", "adapter": None, "at": time.time()}),
    )
    sign_in(client)
    status = client.get("/").text
    assert "v20261201-020000-abcd" in status and "host1:42" in status and "healthy" in status
    assert "no better" in status and "2 disliked" in status
    sources = client.get("/sources").text
    assert sources.index("secret.pdf") < sources.index("leave.md")  # failures first
    assert "encrypted: the PDF needs a password" in sources
    assert "docs-hr" in sources and "*.md" in sources
    assert "&lt;script&gt;" in sources and "<script>alert" not in sources
    found = client.get("/sources", params={"q": "annual"}).text
    assert "leave.md" in found and "secret.pdf" not in found
    answers = client.get("/answers").text
    assert answers.index("case 2") < answers.index("case 1") < answers.index("case 0")
    assert "&lt;b&gt;bold" in answers and "answered in 1.2 s" in answers
    models = client.get("/models").text
    assert "a20261201-020001-00a1" in models and "0.150" in models and "<svg" in models
    access = client.get("/access").text
    assert "C0ALL sees every collection" in access and "C0HR" in access
    assert "every collection" in access
    assert "sign-in" in client.get("/audit").text


def test_reindex_submits_the_task_by_name_and_the_job_page_follows_it(
    client, gateway, console_settings
):
    sign_in(client)
    token = csrf_of(client.get("/sources").text)
    r = client.post("/sources/reindex", data={"csrf_token": token, "collection": "hr"})
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    (name, kwargs, queue, task_id) = gateway.sent[0]
    assert (name, queue) == (contracts.TASK_REINDEX, contracts.QUEUE_INGEST)
    assert kwargs == {"collection": "hr", "reply": None}
    gateway.states[task_id] = [
        ("STARTED", None),
        (
            "SUCCESS",
            {
                "status": "ok",
                "message": "Index v2: 1 files ok, 1 failed",
                "report": {
                    "counts": {"ok": 1, "failed": 1},
                    "files": [{"path": "x.pdf", "status": "failed", "reason": "corrupt"}],
                },
            },
        ),
    ]
    page = client.get(r.headers["location"])
    assert "data-poll" in page.text and "STARTED" in page.text
    frag = client.get(f"/jobs/{task_id}/fragment", headers={"X-Console-Fragment": "1"}).text
    assert "SUCCESS" in frag and "corrupt" in frag and "data-done" in frag
    assert task_id in client.get("/sources").text
    bad = client.post("/sources/reindex", data={"csrf_token": token, "collection": "../etc"})
    assert bad.status_code == 303 and len(gateway.sent) == 1
    entries = [e for e in audit_lines(console_settings) if e["action"] == "reindex"]
    assert [e["result"] for e in entries] == ["ok", "refused"] and entries[0]["task"] == task_id


def test_a_correction_joins_the_gate_questions(client, console_settings):
    sign_in(client)
    token = csrf_of(client.get("/answers").text)
    r = client.post(
        "/answers/correct",
        data={"csrf_token": token, "question_id": "q2", "answer": "25 days a year."},
    )
    assert r.status_code == 303
    page = client.get("/answers").text
    assert "Saved the right answer" in page and "25 days a year." in page
    liked = feedback.liked_answers(console_settings)
    assert liked[0] == ("How many days of leave, case 2?", "25 days a year.")
    assert feedback.corrections(console_settings) == [liked[0]]
    assert (
        client.post(
            "/answers/correct", data={"csrf_token": token, "question_id": "nope", "answer": "x"}
        ).status_code
        == 303
    )
    assert "nobody voted" in client.get("/answers").text
    e = [e for e in audit_lines(console_settings) if e["action"] == "answer.correct"]
    assert [x["result"] for x in e] == ["ok", "refused"] and e[0]["who"] == "admin"


def test_promote_and_rollback_need_confirmation_and_go_to_the_control_queue(
    client, gateway, console_settings
):
    sign_in(client)
    page = client.get(
        "/models/confirm", params={"action": "promote", "version": "a20261201-020001-00a1"}
    )
    assert page.status_code == 200 and "a20261201-020001-00a1" in page.text
    token = csrf_of(page.text)
    r = client.post(
        "/models/adapters",
        data={"csrf_token": token, "action": "promote", "version": "a20261201-020001-00a1"},
    )
    assert r.status_code == 303 and gateway.calls == []  # not confirmed
    assert "not confirmed" in client.get("/models").text
    gateway.call_result = {
        "text": "promoted a20261201-020001-00a1",
        "current": "a20261201-020001-00a1",
    }
    client.post(
        "/models/adapters",
        data={
            "csrf_token": token,
            "action": "promote",
            "version": "a20261201-020001-00a1",
            "confirm": "yes",
        },
    )
    assert gateway.calls[-1] == (
        contracts.TASK_ADAPTERS,
        contracts.QUEUE_CONTROL,
        {"action": "promote", "version": "a20261201-020001-00a1"},
    )
    assert "promoted a20261201-020001-00a1" in client.get("/models").text
    gateway.call_result = {
        "text": "adapters rollback failed: nothing to roll back",
        "error": "nothing to roll back",
    }
    client.post(
        "/models/adapters", data={"csrf_token": token, "action": "rollback", "confirm": "yes"}
    )
    assert "nothing to roll back" in client.get("/models").text
    e = [
        (x["action"], x["result"])
        for x in audit_lines(console_settings)
        if x["action"].startswith("adapters")
    ]
    assert e == [("adapters.promote", "ok"), ("adapters.rollback", "failed")]


def test_access_uses_the_channel_store_and_all_needs_confirmation(
    client, redis_client, console_settings
):
    from bot.state import ChannelAccess

    sign_in(client)
    token = csrf_of(client.get("/access").text)
    client.post(
        "/access/set",
        data={"csrf_token": token, "channel": "c0eng", "collections": "eng, handbook"},
    )
    acc = ChannelAccess(redis_client, console_settings)
    assert acc.resolve("C0ENG", is_dm=False) == (
        ["eng", "handbook"],
        "set with /lorebot channel set",
    )
    client.post("/access/set", data={"csrf_token": token, "channel": "C0ENG", "collections": "all"})
    assert acc.collections("C0ENG", is_dm=False) == ["eng", "handbook"]
    assert "confirmation box" in client.get("/access").text
    client.post(
        "/access/set",
        data={"csrf_token": token, "channel": "C0ENG", "collections": "all", "confirm_all": "yes"},
    )
    assert acc.collections("C0ENG", is_dm=False) is None
    assert "C0ENG sees every collection" in client.get("/access").text
    for bad in (
        {"channel": "#general", "collections": "hr"},
        {"channel": "C0X1", "collections": "../x"},
    ):
        client.post("/access/set", data={"csrf_token": token, **bad})
    client.post("/access/reset", data={"csrf_token": token, "channel": "C0ENG"})
    assert acc.resolve("C0ENG", is_dm=False)[1] == ChannelAccess.NOT_MAPPED
    e = [
        (x["action"], x["result"], x.get("collections"))
        for x in audit_lines(console_settings)
        if x["action"].startswith("channel")
    ]
    assert e == [
        ("channel.set", "ok", "eng,handbook"),
        ("channel.set", "refused", "*"),
        ("channel.set", "ok", "*"),
        ("channel.set", "refused", None),
        ("channel.set", "refused", None),
        ("channel.reset", "ok", None),
    ]


def test_redis_down_is_shown_not_raised(console_settings, gateway):
    from starlette.testclient import TestClient

    from console.app import connect_redis
    from tests.console.conftest import sign_in as login

    app = build_app(console_settings, redis=connect_redis("redis://127.0.0.1:1/0"), gateway=gateway)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        login(c)
        started = time.monotonic()
        page = c.get("/")
        assert page.status_code == 200 and "unreachable" in page.text
        assert c.get("/access").status_code == 200
        assert time.monotonic() - started < 2.0


def test_no_way_to_sign_in_is_a_one_line_config_error(tmp_path):
    from console.server import serve
    from lorebot.errors import ConfigError
    from tests.conftest import make_settings

    with pytest.raises(ConfigError, match="no way to sign in"):
        serve(make_settings(tmp_path))


def test_the_console_loads_no_model_index_or_parsing_code(console_settings):
    pw = console_settings.console.password_hash.get_secret_value()
    code = f"""
import sys
from starlette.testclient import TestClient
from console.app import build_app
from tests.conftest import make_settings
from tests.console.conftest import FakeGateway, sign_in
s = make_settings({str(console_settings.data_dir)!r}, {console_settings.redis.url!r},
                  console={{"password_hash": {pw!r}, "secret_key": "k" * 40}})
c = TestClient(build_app(s, gateway=FakeGateway()), base_url="https://testserver")
sign_in(c)
from ingest.connectors.sync import add_source
from lorebot.settings import SourceConfig
add_source(s, "wiki", SourceConfig(kind="web", collection="hr", url="https://wiki.test/"))
add_source(s, "bucket", SourceConfig(kind="s3", collection="hr", bucket="docs"))
for p in ("/", "/sources", "/answers", "/models", "/access", "/audit"):
    assert c.get(p).status_code == 200, p
assert "wiki" in c.get("/sources").text
heavy = ("torch", "faiss", "llama_cpp", "unstructured", "sentence_transformers", "transformers",
         "peft", "matplotlib", "onnxruntime", "boto3", "botocore", "celery",
         "ingest.connectors.http", "ingest.connectors.s3", "ingest.connectors.web",
         "ingest.connectors.git", "ingest.connectors.confluence", "ingest.connectors.sharepoint",
         "ingest.connectors.gdrive", "ingest.connectors.notion")
print(sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_guard_is_the_outermost_check_after_the_session(client):
    # sessions are read before the guard; the guard before any route
    kinds = [m.cls.__name__ for m in client.app.user_middleware]
    assert kinds == ["SessionMiddleware", "Guard"] and Guard


def test_a_copy_of_the_cookie_is_worthless_after_sign_out(client, console_settings):
    from starlette.testclient import TestClient

    sign_in(client)
    page = client.get("/")
    stolen = dict(client.cookies)
    client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    with TestClient(client.app, base_url="https://testserver", follow_redirects=False) as thief:
        thief.cookies.update(stolen)
        assert thief.get("/").status_code == 303
    # signing in again gives a new session that works
    sign_in(client)
    assert client.get("/").status_code == 200


def test_the_generated_session_key_is_private_and_shared(tmp_path):
    from console.auth import secret_key
    from tests.conftest import make_settings

    s = make_settings(tmp_path / "data")
    key = secret_key(s)
    path = tmp_path / "data" / "console" / "secret.key"
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert secret_key(s) == key  # a second process (or a restart) reads the same key


def test_a_feedback_store_from_before_gets_the_latency_column(tmp_path):
    import sqlite3

    from lorebot.feedback import SCHEMA, FeedbackStore

    path = tmp_path / "feedback.sqlite"
    old = SCHEMA.split("CREATE INDEX")[0].replace("    latency_ms    REAL,\n", "")
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute(
            "INSERT INTO feedback (question_id, user, vote, question, created_at)"
            " VALUES ('q1', 'U1', -1, 'old question', 1.0)"
        )
    store = FeedbackStore(path)
    store.record(
        question_id="q2",
        user="U1",
        vote=1,
        channel=None,
        team=None,
        message_ts=None,
        answer={"question": "new", "answer": "a", "timings_ms": {"total": 800}},
    )
    rows = {r["question_id"]: r for r in store.recent()}
    assert rows["q1"]["latency_ms"] is None and rows["q2"]["latency_ms"] == 800.0


def test_a_client_that_trickles_its_request_head_is_cut_off(served):
    import socket
    from urllib.parse import urlsplit

    port = urlsplit(served).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server's head deadline (1 s here)
        assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # others still served
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_a_job_in_progress_shows_its_stage(client, gateway):
    from types import SimpleNamespace

    from console.actions import progress_text

    sign_in(client)
    token = csrf_of(client.get("/sources").text)
    client.post("/sources/reindex", data={"csrf_token": token})
    task_id = gateway.sent[0][3]
    gateway.states[task_id] = [("PROGRESS", None)]
    meta = {"stage": "parse", "done": 12, "total": 40}
    gateway.app = SimpleNamespace(AsyncResult=lambda _id: SimpleNamespace(info=meta))
    frag = client.get(f"/jobs/{task_id}/fragment", headers={"X-Console-Fragment": "1"}).text
    assert "parsing 12/40 files (30%)" in frag and "data-done" not in frag
    assert progress_text({"stage": "write"}) == "writing…"
    assert progress_text(None) == "running on an ingest worker"


def test_the_answers_page_lists_recent_questions_from_the_log(client, redis_client):
    from lorebot import recent
    from lorebot.types import Answer, Citation, Question

    for i, channel in enumerate(("C0HR", "C0ENG", "C0HR")):
        q = Question(text=f"Recent question {i} <i>x</i>?", channel=channel, user=f"U{i}")
        a = Answer(
            question_id=q.question_id,
            question=q.text,
            answer=f"Recent answer {i}",
            citations=[
                Citation(
                    n=1,
                    chunk_id="leave.md#1",
                    title="Leave policy",
                    source="leave.md",
                    collection="hr",
                    score=0.5,
                    text="t",
                )
            ],
            index_version="v20261201-020000-abcd",
            adapter="a20261201-020000-00a0",
            timings_ms={"total": 4321.0},
        )
        assert recent.append(redis_client, recent.entry(q, a))
    failed = Question(text="Recent question failed", channel="C0HR", user="U9")
    recent.append(redis_client, recent.entry(failed, error="no index yet"))
    assert client.get("/answers").status_code in (200, 303)
    assert "Recent question" not in client.get("/answers", follow_redirects=False).text
    sign_in(client)
    page = client.get("/answers").text
    assert "Recent questions" in page and "4321 ms" in page and "Leave policy" in page
    # Newest first, escaped, failures shown with their reason.
    assert page.index("Recent question failed") < page.index("Recent question 2")
    assert page.index("Recent question 2") < page.index("Recent question 0")
    assert "&lt;i&gt;x" in page and "failed: no index yet" in page
    only = client.get("/answers", params={"channel": "C0ENG"}).text
    assert "Recent question 1" in only and "Recent question 0" not in only
