"""Fixtures of the console tests: settings with a password, seeded stores, a fake gateway.

Redis is the real redis-server of the suite (tests/conftest.py). For most tests the
worker side is a :class:`FakeGateway` that records the tasks the console submits and
plays their states, so they need no model and no worker; test_console_browser.py and
test_console_worker.py use the real gateway and a real `lorebot worker` instead.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_settings

PASSWORD = "correct horse battery staple"
INDEX_VERSION = "v20261201-020000-abcd"


@pytest.fixture(scope="session")
def password_hash() -> str:
    # A cheap argon2id hash (verify follows the parameters in the hash): sign-ins in tests
    # take milliseconds. `lorebot console hash-password` uses the library's defaults.
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


class FakeGateway:
    """bot.gateway.WorkerGateway's surface: send, state, call."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.calls: list[tuple] = []
        self.states: dict[str, list[tuple]] = {}
        self.call_result: dict = {"text": "promoted", "current": None}

    def send(self, name, kwargs, queue, task_id=None):
        self.sent.append((name, kwargs, queue, task_id))
        return task_id

    def state(self, task_id):
        seq = self.states.get(task_id)
        if not seq:
            return "PENDING", None
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def call(self, name, queue, *, kwargs=None, timeout=5.0):
        self.calls.append((name, queue, kwargs))
        return self.call_result


def seed(settings) -> None:
    """An index version with ok and failed files, two adapters, votes and a channel map."""
    from lorebot.feedback import FeedbackStore, feedback_path
    from lorebot.versioned import write_pointer

    vdir = settings.index_dir / "versions" / INDEX_VERSION
    vdir.mkdir(parents=True)
    docs = Path(settings.data_dir).parent / "docs-hr"
    docs.mkdir(exist_ok=True)
    # Each entry has the keys a real build records (source, root), so a real re-index on
    # a worker can plan against this version and replace it.
    files = {
        "hr/leave.md": {
            "collection": "hr",
            "path": "leave.md",
            "source": "leave.md",
            "root": str(docs),
            "status": "ok",
            "reason": None,
            "title": "Annual leave policy",
            "chunks": 12,
            "modified": "2026-11-30T10:00:00+00:00",
        },
        "hr/secret.pdf": {
            "collection": "hr",
            "path": "secret.pdf",
            "source": "secret.pdf",
            "root": str(docs),
            "status": "failed",
            "reason": "encrypted: the PDF needs a password",
            "title": "",
            "chunks": 0,
        },
        "eng/deploy.md": {
            "collection": "eng",
            "path": "deploy.md",
            "source": "deploy.md",
            "status": "ok",
            "reason": None,
            "title": "Deploying <script>alert(1)</script>",
            "chunks": 5,
        },
    }
    manifest = {
        "version": INDEX_VERSION,
        "built_at": "2026-12-01T02:00:00+00:00",
        "index_type": "flat",
        "counts": {"documents": 2, "chunks": 17},
        "collections": {"hr": {"documents": 1, "chunks": 12}, "eng": {"documents": 1, "chunks": 5}},
        "files": files,
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    write_pointer(settings.index_dir, INDEX_VERSION)
    from ingest.registry import record_sources
    from ingest.sources import Source

    record_sources(settings, [Source(docs, "hr", include=["*.md"])])
    for i, (status, score) in enumerate((("promoted", 0.21), ("rejected", 0.15))):
        version = f"a20261201-02000{i}-00a{i}"
        adir = settings.adapters_dir / "versions" / version
        adir.mkdir(parents=True)
        (adir / "adapter.gguf").write_bytes(b"GGUF")
        card = {
            "status": status,
            "reason": "beat the current adapter" if status == "promoted" else "no better",
            "created": f"2026-12-0{i + 1}T02:00:00+0000",
            "created_ns": i,
            "metrics": {
                "candidate": {"score": score, "suites": {"heldout": {"f1": score}}},
                "current": {"score": 0.16},
                "base": {"score": 0.16},
            },
        }
        (adir / "card.json").write_text(json.dumps(card))
    write_pointer(settings.adapters_dir, "a20261201-020000-00a0")
    store = FeedbackStore(feedback_path(settings))
    now = time.time()
    for i, vote in enumerate((1, -1, -1)):
        store.record(
            question_id=f"q{i}",
            user=f"U{i}",
            vote=vote,
            channel="C0HR",
            team="T1",
            message_ts="1.0",
            answer={
                "question": f"How many days of leave, case {i}?",
                "answer": f"Answer {i} <b>bold</b>",
                "citations": [{"title": "Annual leave policy"}],
                "index_version": INDEX_VERSION,
                "adapter": "a20261201-020000-00a0",
                "timings_ms": {"total": 1234.0 + i},
            },
            created_at=now - 100 + i,
        )


@pytest.fixture()
def console_settings(tmp_path, redis_server, password_hash):
    s = make_settings(
        tmp_path / "data",
        redis_server.url,
        console={"password_hash": password_hash, "secret_key": "k" * 40},
        slack={"channel_collections": {"C0HR": ["hr"]}},
    )
    seed(s)
    return s


@pytest.fixture()
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture()
def client(console_settings, redis_client, gateway):
    from starlette.testclient import TestClient

    from console.app import build_app

    app = build_app(console_settings, redis=redis_client, gateway=gateway)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(client, password: str = PASSWORD, user: str = "admin"):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "user": user, "password": password})


def audit_lines(settings) -> list[dict]:
    path = Path(settings.data_dir) / "console" / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def serve_console(settings, redis_client, gateway, port: int):
    """Start the console (uvicorn, guarded protocol, head deadline 1 s) on a thread."""
    from console.app import build_app
    from console.server import make_server

    s = settings.model_copy(update={"console": settings.console.model_copy(update={"port": port})})
    server = make_server(
        s, app=build_app(s, redis=redis_client, gateway=gateway), header_timeout_s=1.0
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    return server, thread


@pytest.fixture()
def served(console_settings, redis_client, gateway):
    """The console on a loopback port; yields its base URL."""
    from lorebot.cli.stack import free_port

    port = free_port()
    server, thread = serve_console(console_settings, redis_client, gateway, port)
    yield f"http://localhost:{port}"
    server.should_exit = True
    thread.join(10)
