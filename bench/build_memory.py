"""Peak memory of a full index build against corpus size: does it stay flat?

    python bench/build_memory.py --chunks 20000 200000                 # this checkout
    python bench/build_memory.py --chunks 20000 200000 --ref /work/main # and another one
    python bench/build_memory.py --chunks 2000 20000 --embed real       # the real model

Makes a synthetic corpus of about N chunks from the real handbooks (18F and Sourcegraph,
``../shared/data/corpora``): Markdown files made by recombining their paragraphs under
their headings, generated into a temporary directory (never committed). Markdown takes
ingest's normal path (front matter, unstructured's partition_md, the chunker), so parsing
costs what it costs. Each build runs in a child process (``PYTHONPATH`` = the checkout
measured: this one, and each ``--ref``) from an empty data directory, with
``index.parse_workers`` parse processes. Reported per build: wall time, chunks/s, the
build's own stage times, the builder's peak RSS (its ``ru_maxrss``), its peak anonymous
memory and the whole process tree's peak RSS (sampled every 0.2 s from /proc), the
largest parse worker's peak RSS, and the version's size on disk; then, per checkout, the
ratio of the largest build's peak RSS to the smallest's.

``--embed stand-in`` (the default) replaces only the embedding step with a cheap
deterministic stand-in: unit float32 vectors of MiniLM's 384 dimensions seeded by each
text, and one per sentence unit, exactly the arrays MiniLM gives (memory follows their
number and shape, not their values). Real MiniLM would need hours for 200k chunks on two
cores; ``--embed real`` runs it (ONNX int8, as ingest does) to check the same shape at a
smaller scale. ``--project 1000000`` extrapolates time and memory to that many chunks
for 1..N ingest workers from the measured per-chunk costs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
CORPORA = REPO.parent / "shared" / "data" / "corpora"
if not CORPORA.is_dir():  # a worktree under /work/wt/NAME
    CORPORA = REPO.parents[1] / "shared" / "data" / "corpora"
HANDBOOKS = ("18f-handbook/pages", "sourcegraph-handbook/content")

CHILD = r"""
import json, os, resource, sys, time, zlib
from pathlib import Path
import numpy as np

args = json.loads(sys.argv[1])
from ingest import Source, build_index
from lorebot.settings import Settings


class StandIn:
    '''MiniLM's output arrays (unit float32, 384 wide, one per text and per span), no model.'''

    variant = "stand-in"

    def encode_with_spans(self, texts, spans):
        vectors, sentences = [], []
        for text, sp in zip(texts, spans):
            rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
            block = rng.standard_normal((1 + len(sp), 384), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            vectors.append(block[0])
            sentences.append(block[1:].copy())
        return np.stack(vectors), sentences


settings = Settings(data_dir=Path(args["data"]), index={"parse_workers": args["workers"]})
if args["embed"] == "real":
    from ingest.embed import Embedder

    embedder = Embedder.from_settings(settings, exclusive=True)
else:
    embedder = StandIn()
marks = {}
from ingest import store as _store

if hasattr(_store, "write_faiss"):  # a streaming build: mark the peak before FAISS
    _write_faiss = _store.write_faiss

    def _marked(*a, **k):
        marks.setdefault("before_faiss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        _write_faiss(*a, **k)
        marks.setdefault("after_faiss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    _store.write_faiss = _marked
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
report = build_index(
    settings,
    [Source(Path(args["corpus"]), "bench")],
    progress=False,
    embedder=embedder,
    workers=args["workers"],
    index_type=args.get("index_type"),
)
wall = time.perf_counter() - started
peak_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
incremental = None
if args["incremental"]:
    # One file changed, as an editor would: its chunks are new, every other row is carried.
    page = sorted(Path(args["corpus"]).rglob("*.md"))[0]
    original = page.read_bytes()
    try:
        page.write_bytes(original + b"\n\nOne more closing paragraph, added for the re-run.\n")
        t = time.perf_counter()
        again = build_index(settings, [Source(Path(args["corpus"]), "bench")], progress=False,
                            embedder=embedder, workers=args["workers"],
                            index_type=args.get("index_type"))
        incremental = {"wall_s": time.perf_counter() - t, "chunks_new": again.chunks_new,
                       "timings_s": again.timings_s}
        t = time.perf_counter()
        build_index(settings, [Source(Path(args["corpus"]), "bench")], progress=False,
                    embedder=embedder, workers=args["workers"])
        incremental["no_change_s"] = time.perf_counter() - t
    finally:
        page.write_bytes(original)
print("RESULT " + json.dumps({
    "incremental": incremental,
    "marks": marks,
    "wall_s": wall,
    "chunks": report.chunks_total,
    "files_ok": report.ok,
    "index_type": report.index_type,
    "version": report.version,
    "timings_s": report.timings_s,
    "ru_maxrss_before_build": base,
    "ru_maxrss": peak_full,
    "ru_maxrss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
}), flush=True)
"""


# ----------------------------------------------------------------------------- corpus
FRONT = re.compile(r"\A---\n.*?\n---\n", re.S)
SKIP = re.compile(r"^\s*(\{[%{]|<|\||```|!\[|\[.*\]:|---)")


def handbook_parts() -> tuple[list[str], list[str]]:
    """(headings, paragraphs) of the real handbooks' Markdown pages."""
    headings: list[str] = []
    paragraphs: list[str] = []
    for sub in HANDBOOKS:
        root = CORPORA / sub
        if not root.is_dir():
            continue
        for page in sorted(root.rglob("*.md")):
            text = FRONT.sub("", page.read_text(encoding="utf-8", errors="replace"))
            for block in re.split(r"\n\s*\n", text):
                block = block.strip()
                if not block or SKIP.match(block):
                    continue
                if block.startswith("#"):
                    head = block.lstrip("#").strip().splitlines()[0]
                    if 3 <= len(head) <= 80:
                        headings.append(head)
                elif len(block) >= 80:
                    paragraphs.append(block)
    if len(paragraphs) < 100:
        raise SystemExit(f"error: no handbook pages under {CORPORA} (fix: pass --corpora DIR)")
    return headings, paragraphs


def write_file(path: Path, rng: random.Random, heads: list[str], paras: list[str], size: int):
    """One Markdown page of about ``size`` characters: a title, sections, paragraphs."""
    out = [f"# {rng.choice(heads)}\n"]
    n = len(out[0])
    while n < size:
        out.append(f"\n## {rng.choice(heads)}\n")
        for _ in range(rng.randint(2, 5)):
            p = rng.choice(paras)
            out.append("\n" + p + "\n")
            n += len(p) + 2
    path.write_text("".join(out), encoding="utf-8")


def chunks_per_file(work: Path, heads, paras, size: int) -> float:
    """Chunks one generated page gives, measured with ingest's own parser on a sample."""
    from ingest.parse import ParseJob, ParseOutput, parse_job
    from lorebot.assets import embedding_model_path
    from lorebot.settings import Settings

    s = Settings(data_dir=work / "calibrate")
    sample = work / "calibrate"
    sample.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    counts = []
    for i in range(6):
        path = sample / f"p{i}.md"
        write_file(path, rng, heads, paras, size)
        out = parse_job(
            ParseJob(
                path=str(path),
                source=path.name,
                collection="c",
                kind="md",
                content_hash="x",
                modified=None,
                model_dir=str(embedding_model_path(s.index.embedding_model)),
                chunk_tokens=s.index.chunk_tokens,
                overlap_tokens=s.index.chunk_overlap_tokens,
            )
        )
        if isinstance(out, ParseOutput):
            counts.append(len(out.chunks))
    shutil.rmtree(sample, ignore_errors=True)
    if not counts:
        raise SystemExit("error: the sample pages did not parse (fix: check `lorebot doctor`)")
    return sum(counts) / len(counts)


def make_corpus(work: Path, chunks: int, file_chars: int, per_file: float) -> Path:
    """A folder of generated pages giving about ``chunks`` chunks (reused when present)."""
    root = work / f"corpus-{chunks}"
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    heads, paras = handbook_parts()
    rng = random.Random(chunks)
    n_files = max(1, math.ceil(chunks / per_file))
    for i in range(n_files):
        folder = root / f"d{i // 500:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_file(folder / f"page-{i:06d}.md", rng, heads, paras, file_chars)
    done.write_text(str(n_files))
    return root


# ----------------------------------------------------------------------------- measuring
def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """Peak RSS and anonymous memory of a process, and RSS of its whole tree, from /proc."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak = {"rss": 0, "anon": 0, "tree_rss": 0}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.wait(self.every_s):
            try:
                kids = proc.children(recursive=True)
                rss = proc.memory_info().rss
            except psutil.NoSuchProcess:
                return
            tree = rss
            for k in kids:
                try:
                    tree += k.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            anon = _status_kb(self.pid, "RssAnon")
            for key, value in (("rss", rss), ("anon", anon), ("tree_rss", tree)):
                self.peak[key] = max(self.peak[key], value)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


WARM = r"""
import sys
from pathlib import Path
from ingest.embed import Embedder
from lorebot.settings import Settings
Embedder.from_settings(Settings(data_dir=Path(sys.argv[1])), exclusive=True).encode(["warm"])
"""


def child_env(ref: Path, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    env.update(
        PYTHONPATH=str(ref),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        LOREBOT_MODEL__N_THREADS="1",
        LOREBOT_MODEL_CACHE_DIR=str(work / "models"),  # the int8 graph is made once
    )
    return env


def warm_model(work: Path) -> None:
    """Export and quantise the int8 graph once, before any build is measured."""
    data = Path(tempfile.mkdtemp(prefix="warm-", dir=work))
    subprocess.run([sys.executable, "-c", WARM, str(data)], env=child_env(REPO, work), check=True)
    shutil.rmtree(data, ignore_errors=True)


def run_build(ref: Path, corpus: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
    spec = {
        "data": str(data),
        "corpus": str(corpus),
        "workers": args.workers,
        "embed": args.embed,
        "index_type": args.index_type,
        "incremental": args.incremental,
    }
    env = child_env(ref, work)
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        cwd=str(ref),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"error: the build under {ref} failed:\n{err[-3000:]}")
    result = json.loads(line[len("RESULT ") :])
    vdir = data / "index" / "versions" / result["version"]
    if not vdir.is_dir():
        vdir = next(data.rglob(f"versions/{result['version']}"))
    result.update(
        ref=str(ref),
        embed=args.embed,
        workers=args.workers,
        peak_rss=result["ru_maxrss"],
        peak_anon_sampled=sampler.peak["anon"],
        peak_tree_rss_sampled=sampler.peak["tree_rss"],
        index_bytes=dir_bytes(vdir),
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )
    result["chunks_per_s"] = result["chunks"] / result["wall_s"]
    result["index_bytes_per_chunk"] = result["index_bytes"] / max(1, result["chunks"])
    shutil.rmtree(data, ignore_errors=True)
    return result


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def show(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Full build: time and peak memory by corpus size")
    for col in (
        "checkout",
        "chunks",
        "index",
        "wall",
        "chunks/s",
        "parse / embed / write s",
        "peak RSS (builder)",
        "before FAISS",
        "peak anon",
        "peak tree RSS",
        "largest parse worker",
        "disk / chunk",
        "1 file changed / no-op",
        "load before/after",
    ):
        t.add_column(col)
    for r in rows:
        ts = r["timings_s"]
        stages = " / ".join(f"{ts.get(k, 0):.0f}" for k in ("parse", "embed", "write"))
        t.add_row(
            Path(r["ref"]).name,
            f"{r['chunks']:,}",
            r["index_type"],
            f"{r['wall_s']:.0f} s",
            f"{r['chunks_per_s']:.0f}",
            stages,
            mib(r["peak_rss"]),
            mib(r["marks"]["before_faiss"]) if "before_faiss" in r["marks"] else "",
            mib(r["peak_anon_sampled"]),
            mib(r["peak_tree_rss_sampled"]),
            mib(r["ru_maxrss_children"]),
            f"{r['index_bytes_per_chunk'] / 1024:.1f} KiB",
            f"{inc['wall_s']:.1f} s / {inc['no_change_s']:.2f} s"
            if (inc := r["incremental"])
            else "",
            f"{r['load_before']} / {r['load_after']}",
        )
    Console(width=200).print(t)
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_ref.setdefault(r["ref"], []).append(r)
    for ref, rs in by_ref.items():
        rs = sorted(rs, key=lambda r: r["chunks"])
        if len(rs) > 1:
            lo, hi = rs[0], rs[-1]
            print(
                f"{ref}: {hi['chunks']:,} vs {lo['chunks']:,} chunks: peak RSS "
                f"{hi['peak_rss'] / lo['peak_rss']:.2f}x, peak anon "
                f"{hi['peak_anon_sampled'] / max(1, lo['peak_anon_sampled']):.2f}x"
                + (
                    f", peak before FAISS {hi['marks']['before_faiss'] / b:.2f}x"
                    if (b := lo["marks"].get("before_faiss")) and "before_faiss" in hi["marks"]
                    else ""
                )
            )
    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["corpus_chunks"], []).append(r)
    for size, rs in sorted(by_size.items()):
        if len(rs) > 1:
            print(
                f"~{size:,} chunks: peak RSS "
                + ", ".join(f"{Path(r['ref']).name} {mib(r['peak_rss'])}" for r in rs)
                + f" ({rs[0]['peak_rss'] / rs[1]['peak_rss']:.2f}x)"
            )


def project(
    rows: list[dict[str, Any]], target: int, workers: list[int], embed_rate: float | None
) -> dict[str, Any]:
    """Time and memory of a ``target``-chunk build from the largest measured build.

    Parsing and embedding divide over ingest workers (the distributed build), each taken
    to be a machine like this one; planning, merging and writing the version stay on the
    coordinator and grow with the chunks. ``embed_rate`` (chunks/s of the real model,
    measured with ``--embed real``) replaces a stand-in's embedding time.
    """
    r = max(rows, key=lambda r: r["chunks"])
    ts, n = r["timings_s"], r["chunks"]
    embed_s = n / embed_rate if embed_rate else ts.get("embed", 0)
    per_chunk_fleet = (ts.get("parse", 0) + embed_s + ts.get("batches", 0)) / n
    per_chunk_local = (r["wall_s"] - ts.get("parse", 0) - ts.get("embed", 0)) / n
    out = {
        "from_chunks": n,
        "target_chunks": target,
        "index_bytes": r["index_bytes_per_chunk"] * target,
        # What the graph holds while it is written (ingest.store._empty_faiss): float16 codes,
        # the links it reserves (2*M + 2 a node) and each node's offset and level.
        "hnsw_bytes": target * (384 * 2 + (2 * 32 + 2) * 4 + 8 + 4),
        "hours_by_workers": {
            w: (per_chunk_fleet * target / w + per_chunk_local * target) / 3600 for w in workers
        },
        "embed": r["embed"],
        "embed_rate": embed_rate,
    }
    print(
        f"projection to {target:,} chunks from the {n:,}-chunk build "
        f"(embedding at {n / embed_s if embed_s else 0:.1f} chunks/s): "
        f"index on disk {out['index_bytes'] / 2**30:.1f} GiB; the HNSW graph the builder "
        f"holds while writing {out['hnsw_bytes'] / 2**30:.2f} GiB; wall "
        + ", ".join(f"{w} worker(s) {h:.2f} h" for w, h in out["hours_by_workers"].items())
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--ref", type=Path, action="append", default=[], help="another checkout")
    ap.add_argument("--embed", choices=["stand-in", "real"], default="stand-in")
    ap.add_argument("--workers", type=int, default=2, help="parse processes per build")
    ap.add_argument("--index-type", choices=["flat", "hnsw"], default=None)
    ap.add_argument("--file-chars", type=int, default=40_000, help="size of a generated page")
    ap.add_argument(
        "--chunks-per-file", type=float, default=None, help="skip measuring it on a sample"
    )
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lorebot-bm")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpora")
    ap.add_argument(
        "--incremental", action="store_true", help="then time a one-file change and a no-op"
    )
    ap.add_argument("--project", type=int, default=1_000_000)
    ap.add_argument("--project-workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument(
        "--real-embed-rate", type=float, default=None, help="real chunks/s, for the projection"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "build_memory.json")
    args = ap.parse_args()
    if any(c < 100 for c in args.chunks):
        raise SystemExit("error: --chunks must be at least 100 (fix: e.g. --chunks 2000 20000)")
    refs = [REPO] + [p.resolve() for p in args.ref]
    for ref in refs:
        if not (ref / "ingest" / "build.py").is_file():
            raise SystemExit(f"error: {ref} is not a lorebot checkout (no ingest/build.py)")
    args.work.mkdir(parents=True, exist_ok=True)
    heads, paras = handbook_parts()
    per_file = args.chunks_per_file or chunks_per_file(args.work, heads, paras, args.file_chars)
    print(f"{len(paras):,} handbook paragraphs; {per_file:.1f} chunks per generated page")
    if args.embed == "real":
        warm_model(args.work)
    rows = []
    try:
        for chunks in args.chunks:
            corpus = make_corpus(args.work, chunks, args.file_chars, per_file)
            for ref in refs:
                print(f"building {chunks:,} chunks with {ref} …", flush=True)
                rows.append(run_build(ref, corpus, args.work, args))
                rows[-1]["corpus_chunks"] = chunks
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"args": sys.argv[1:], "runs": rows}, indent=1))
                r = rows[-1]
                print(
                    f"  {r['chunks']:,} chunks in {r['wall_s']:.0f} s, "
                    f"peak RSS {mib(r['peak_rss'])} (load {r['load_before']}→{r['load_after']})",
                    flush=True,
                )
    finally:
        if not args.keep:
            for chunks in args.chunks:
                shutil.rmtree(args.work / f"corpus-{chunks}", ignore_errors=True)
    show(rows)
    projection = (
        project(rows, args.project, args.project_workers, args.real_embed_rate) if rows else None
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": sys.argv[1:], "runs": rows, "projection": projection}, indent=1)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
