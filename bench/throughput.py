"""Questions per minute with 1, 2 and 4 worker processes at 1..16 questions in flight.

    python bench/throughput.py                               # sample handbook questions
    python bench/throughput.py --processes 1 2 --concurrency 1 2 4 8 --per-level 12

For each process count P, one ``lorebot worker`` runs P pool processes, each with
``cores / P`` llama.cpp threads (at least 1), so the cores are shared out rather than
oversubscribed. For each concurrency C, C client threads each keep one question in
flight (closed loop: the next question is sent when the previous answer arrives) until
``max(--per-level, C)`` questions are answered. Reported: questions/minute, latency
p50/p95 (task submitted -> result) and where throughput stops growing (the next doubling
of C adds less than 10%). Only questions the documents answer are asked by default, so
every question costs a model call. Questions cycle through the workload, so the
KV-cache prefix and the answers are the same mix at every level (one cycle through the questions is
shared by all levels, so no process gets the question it has just answered).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Asker,
    Redis,
    Worker,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    make_workload,
    save,
    summary,
)
from rich.table import Table

from lorebot.settings import cpu_count

#: A doubling of concurrency that adds less than this much throughput is saturation.
SATURATION_GAIN = 0.10


def run_level(asker: Asker, feed: Iterator[str], concurrency: int, total: int) -> dict[str, Any]:
    """Answer ``total`` questions from ``feed`` with ``concurrency`` in flight.

    One feed serves every level, so no process is asked the question it just answered
    (its KV cache would then hold the whole prompt and skip the prompt evaluation).
    """
    lock = threading.Lock()
    left = [total]
    latencies: list[float] = []
    abstained = [0]

    def client() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                text = next(feed)
            answer, ms = asker.ask(text)
            with lock:
                latencies.append(ms)
                abstained[0] += int(answer.abstained)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "questions": total,
        "wall_s": round(wall, 2),
        "per_min": round(total / wall * 60, 2),
        "latency_ms": summary(latencies),
        "abstained": abstained[0],
        "loadavg": loadavg(),
    }


def saturation(levels: list[dict[str, Any]]) -> int | None:
    """The concurrency after which throughput grows by less than SATURATION_GAIN."""
    for prev, nxt in itertools.pairwise(levels):
        if nxt["per_min"] < prev["per_min"] * (1 + SATURATION_GAIN):
            return prev["concurrency"]
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--source", choices=("sample", "xquad"), default="sample")
    ap.add_argument(
        "--limit",
        type=int,
        default=None,
        help="distinct questions (default: all sample ones; xquad 40)",
    )
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument(
        "--per-level",
        type=int,
        default=10,
        help="questions answered per level (at least the concurrency)",
    )
    ap.add_argument(
        "--with-unanswerable",
        action="store_true",
        help=(
            "also ask the sample questions the handbook cannot answer (mostly refused before the "
            "model)"
        ),
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="throughput")
    args = ap.parse_args(argv)
    exit_cleanly_on_sigterm()
    limit = args.limit if args.limit is not None else (40 if args.source == "xquad" else None)
    cores = cpu_count()
    started_load = loadavg()
    console.rule(f"throughput · {args.source} · {cores} cores · load {started_load}")

    from ingest.embed import Embedder

    workload = make_workload(
        args.source,
        limit=limit,
        seed=args.seed,
        embedder=Embedder(None),
        answerable_only=not args.with_unanswerable,
    )
    results: list[dict[str, Any]] = []
    redis = None
    try:
        redis = Redis(workload.workdir)
        asker = Asker(redis.url)
        feed = itertools.cycle(workload.questions)
        for procs in args.processes:
            threads = max(1, cores // procs)
            worker = Worker(
                workload.data_dir,
                redis.url,
                workload.workdir / f"worker-{procs}.log",
                processes=procs,
                threads=threads,
            )
            try:
                worker.wait_ready()
                # Warm every pool process (model, index, KV cache) before measuring.
                run_level(asker, feed, procs, procs * 2)
                levels = []
                for c in args.concurrency:
                    level = run_level(asker, feed, c, max(args.per_level, c))
                    levels.append(level)
                    console.print(
                        f"[dim]{procs} proc × {threads} thr, {c:>2} in flight: "
                        f"{level['per_min']:.1f} q/min, "
                        f"p50 {level['latency_ms']['p50']:,.0f} ms, load {level['loadavg']}[/]"
                    )
            finally:
                worker.close()
            results.append(
                {
                    "processes": procs,
                    "threads": threads,
                    "levels": levels,
                    "saturates_at": saturation(levels),
                }
            )
    finally:
        if redis is not None:
            redis.close()
        workload.close()

    table = Table(
        "processes × threads",
        "in flight",
        "q/min",
        "p50 s",
        "p95 s",
        "load (1 min)",
        title=f"throughput · {args.source} · {cores} cores",
        title_justify="left",
    )
    for r in results:
        for level in r["levels"]:
            mark = " ◀ saturated" if level["concurrency"] == r["saturates_at"] else ""
            table.add_row(
                f"{r['processes']} × {r['threads']}",
                str(level["concurrency"]),
                f"{level['per_min']:.1f}{mark}",
                f"{level['latency_ms']['p50'] / 1000:.2f}",
                f"{level['latency_ms']['p95'] / 1000:.2f}",
                str((level["loadavg"] or ["?"])[0]),
            )
    console.print(table)
    best = max(
        (lv | {"processes": r["processes"]} for r in results for lv in r["levels"]),
        key=lambda x: x["per_min"],
        default=None,
    )
    if best:
        console.print(
            f"best: {best['per_min']:.1f} q/min with {best['processes']} processes at "
            f"{best['concurrency']} in flight"
        )
    save(
        args.name,
        {
            "source": args.source,
            "cores": cores,
            "per_level": args.per_level,
            "with_unanswerable": args.with_unanswerable,
            "results": results,
            "best": best,
        },
        started_load=started_load,
    )


if __name__ == "__main__":
    main()
