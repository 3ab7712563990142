"""`lorebot ask` wall time against one warm worker, and where it goes (``--json`` timings).

    python bench/cli_latency.py                              # this checkout, 3 runs
    git worktree add /tmp/before <commit>                    # (or git archive | tar -x)
    python bench/cli_latency.py --before /tmp/before         # both CLIs, interleaved

The sample handbook is indexed into a temporary data dir (or ``--data-dir`` is reused), a
private Redis and one real ``lorebot worker`` (this checkout's) are started, and each
question is asked ``--runs`` times through ``python -m lorebot ask --json`` as a user
would: a fresh process each time, its wall time taken from outside. With ``--before`` the
older checkout's CLI is asked the same question right before this one's, so load changes
on a shared machine hit both. Between timed asks an untimed different question is sent
(through Redis, no CLI), so that each timed question evaluates its prompt as a new
question does instead of finding it in the model's cache.

Reported per question and CLI: the median wall time, the median of wall minus the
worker's own task time (what the CLI and the transport add), and, for a CLI that prints
them, the median of each ``timings`` part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    Asker,
    Redis,
    Worker,
    build_sample_index,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    save,
)
from rich.table import Table

QUESTIONS = [
    "How many days of annual leave do I get per year?",  # answered by the model
    "what's the company's stock ticker?",  # refused before the model: the CLI path alone
]
FLUSH = "How do I connect to the VPN from home?"


def ask_once(tree: Path, question: str, env: dict[str, str]) -> dict:
    """One `lorebot ask --json` process of the checkout at ``tree``: wall s and its JSON."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "lorebot", "ask", "--json", question],
        cwd=str(tree),
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{tree}: lorebot ask failed: {out.stderr[-2000:]}")
    payload = json.loads(out.stdout)
    task = payload["timings_ms"].get("task", payload["timings_ms"].get("total", 0.0)) / 1000
    return {"wall_s": wall, "task_s": task, "timings": payload.get("timings")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="an older checkout to compare")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--question", action="append", default=None, help="(repeatable)")
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse this data dir's index")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()
    questions = args.question or QUESTIONS
    trees = {"after": REPO} if args.before is None else {"before": args.before, "after": REPO}
    workdir = Path(tempfile.mkdtemp(prefix="lorebot-bench-cli-"))
    cleanup = []
    try:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = workdir / "data"
            build_sample_index(data_dir, threads=2)[1].close()
        redis = Redis(workdir)
        cleanup.append(redis)
        worker = Worker(data_dir, redis.url, workdir / "worker.log")
        cleanup.append(worker)
        worker.wait_ready()
        asker = Asker(redis.url)
        asker.ask(FLUSH)  # the pool child has loaded everything and answered once
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
        env.update(
            LOREBOT_DATA_DIR=str(data_dir),
            LOREBOT_REDIS__URL=redis.url,
            LOREBOT_LOGGING__LEVEL="WARNING",
            HF_HUB_OFFLINE="1",
        )
        runs: dict[str, dict[str, list[dict]]] = {
            q: {name: [] for name in trees} for q in questions
        }
        for question in questions:
            for i in range(args.runs):
                for name, tree in trees.items():
                    asker.ask(FLUSH)
                    run = ask_once(tree, question, env)
                    runs[question][name].append(run)
                    console.print(
                        f"{name} {i + 1}: {run['wall_s']:.2f} s wall, worker {run['task_s']:.2f} s"
                        f" · {question}"
                    )
    finally:
        for item in reversed(cleanup):
            item.close()
        shutil.rmtree(workdir, ignore_errors=True)

    report: dict[str, dict] = {}
    for question, by_tree in runs.items():
        table = Table(title=f"{question!r}, median of {args.runs}")
        table.add_column("seconds")
        for name in trees:
            table.add_column(name, justify="right")
        rows: dict[str, dict[str, float | None]] = {}
        for name, items in by_tree.items():
            med = {
                "wall": statistics.median(r["wall_s"] for r in items),
                "wall - worker task": statistics.median(r["wall_s"] - r["task_s"] for r in items),
            }
            if all(r["timings"] for r in items):
                for key in items[0]["timings"]:
                    values = [r["timings"][key] for r in items if r["timings"][key] is not None]
                    med[key] = statistics.median(values) if values else None
            for key, value in med.items():
                rows.setdefault(key, {})[name] = value
        for key, cells in rows.items():
            table.add_row(key, *("–" if cells.get(n) is None else f"{cells[n]:.3f}" for n in trees))
        console.print(table)
        report[question] = {"runs": by_tree, "median": rows}
    out = save(
        "cli-latency", {"before": str(args.before), "questions": report}, started_load=started_load
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
