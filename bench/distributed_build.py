"""Distributed builds: one ingest worker against two, each with one thread, on a real handbook.

    python bench/distributed_build.py /work/shared/data/corpora/18f-handbook/pages
    python bench/distributed_build.py PAGES --workers 1 2 --rounds 2 --batch-files 8

Each configuration starts its ingest workers (`lorebot worker --queues ingest`, one
process, ``model.n_threads=1``, ``index.parse_workers=1``, each with its own data
directory) on a Redis of its own, with a shared ``file://`` store as a fleet would have,
warms them with a small build (the parser process and the model load once per worker,
as in a long-running fleet), then times a full distributed build of the corpus from a
fresh coordinator data directory. The coordinator (this process) uploads the inputs,
merges the batches and writes the version; its write time is the same for every row.
Rounds alternate the configurations; every run must give the first run's chunks (ids,
texts, sources). Prints a table with the speedup over one worker,
the load average before and after each run, and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest import Source, build_index, open_index  # noqa: E402
from lorebot import assets, contracts, sync  # noqa: E402
from lorebot.cli.stack import RedisServer, free_port  # noqa: E402
from lorebot.settings import Settings, cpu_count  # noqa: E402

RESULTS = REPO / "bench" / "results"
console = Console(width=150)


def loadavg() -> float:
    return os.getloadavg()[0]


def start_worker(work: Path, name: str, redis_url: str, shared: Path, models: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    env.update(
        LOREBOT_DATA_DIR=str(work / f"worker-{name}"),
        LOREBOT_REDIS__URL=redis_url,
        LOREBOT_SYNC__URL=f"file://{shared}",
        LOREBOT_SYNC__VERIFY_KEY=str(work / "keys" / "sync.pub"),
        LOREBOT_MODEL__N_THREADS="1",
        LOREBOT_INDEX__PARSE_WORKERS="1",
        LOREBOT_WORKER__CONCURRENCY="1",
        LOREBOT_MODEL_CACHE_DIR=str(models),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = open(work / f"worker-{name}.log", "ab")
    cmd = [sys.executable, "-m", "lorebot", "worker", "--queues", contracts.QUEUE_INGEST]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
    )
    deadline = time.monotonic() + 180
    path = work / f"worker-{name}.log"
    while "ready." not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {name} did not start:\n{path.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def coordinator(work: Path, name: str, redis_url: str, shared: Path, models: Path, batch: int):
    return Settings(
        data_dir=work / name,
        redis={"url": redis_url},
        sync={"url": f"file://{shared}", "signing_key": work / "keys" / "sync.key"},
        index={"distributed": True, "batch_files": batch},
        model_cache_dir=models,
    )


def run(args: argparse.Namespace) -> None:
    corpus = Path(args.path).resolve()
    work = Path(tempfile.mkdtemp(prefix="lorebot-dist-bench-"))
    models = work / "models"
    shared = work / "shared"
    sync.generate_keys(work / "keys" / "sync.key", work / "keys" / "sync.pub")
    server = RedisServer(free_port(), work / "redis").start()
    warm_docs = work / "warm"
    warm_docs.mkdir()
    for f in sorted(assets.sample_docs_dir().glob("*.md"))[:4]:
        shutil.copy(f, warm_docs / f.name)
    rows: list[dict] = []
    first: dict = {}
    try:
        order = [n for _ in range(args.rounds) for n in args.workers]
        for i, n in enumerate(order):
            procs = [start_worker(work, f"{i}-{k}", server.url, shared, models) for k in range(n)]
            try:
                warm = coordinator(work, f"warm-{i}", server.url, shared, models, 1)
                build_index(warm, [Source(path=warm_docs, collection="warm")], progress=False)
                settings = coordinator(
                    work, f"run-{i}", server.url, shared, models, args.batch_files
                )
                logs = [work / f"worker-{i}-{k}.log" for k in range(n)]
                offsets = [len(p.read_text(errors="replace")) for p in logs]
                before = loadavg()
                started = time.perf_counter()
                report = build_index(
                    settings, [Source(path=corpus, collection="handbook")], progress=False
                )
                wall = time.perf_counter() - started
                after = loadavg()
            finally:
                for p in procs:
                    stop(p)
            per_worker = [
                p.read_text(errors="replace")[o:].count("chunks in ")
                for p, o in zip(logs, offsets, strict=True)
            ]
            with open_index(settings) as reader:
                chunks = {c.chunk_id: (c.text, c.source) for c in reader.iter_chunks()}
            first = first or chunks
            rows.append(
                {
                    "workers": n,
                    "same_chunks_as_first_run": chunks == first,
                    "wall_s": round(wall, 1),
                    "batches_s": round(report.timings_s.get("batches", 0.0), 1),
                    "write_s": round(wall - report.timings_s.get("batches", 0.0), 1),
                    "files_ok": report.ok,
                    "chunks": report.chunks_total,
                    "chunks_per_s": round(report.chunks_total / wall, 2),
                    "batches_per_worker": per_worker,
                    "load_before": round(before, 1),
                    "load_after": round(after, 1),
                }
            )
            console.print(rows[-1])
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    # The speedup is over the mean wall time of the smallest configuration.
    base_walls = [r["wall_s"] for r in rows if r["workers"] == min(args.workers)]
    one = sum(base_walls) / len(base_walls)
    table = Table(title=f"Distributed build of {corpus} ({cpu_count()} cores)")
    for col in (
        "ingest workers (1 thread each)",
        "wall s",
        "batches s",
        "rest s",
        "chunks",
        "chunks/s",
        "speedup",
        "batches per worker",
        "same chunks",
        "load before/after",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["workers"]),
            f"{r['wall_s']:.1f}",
            f"{r['batches_s']:.1f}",
            f"{r['write_s']:.1f}",
            f"{r['chunks']:,}",
            f"{r['chunks_per_s']:.2f}",
            f"{one / r['wall_s']:.2f}×",
            " + ".join(str(b) for b in r["batches_per_worker"]),
            "yes" if r["same_chunks_as_first_run"] else "NO",
            f"{r['load_before']} / {r['load_after']}",
        )
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "distributed_build.json"
    out.write_text(
        json.dumps(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "corpus": str(corpus),
                "cpus": cpu_count(),
                "batch_files": args.batch_files,
                "rows": rows,
            },
            indent=1,
        )
    )
    console.print(f"[dim]wrote {out}[/]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("path", help="the corpus folder (e.g. the 18F handbook's pages)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--batch-files", type=int, default=8)
    p.add_argument("--keep", action="store_true", help="keep the work folder (worker logs)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
