"""Promise 7: 200 questions at concurrency 20 against two answer workers with the real model.

Each question is submitted the way the bot submits it (task id = question id, a reply
pointing at a placeholder in the fake Slack Web API) and counted where a user sees it:
the placeholder's final update. Reports errors, lost and duplicated answers, p50/p95
latency (submission to final update), throughput, and the workers' resident memory
sampled every second (flat = the last quarter's mean within 10% of the second quarter's;
the first is warm-up).

    .venv/bin/python bench/reliability_load.py                  # 200 questions, 20 in flight
    .venv/bin/python bench/reliability_load.py -n 40 -c 8       # quicker

Writes bench/results/reliability_load.json.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Redis,
    Worker,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    make_workload,
    save,
    summary,
)


def worker_rss_mib(workers: list[Worker]) -> float:
    """Resident memory of every worker process and its pool children, summed (MiB)."""
    import psutil

    total = 0
    for w in workers:
        try:
            root = psutil.Process(w.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def run_load(n: int, concurrency: int, *, max_tokens: int = 64, workers_n: int = 2, timeout_s: float = 3600) -> dict[str, Any]:
    """Start Redis, fake Slack and ``workers_n`` workers; ask ``n`` questions; measure."""
    from tests.reliability.workers_harness import Asker, slack_env
    from tests.slack.fake_slack import FakeSlack

    started_load = loadavg()
    workload = make_workload("sample", limit=None, answerable_only=True)
    redis = Redis(workload.workdir)
    fake = FakeSlack().start()
    workers: list[Worker] = []
    samples: list[float] = []
    stop = threading.Event()
    try:
        env = slack_env(fake, LOREBOT_MODEL__MAX_TOKENS=str(max_tokens), LOREBOT_SLACK__USER_RATE_PER_MIN="1000")
        for i in range(workers_n):
            workers.append(Worker(workload.data_dir, redis.url, workload.workdir / f"worker{i}.log",
                                  threads=1, extra_env=env))
        for w in workers:
            w.wait_ready()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(worker_rss_mib(workers))

        threading.Thread(target=sample, daemon=True).start()
        asker = Asker(fake, redis.url)
        sent_at: dict[str, float] = {}
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        i = 0
        while time.monotonic() < deadline:
            done = sum(1 for v in asker.finals().values() if v)
            while i < n and i - done < concurrency:
                qid = asker.ask(workload.questions[i % len(workload.questions)])
                sent_at[qid] = time.time()
                i += 1
            if i >= n and done >= n:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        time.sleep(3)  # let a late duplicate arrive
        counts = asker.finals()
        first_final: dict[str, float] = {}
        by_ts = {ts: qid for qid, ts in asker.placeholders.items()}
        for c in fake.calls_to("chat.update"):
            qid = by_ts.get(c.args.get("ts"))
            if qid and (c.args.get("blocks") or [{}])[-1].get("type") == "actions":
                first_final.setdefault(qid, c.at)
        latencies = [first_final[q] - sent_at[q] for q in first_final if q in sent_at]
        errors = asker.errors()
        for w in workers:
            errors += ["worker log: " + line for line in w.log().splitlines() if " ERROR " in line]
    finally:
        stop.set()
        for w in workers:
            w.close()
        fake.stop()
        redis.close()
        workload.close()
    # The first quarter is warm-up (pool processes loading the model, first KV caches):
    # memory is flat when the last quarter is within 10% of the second.
    quarter = max(1, len(samples) // 4)
    first_q = sum(samples[quarter : 2 * quarter]) / quarter if len(samples) >= 2 * quarter else 0.0
    last_q = sum(samples[-quarter:]) / quarter if samples else 0.0
    return {
        "questions": n,
        "concurrency": concurrency,
        "workers": workers_n,
        "max_tokens": max_tokens,
        "sent": len(sent_at),
        "answered": sum(1 for v in counts.values() if v),
        "lost": sum(1 for v in counts.values() if not v),
        "duplicated": sum(1 for v in counts.values() if v > 1),
        "errors": errors[:20],
        "error_count": len(errors),
        "latency_s": summary(latencies),
        "throughput_qps": round(len(latencies) / elapsed, 3) if elapsed else None,
        "elapsed_s": round(elapsed, 1),
        "rss_mib": {
            "second_quarter_mean": round(first_q),
            "last_quarter_mean": round(last_q),
            "max": round(max(samples)) if samples else None,
            "samples": len(samples),
            "series": [round(v) for v in samples[:: max(1, len(samples) // 40)]],
            "flat": bool(samples) and last_q <= first_q * 1.10,
        },
        "started_load": started_load,
    }


def show(result: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"reliability load: {result['questions']} questions, concurrency {result['concurrency']}, "
                    f"{result['workers']} workers")
    t.add_column("measure")
    t.add_column("value", justify="right")
    lat = result["latency_s"]
    rss = result["rss_mib"]
    for name, value in [
        ("sent / answered", f"{result['sent']} / {result['answered']}"),
        ("lost / duplicated", f"{result['lost']} / {result['duplicated']}"),
        ("errors", str(result["error_count"])),
        ("latency p50 / p95 (s)", f"{lat.get('p50', 0):.1f} / {lat.get('p95', 0):.1f}"),
        ("throughput (questions/s)", f"{result['throughput_qps']}"),
        ("elapsed (s)", f"{result['elapsed_s']}"),
        ("workers' RSS 2nd→last quarter (MiB)", (f"{rss['second_quarter_mean']} → {rss['last_quarter_mean']}"
                                                   f" ({'flat' if rss['flat'] else 'GROWING'})")),
    ]:
        t.add_row(name, value)
    console.print(t)


def main() -> None:
    exit_cleanly_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--questions", type=int, default=200)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    result = run_load(args.questions, args.concurrency, max_tokens=args.max_tokens)
    show(result)
    save("reliability_load", result, started_load=result.pop("started_load"))
    if result["lost"] or result["duplicated"] or result["error_count"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
