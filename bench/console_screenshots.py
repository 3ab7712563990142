"""Screenshots of every console page from a real seeded run: bench/figures/console-*.png.

    python bench/console_screenshots.py [--out bench/figures] [--keep]

Needs Debian's chromium and chromium-driver. On a temporary data dir it starts a
redis-server and real `lorebot worker`s, and then works through the console the way an
admin would:

* records the shipped sample handbook and a folder holding a broken PDF as sources, and
  re-indexes them from the Sources page (a real build on the ingest worker);
* asks the answer worker a few questions (the real model and index) and records 👍 / 👎
  on those answers the way the bot does when someone clicks a button;
* writes nightly adapter candidates into the registry with gate scores over two weeks,
  through the registry's own functions (the refresh that makes real ones takes far
  longer than a screenshot run), then promotes the newest from the Models page;
* writes the right answer to a 👎 answer, maps two channels (one to every collection, which
  the Access page warns about),

taking one PNG per page: sign-in, Status, Sources & documents, the re-index job, Answers &
feedback, Models, Access and Audit log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "screenshots"
QUESTIONS = (
    ("How many days of annual leave do I get?", 1),
    ("How do I connect to the VPN?", 1),
    ("Can I expense a taxi home after working late?", -1),
    ("How much is the yearly training budget?", -1),
)
#: (days ago, candidate score, score of the adapter serving then): the nightly gate's
#: results over two weeks; a candidate is promoted when it beats what served.
NIGHTS = (
    (13, 0.412, 0.398),
    (12, 0.405, 0.412),
    (10, 0.431, 0.412),
    (9, 0.428, 0.431),
    (7, 0.447, 0.431),
    (6, 0.439, 0.447),
    (4, 0.452, 0.447),
    (3, 0.449, 0.452),
    (1, 0.461, 0.452),
)


def seed_adapters(s) -> list[str]:
    """Nightly candidates through the registry: committed, then promoted when better; the
    last night's candidate is left for an admin to promote."""
    from slm.training import registry

    made = []
    for night, (days, score, served) in enumerate(NIGHTS):
        at = time.time() - days * 86400
        version = registry.new_version_id(at)
        _, build = registry.start_version(s, version)
        (build / registry.ADAPTER_FILE).write_bytes(b"GGUF")  # never loaded in this run
        better = score > served
        card = {
            "created": time.strftime("%Y-%m-%dT02:00:00%z", time.localtime(at)),
            "created_ns": int(at * 1e9),
            "status": "candidate" if better else "rejected",
            "reason": "beat the serving adapter" if better else "no better than the serving one",
            "metrics": {
                "candidate": {
                    "score": score,
                    "suites": {
                        "heldout": {"f1": round(score + 0.05, 3)},
                        "golden": {"f1": round(score - 0.03, 3)},
                        "feedback": {"f1": round(score + 0.02, 3)},
                    },
                },
                "current": {"score": served},
                "base": {"score": 0.398},
            },
        }
        registry.commit_version(s, version, build, card)
        if better and night < len(NIGHTS) - 1:
            registry.promote(s, version, reason="nightly refresh: beat the serving adapter")
        made.append(version)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "figures")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    a = ap.parse_args()

    import redis as redis_lib
    from argon2 import PasswordHasher

    from ingest.registry import record_sources
    from ingest.sources import Source
    from lorebot import assets, contracts
    from lorebot.cli.stack import RedisServer, free_port
    from lorebot.feedback import FeedbackStore, feedback_path
    from lorebot.settings import Settings
    from lorebot.types import Question
    from slm.training import registry
    from tests.conftest import WorkerProcess
    from tests.console.conftest import serve_console
    from tests.console.webdriver import Browser, browsers_present
    from workers.cli import ask

    if not browsers_present():
        sys.exit("needs Debian's chromium and chromium-driver (apt-get install both)")
    tmp = Path(tempfile.mkdtemp(prefix="console-shots-"))
    a.out.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), tmp / "redis").start()
    env = {
        "LOREBOT_METRICS__WORKER_PORT": "0",
        "LOREBOT_MODEL_CACHE_DIR": str(tmp / "models"),
        "LOREBOT_INDEX__PARSE_WORKERS": "1",
    }
    pw = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    s = Settings(
        data_dir=tmp / "data",
        redis={"url": server.url},
        model_cache_dir=tmp / "models",
        console={"password_hash": pw, "secret_key": "k" * 40},
        slack={"channel_collections": {"C0HR": ["handbook"]}},
    )
    r = redis_lib.Redis.from_url(server.url)
    handbook = shutil.copytree(assets.sample_docs_dir(), tmp / "docs" / "handbook")
    broken = tmp / "docs" / "scans"
    broken.mkdir()
    (broken / "signed-contract.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2048))
    record_sources(
        s,
        [Source(handbook, "handbook"), Source(broken, "legal")],
    )
    workers: list[WorkerProcess] = []
    port = free_port()
    console, thread = serve_console(s, r, None, port)  # the real gateway
    base = f"http://localhost:{port}"
    browser = Browser(tmp / "profile")

    def shot(name: str, height: int = 1000) -> None:
        # as tall as the page (within limits), so a screenshot shows the whole page
        browser._s("POST", "/window/rect", {"width": 1280, "height": 400})
        full, chrome = browser.script(
            "return [document.documentElement.scrollHeight,"
            " window.outerHeight - window.innerHeight]"
        )
        tall = min(max(full, 500), height) + chrome
        browser._s("POST", "/window/rect", {"width": 1280, "height": tall})
        path = browser.screenshot(a.out / f"console-{name}.png")
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")

    try:
        browser.get(base + "/")
        shot("login", 500)
        browser.find("#login input[name=user]").type("admin")
        browser.find("#login input[name=password]").type(PASSWORD)
        browser.find("#login button").click()
        browser.wait_for("#index-version, .bad")

        # a real build of the recorded sources, started from the Sources page
        workers.append(
            WorkerProcess(s.data_dir, server.url, tmp / "ingest.log", "ingest,control", **env)
        )
        workers[-1].wait_ready()
        browser.get(base + "/sources")
        browser.find("#reindex button").click()
        browser.wait_for(".job-state[data-state=SUCCESS]", timeout_s=900)
        shot("job", 600)

        # real answers, and votes on them as the bot records a click on 👍 / 👎
        workers.append(WorkerProcess(s.data_dir, server.url, tmp / "answer.log", "answer", **env))
        workers[-1].wait_ready(600)
        store = FeedbackStore(feedback_path(s))
        for i, (text, vote) in enumerate(QUESTIONS):
            q = Question(text=text, channel="C0HR", user=f"U0STAFF{i}")
            answer = ask(s, q, timeout=300)
            # what the worker keeps for the bot's feedback buttons (workers.delivery)
            stored = answer.compact(contracts.FEEDBACK_PASSAGE_CHARS).model_dump_json()
            store.record(
                question_id=q.question_id,
                user=q.user,
                vote=vote,
                channel="C0HR",
                team="T0",
                message_ts=f"{time.time():.6f}",
                answer=json.loads(stored),
            )

        # the newest candidate beat the serving adapter: an admin promotes it
        newest = seed_adapters(s)[-1]
        browser.get(base + "/models")
        browser.find(f"#adapters a[href$='version={newest}']").click()
        browser.wait_for("#confirm")
        browser.find("#confirm input[name=confirm]").click()
        browser.find("#confirm button").click()
        browser.wait_for(".flash.ok", 30)
        assert registry.current_version(s) == newest, (registry.current_version(s), newest)
        shot("models", 1400)

        # the right answer to the 👎 answer about taxis
        browser.get(base + "/answers")
        card = next(c for c in browser.find_all("article.answer.down") if "taxi" in c.text)
        card.find("textarea[name=answer]").type(
            "Yes, after 22:00, or whenever public transport is unavailable or unsafe: "
            "claim the taxi in your expense report with the receipt."
        )
        card.find("button").click()
        browser.wait_for(".flash.ok")
        shot("answers", 1600)

        # channels: one mapped to two collections, one to everything (a warning)
        for channel, collections, everything in (
            ("C0LEGAL", "legal, handbook", False),
            ("C0ADMINS", "all", True),
        ):
            browser.get(base + "/access")
            browser.find("#map input[name=channel]").type(channel)
            browser.find("#map input[name=collections]").type(collections)
            if everything:
                browser.find("#map input[name=confirm_all]").click()
            browser.find("#map button").click()
            browser.wait_for(".flash.ok")
        shot("access", 1000)

        browser.get(base + "/")
        browser.wait_for("#workers td.ok", 30)
        shot("status", 1300)
        browser.get(base + "/sources")
        shot("sources", 1600)
        browser.get(base + "/audit")
        shot("audit", 900)
    finally:
        browser.close()
        console.should_exit = True
        thread.join(10)
        for w in workers:
            w.stop()
        server.stop()
        if a.keep:
            print(f"data dir kept for a look: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
