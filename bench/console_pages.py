"""How fast the console's pages render with a large store: prints a table.

    python bench/console_pages.py [--votes 100000] [--adapters 50] [--files 5000] [--n 40]

Seeds a temporary data dir (votes written straight into the feedback store's table, 50
adapter cards, an index manifest of --files documents, 10 % of them failed, 200 channel
mappings in a real redis-server) and renders each page --n times through Starlette's
TestClient, signed in. The issue's target: every page ≤ 300 ms p95 with 100k questions
and 50 adapters.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lorebot import contracts  # noqa: E402
from lorebot.feedback import FeedbackStore, feedback_path  # noqa: E402
from lorebot.settings import Settings  # noqa: E402
from lorebot.versioned import write_pointer  # noqa: E402

PAGES = (
    "/",
    "/sources",
    "/sources?q=policy-12",
    "/answers",
    "/answers?q=leave 7",
    "/models",
    "/access",
    "/audit",
)


def seed(s: Settings, votes: int, adapters: int, files: int, redis) -> None:
    rnd = random.Random(0)
    FeedbackStore(feedback_path(s))  # the schema
    db = sqlite3.connect(feedback_path(s))
    now = time.time()
    rows = [
        (
            f"q{i:06d}",
            f"U{i % 500:03d}",
            -1 if rnd.random() < 0.2 else 1,
            "C0HR",
            "T1",
            "1.0",
            f"How much leave {i} do I get?",
            f"Answer {i} about leave.",
            json.dumps([{"title": "Leave policy"}]),
            0,
            "v1",
            "a1",
            now - i,
            900.0 + i % 700,
        )
        for i in range(votes)
    ]
    with db:
        db.executemany("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.close()
    for i in range(adapters):
        v = f"a202611{i // 24 + 1:02d}-{i % 24:02d}0000-{i:04x}"
        d = s.adapters_dir / "versions" / v
        d.mkdir(parents=True)
        (d / "adapter.gguf").write_bytes(b"GGUF")
        score = 0.15 + rnd.random() * 0.1
        (d / "card.json").write_text(
            json.dumps(
                {
                    "status": rnd.choice(("promoted", "rejected")),
                    "created_ns": i,
                    "reason": "gate",
                    "created": f"2026-11-{i // 24 + 1:02d}T{i % 24:02d}:00:00+0000",
                    "metrics": {
                        "candidate": {"score": score, "suites": {"heldout": {"f1": score}}},
                        "current": {"score": 0.16},
                        "base": {"score": 0.15},
                    },
                }
            )
        )
        write_pointer(s.adapters_dir, v)
    version = "v20261201-000000-beef"
    vdir = s.index_dir / "versions" / version
    vdir.mkdir(parents=True)
    manifest_files = {
        f"docs/policy-{i}.md": {
            "collection": f"c{i % 20}",
            "path": f"policy-{i}.md",
            "status": "failed" if i % 10 == 0 else "ok",
            "reason": "corrupt: not a zip file" if i % 10 == 0 else None,
            "title": f"Policy {i}",
            "chunks": 0 if i % 10 == 0 else 8,
        }
        for i in range(files)
    }
    (vdir / "manifest.json").write_text(
        json.dumps(
            {
                "version": version,
                "built_at": "2026-12-01T00:00:00+00:00",
                "index_type": "flat",
                "counts": {"documents": files, "chunks": files * 8},
                "collections": {
                    f"c{k}": {"documents": files // 20, "chunks": files // 20 * 8}
                    for k in range(20)
                },
                "files": manifest_files,
            }
        )
    )
    write_pointer(s.index_dir, version)
    for i in range(200):
        redis.hset(contracts.CHANNEL_COLLECTIONS, f"C{i:06d}", json.dumps([f"c{i % 20}"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", type=int, default=100_000)
    ap.add_argument("--adapters", type=int, default=50)
    ap.add_argument("--files", type=int, default=5_000)
    ap.add_argument("--n", type=int, default=40)
    a = ap.parse_args()
    import redis as redis_lib
    from argon2 import PasswordHasher
    from starlette.testclient import TestClient

    from console.app import build_app
    from lorebot.cli.stack import RedisServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    server = RedisServer(free_port(), tmp / "redis").start()
    try:
        pw = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("pw")
        s = Settings(
            data_dir=tmp / "data",
            redis={"url": server.url},
            console={"password_hash": pw, "secret_key": "k" * 40},
        )
        r = redis_lib.Redis.from_url(server.url)
        t0 = time.perf_counter()
        seed(s, a.votes, a.adapters, a.files, r)
        seeded = time.perf_counter() - t0

        class NoWorkers:
            def send(self, *a, **k):
                raise RuntimeError("not in the bench")

        c = TestClient(build_app(s, redis=r, gateway=NoWorkers()), base_url="https://testserver")
        page = c.get("/login").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        c.post("/login", data={"csrf_token": token, "user": "admin", "password": "pw"})
        table = Table(
            title=(
                f"console pages: {a.votes:,} votes, {a.adapters} adapters, "
                f"{a.files:,} documents, 200 channels (seeded in {seeded:.1f} s)"
            )
        )
        for col in ("page", "bytes", "first ms", "p50 ms", "p95 ms", "max ms"):
            table.add_column(col, justify="left" if col == "page" else "right")
        worst = 0.0
        for path in PAGES:
            t = time.perf_counter()
            first = c.get(path)
            first_ms = (time.perf_counter() - t) * 1000
            assert first.status_code == 200, (path, first.status_code)
            times = []
            for _ in range(a.n):
                t = time.perf_counter()
                c.get(path)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            worst = max(worst, p95)
            table.add_row(
                path,
                f"{len(first.content):,}",
                f"{first_ms:.0f}",
                f"{statistics.median(times):.0f}",
                f"{p95:.0f}",
                f"{times[-1]:.0f}",
            )
        Console().print(table)
        print(f"worst p95: {worst:.0f} ms (target 300 ms)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
