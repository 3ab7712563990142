"""Ingestion and retrieval benchmarks: prints tables, writes JSON to bench/results/.

    python bench/ingest_bench.py corpus ../shared/data/corpora/18f-handbook/pages
    python bench/ingest_bench.py messy ../shared/data/messy-files
    python bench/ingest_bench.py ann --sizes 10000 100000 1000000
    python bench/ingest_bench.py ann --xquad 1190 --sizes 200000   # recall, before/after
    python bench/ingest_bench.py embed            # torch only; variants: bench/embed_speed.py

``corpus``: full build (files/s, chunks/s, parse/embed/write split), a no-change re-run,
an incremental run after changing one file, search latency p50/p99 and the on-disk size
per chunk. ``messy``: share of files ingested and every failure's reason. ``ann``:
recall@10 of HNSW against exact (Flat) search and latency at growing sizes. Real MiniLM
vectors of the corpora are used as far as they go; larger sizes are filled with
perturbed copies of them (said so in the output). ``ann --xquad N`` instead measures what
the HNSW graph's storage does to retrieval: XQuAD-en recall@1/@5 of the gold passage for N
questions, through the serving search (hybrid) on an index of XQuAD's passages with the
exact flat index, the float32 graph written before and the float16 graph written now
(re-scored from embeddings.npy), and with the dense search alone at each ``--sizes``
(XQuAD's passage vectors among real handbook vectors and perturbed copies of them), with
search latency p50/p99 beside each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest import Source, build_index, open_index  # noqa: E402
from lorebot.settings import Settings, cpu_count  # noqa: E402

RESULTS = REPO / "bench" / "results"
console = Console(width=150)


def machine() -> dict:
    return {
        "cpus": cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    path.write_text(json.dumps(data, indent=1))
    console.print(f"[dim]wrote {path}[/]")
    return path


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# ------------------------------------------------------------------------------ corpus
def plain_st_embed(reader, t_full: float) -> dict:
    """The naive baseline beside the build: plain sentence-transformers ``encode`` (batch 64,
    torch, all cores) over the very chunk texts the build just embedded."""
    import os

    import torch
    from sentence_transformers import SentenceTransformer

    from ingest.embed import Embedder

    texts = [r[0] for r in reader.db.execute("SELECT text FROM chunks ORDER BY rowid")]
    torch.set_num_threads(os.cpu_count() or 1)
    st = SentenceTransformer(str(Embedder().model_dir), device="cpu", local_files_only=True)
    st.encode(["warm up"], batch_size=64)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    st.encode(texts, batch_size=64, show_progress_bar=False)
    t_st = time.perf_counter() - t
    return {
        "baseline_embed_s": round(t_st, 2),
        "baseline_chunks_per_s": round(len(texts) / t_st, 2),
        "full_build_over_baseline_embed": round(t_full / t_st, 3),
        "load_before_after": f"{load:.1f} / {os.getloadavg()[0]:.1f}",
    }


def bench_corpus(args: argparse.Namespace) -> None:
    src = Path(args.path).resolve()
    work = Path(tempfile.mkdtemp(prefix="lorebot-bench-"))
    copy = work / "docs"
    shutil.copytree(src, copy)  # we modify a file for the incremental run
    settings = Settings(data_dir=work / "data")
    name = args.name or src.parent.name if src.name in ("pages", "content") else src.name
    rows = []
    try:
        # The int8 graph is exported and quantised once per data directory, on first use
        # (~10 s); do it before the clock starts, as any machine that has built before has.
        from ingest.embed import Embedder

        Embedder.from_settings(settings).encode(["warm up"])
        t = time.perf_counter()
        full = build_index(settings, [Source(copy, "bench")], progress=not args.quiet)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        same = build_index(settings, [Source(copy, "bench")], progress=False)
        assert not same.new_version, "a no-change run must not write a version"
        t_same = time.perf_counter() - t
        victim = next(p for p in sorted(copy.rglob("*.md")) if p.stat().st_size > 2000)
        victim.write_text(
            victim.read_text(encoding="utf-8") + "\n\nA sentence added for the benchmark.\n",
            encoding="utf-8",
        )
        t = time.perf_counter()
        inc = build_index(settings, [Source(copy, "bench")], progress=False)
        t_inc = time.perf_counter() - t

        reader = open_index(settings)
        texts = [
            r[0]
            for r in reader.db.execute("SELECT heading || ' ' || substr(text, 1, 80) FROM chunks")
        ]
        random.Random(0).shuffle(texts)
        queries = [" ".join(q.split()[:8]) for q in texts[: args.queries]]
        reader.search("warm up", k=4)
        lat = []
        for q in queries:
            t = time.perf_counter()
            reader.search(q, k=4)
            lat.append((time.perf_counter() - t) * 1000)
        # the same queries with their vectors replayed: the index's own share
        cache = {q: reader.embedder.encode([q])[0] for q in queries}
        embed_query = reader.query_vector
        reader.query_vector = cache.__getitem__  # type: ignore[method-assign]
        lat_index = []
        for q in queries:
            t = time.perf_counter()
            reader.search(q, k=4)
            lat_index.append((time.perf_counter() - t) * 1000)
        reader.query_vector = embed_query  # type: ignore[method-assign]
        vdir = reader.path
        size = dir_size(vdir)
        # keep the real vectors for the ANN benchmark
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(vdir / "embeddings.npy", RESULTS / f"cache-{name}-vectors.npy")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n_files = len(full.files)
        data = {
            "corpus": str(src),
            "name": name,
            "files": n_files,
            "files_ok": full.ok,
            "chunks": full.chunks_total,
            "full_s": round(t_full, 2),
            "files_per_s": round(n_files / t_full, 2),
            "chunks_per_s": round(full.chunks_total / t_full, 2),
            "timings_s": {k: round(v, 2) for k, v in full.timings_s.items()},
            "embed_chunks_per_s": round(full.chunks_new / full.timings_s["embed"], 2)
            if full.timings_s.get("embed")
            else None,
            "parse_files_per_s": round(n_files / full.timings_s["parse"], 2)
            if full.timings_s.get("parse")
            else None,
            "no_change_s": round(t_same, 3),
            "no_change_share": round(t_same / t_full, 4),
            "incremental_one_file_s": round(t_inc, 2),
            "incremental_new_chunks": inc.chunks_new,
            "search_ms_p50": round(pct(lat, 50), 2),
            "search_ms_p99": round(pct(lat, 99), 2),
            "search_index_ms_p50": round(pct(lat_index, 50), 2),
            "search_index_ms_p99": round(pct(lat_index, 99), 2),
            "queries": len(lat),
            "index_bytes": size,
            "disk_bytes_per_chunk": round(size / max(1, full.chunks_total)),
            "process_max_rss_mb": round(rss_mb),
            "failures": {f.path: f.reason for f in full.files if f.status in ("failed", "skipped")},
        }
        if args.baseline:
            data.update(plain_st_embed(reader, t_full))
        reader.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"ingest: {name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (
        "files",
        "files_ok",
        "chunks",
        "full_s",
        "files_per_s",
        "chunks_per_s",
        "parse_files_per_s",
        "embed_chunks_per_s",
        "no_change_s",
        "no_change_share",
        "incremental_one_file_s",
        "incremental_new_chunks",
        "search_ms_p50",
        "search_ms_p99",
        "search_index_ms_p50",
        "search_index_ms_p99",
        "disk_bytes_per_chunk",
        "process_max_rss_mb",
        "baseline_embed_s",
        "baseline_chunks_per_s",
        "full_build_over_baseline_embed",
        "load_before_after",
    ):
        if key in data:
            table.add_row(key, str(data[key]))
    table.add_row("timings_s", json.dumps(data["timings_s"]))
    console.print(table)
    rows.append(data)
    save(f"ingest-corpus-{name}", data)


# ------------------------------------------------------------------------------ messy
def bench_messy(args: argparse.Namespace) -> None:
    src = Path(args.path).resolve()
    work = Path(tempfile.mkdtemp(prefix="lorebot-bench-"))
    settings = Settings(data_dir=work / "data")
    try:
        t = time.perf_counter()
        report = build_index(
            settings, [Source(src, "messy")], progress=not args.quiet, file_timeout_s=args.timeout
        )
        elapsed = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(report.table())
    console.print(report.problems_table())
    n = len(report.files)
    data = {
        "corpus": str(src),
        "files": n,
        "ok": report.ok,
        "failed": report.failed,
        "skipped": report.skipped,
        "share_ingested": round(report.ok / n, 4),
        "chunks": report.chunks_total,
        "seconds": round(elapsed, 1),
        "timings_s": {k: round(v, 2) for k, v in report.timings_s.items()},
        "slowest": sorted(((f.seconds, f.path) for f in report.files), reverse=True)[:5],
        "not_ingested": {
            f.path: f"{f.status}: {f.reason}"
            for f in report.files
            if f.status in ("failed", "skipped")
        },
    }
    console.print(
        f"ingested {report.ok}/{n} files ({data['share_ingested']:.1%}) in {elapsed:.0f}s"
    )
    save("ingest-messy", data)


# ------------------------------------------------------------------------------ ann
def real_vectors(limit: int) -> np.ndarray:
    """Real MiniLM vectors: those the corpus runs cached, else the corpora embedded now."""
    cached = sorted(RESULTS.glob("cache-*-vectors.npy"))
    if cached:
        vecs = np.concatenate([np.load(p) for p in cached]).astype(np.float32)
        console.print(f"{len(vecs)} real vectors from {', '.join(p.name for p in cached)}")
        return vecs[:limit]
    from ingest.embed import Embedder

    shared = REPO.parent / "shared" / "data" / "corpora"
    texts: list[str] = []
    for path in sorted(shared.rglob("*.md")):
        words = path.read_text(encoding="utf-8", errors="replace").split()
        for i in range(0, len(words), 120):
            texts.append(" ".join(words[i : i + 160]))
    texts = texts[:limit]
    console.print(
        f"embedding {len(texts)} real passages for the ANN benchmark (cached afterwards)…"
    )
    vecs = Embedder(batch_size=64).encode(texts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(RESULTS / "cache-passages-vectors.npy", vecs)
    return vecs


def grow(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors: the real ones, then perturbed copies (noise ~ real neighbour spread)."""
    if n <= len(base):
        return base[:n]
    out = [base]
    left = n - len(base)
    while left > 0:
        take = base[rng.integers(0, len(base), size=min(left, 200_000))]
        noisy = take + rng.normal(0, 0.035, size=take.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        out.append(noisy.astype(np.float32))
        left -= len(take)
    return np.concatenate(out)


def bench_ann(args: argparse.Namespace) -> None:
    import faiss

    from ingest.search import hnsw_ef_search
    from ingest.store import build_faiss

    faiss.omp_set_num_threads(cpu_count())
    rng = np.random.default_rng(0)
    base = real_vectors(args.real)
    n_queries = 200
    q_idx = rng.choice(len(base), size=n_queries, replace=False)
    queries = base[q_idx] + rng.normal(0, 0.02, size=(n_queries, base.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    table = Table(
        title=f"ANN: HNSW (M=32, efSearch by size) vs exact Flat, {len(base)} real MiniLM vectors"
    )
    for col in (
        "chunks",
        "real",
        "flat p50 ms",
        "flat p99 ms",
        "hnsw p50 ms",
        "hnsw p99 ms",
        "recall@10",
        "hnsw build s",
        "flat MB",
        "hnsw MB",
    ):
        table.add_column(col, justify="right")
    rows = []
    for n in args.sizes:
        vecs = grow(base, n, rng)
        timings = {}
        results = {}
        sizes = {}
        sweep = []
        for kind in ("flat", "hnsw"):
            t = time.perf_counter()
            index = build_faiss(vecs, kind)
            build_s = time.perf_counter() - t
            efs = (
                [None]
                if kind == "flat"
                else [hnsw_ef_search(n), *[e for e in args.ef if e != hnsw_ef_search(n)]]
            )
            for ef in efs:
                if ef is not None:
                    index.hnsw.efSearch = ef
                lat = []
                found = []
                for q in queries:
                    t = time.perf_counter()
                    _, ids = index.search(q.reshape(1, -1), 10)
                    lat.append((time.perf_counter() - t) * 1000)
                    found.append(ids[0])
                if ef is None or ef == hnsw_ef_search(n):
                    timings[kind] = (pct(lat, 50), pct(lat, 99), build_s)
                    results[kind] = found
                if ef is not None:
                    rec = float(
                        np.mean([len(set(f) & set(h)) / 10 for f, h in zip(results["flat"], found)])
                    )
                    sweep.append(
                        {
                            "ef_search": ef,
                            "recall_at_10": round(rec, 4),
                            "ms_p50": round(pct(lat, 50), 3),
                            "ms_p99": round(pct(lat, 99), 3),
                        }
                    )
            sizes[kind] = faiss.serialize_index(index).nbytes / 2**20
            del index
        console.print(f"{n} chunks: efSearch sweep {sweep}")
        recall = float(
            np.mean([len(set(f) & set(h)) / 10 for f, h in zip(results["flat"], results["hnsw"])])
        )
        row = {
            "chunks": n,
            "real_vectors": min(n, len(base)),
            "flat_ms_p50": round(timings["flat"][0], 3),
            "flat_ms_p99": round(timings["flat"][1], 3),
            "hnsw_ms_p50": round(timings["hnsw"][0], 3),
            "hnsw_ms_p99": round(timings["hnsw"][1], 3),
            "recall_at_10": round(recall, 4),
            "hnsw_build_s": round(timings["hnsw"][2], 1),
            "flat_mb": round(sizes["flat"], 1),
            "hnsw_mb": round(sizes["hnsw"], 1),
            "bytes_per_chunk_flat": round(sizes["flat"] * 2**20 / n),
            "bytes_per_chunk_hnsw": round(sizes["hnsw"] * 2**20 / n),
            "ef_search": hnsw_ef_search(n),
            "ef_sweep": sweep,
        }
        rows.append(row)
        table.add_row(
            str(n),
            str(row["real_vectors"]),
            str(row["flat_ms_p50"]),
            str(row["flat_ms_p99"]),
            str(row["hnsw_ms_p50"]),
            str(row["hnsw_ms_p99"]),
            str(row["recall_at_10"]),
            str(row["hnsw_build_s"]),
            str(row["flat_mb"]),
            str(row["hnsw_mb"]),
        )
        console.print(table)
    # keep the rows of other sizes measured by earlier runs
    previous = RESULTS / "ingest-ann.json"
    if previous.is_file():
        sizes = {r["chunks"] for r in rows}
        old = json.loads(previous.read_text()).get("rows", [])
        rows = sorted(
            [r for r in old if r["chunks"] not in sizes] + rows, key=lambda r: r["chunks"]
        )
    save("ingest-ann", {"rows": rows, "real_vectors": len(base), "queries": n_queries})


XQUAD = REPO.parent / "shared" / "data" / "qa" / "xquad-en" / "xquad.en.json"
if not XQUAD.is_file():  # a worktree under /work/wt/NAME
    XQUAD = REPO.parents[1] / "shared" / "data" / "qa" / "xquad-en" / "xquad.en.json"


def float32_graph(vectors: np.ndarray):
    """The HNSW index lorebot wrote before float16 codes (float32 vectors inside it)."""
    import faiss

    from ingest.search import hnsw_ef_search

    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = hnsw_ef_search(len(vectors))
    for start in range(0, len(vectors), 50_000):
        index.add(np.ascontiguousarray(vectors[start : start + 50_000]))
    return index


def int8_graph(path: Path):
    """For comparison only: an HNSW graph over int8 codes (trained on a sample of rows)."""
    import faiss

    from ingest import store
    from ingest.search import hnsw_ef_search

    vectors = np.load(path, mmap_mode="r")
    n, dim = vectors.shape
    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = hnsw_ef_search(n)
    index.train(np.ascontiguousarray(vectors[:: max(1, n // 50_000)]))
    for start in range(0, n, store.HNSW_ADD_ROWS):
        index.add(np.ascontiguousarray(vectors[start : start + store.HNSW_ADD_ROWS]))
    return index


def recall(ranked: list[list[int]], gold: list[set[int]]) -> dict:
    """recall@1 and @5: the share of questions with a gold row among the first 1 / 5."""
    n = max(1, len(gold))
    return {
        f"recall@{k}": round(sum(bool(set(r[:k]) & g) for r, g in zip(ranked, gold)) / n, 4)
        for k in (1, 5)
    }


def latency(search, qvecs: np.ndarray, limit: int = 300) -> tuple[float, float]:
    """p50 and p99 in ms of ``search(qvec)``, one query at a time."""
    lat = []
    for q in qvecs[:limit]:
        t = time.perf_counter()
        search(q)
        lat.append((time.perf_counter() - t) * 1000)
    return round(pct(lat, 50), 3), round(pct(lat, 99), 3)


def dense_at_scale(
    chunk_vecs: np.ndarray,
    qvecs: np.ndarray,
    gold: list[set[int]],
    n: int,
    work: Path,
    base: np.ndarray,
    int8: bool = False,
) -> list[dict]:
    """Dense recall of the gold rows (the first rows) among ``n`` vectors: exact, the
    float32 graph, the float16 graph as ingest writes it and a reader loads it."""
    import faiss

    from ingest import store
    from ingest.spool import NpyWriter

    rng = np.random.default_rng(1)
    fill = grow(base, max(0, n - len(chunk_vecs)), rng) if n > len(chunk_vecs) else base[:0]
    vdir = work / f"dense-{n}"
    vdir.mkdir(parents=True, exist_ok=True)
    writer = NpyWriter(
        vdir / store.EMBEDDINGS, (len(chunk_vecs) + len(fill), chunk_vecs.shape[1]), np.float32
    )
    writer.append(chunk_vecs)
    for start in range(0, len(fill), 50_000):
        writer.append(fill[start : start + 50_000])
    writer.close()
    total = len(chunk_vecs) + len(fill)
    del fill
    k = 24  # the serving search's dense pool: candidates 20 + k 4
    rows = []
    exact_top: list[list[int]] = []
    kinds = ["flat (exact)", "hnsw float32 (before)", "hnsw float16 + re-score (after)"]
    if int8:
        kinds.append("hnsw int8 + re-score (not used)")
    for kind in kinds:
        (vdir / store.FAISS_FILE).unlink(missing_ok=True)  # a reader may still map the old one
        t = time.perf_counter()
        if kind.startswith("flat"):
            store.write_faiss(vdir, "flat")
        elif "float32" in kind:
            faiss.write_index(
                float32_graph(np.load(vdir / store.EMBEDDINGS, mmap_mode="r")),
                str(vdir / store.FAISS_FILE),
            )
        elif "int8" in kind:
            faiss.write_index(int8_graph(vdir / store.EMBEDDINGS), str(vdir / store.FAISS_FILE))
        else:
            store.write_faiss(vdir, "hnsw")
        index = store.load_dense(vdir)
        build_s = time.perf_counter() - t
        variants = [(kind, index)]
        if isinstance(index, store.RescoredIndex) and "float16" in kind:
            variants.append(("hnsw float16, graph scores only", index.index))
        for name, ix in variants:
            ranked = [
                [int(i) for i in ix.search(q.reshape(1, -1), k)[1][0] if i >= 0] for q in qvecs
            ]
            if not exact_top:
                exact_top = ranked
            p50, p99 = latency(lambda q, ix=ix: ix.search(q.reshape(1, -1), k), qvecs)
            same5 = [len(set(a[:5]) & set(b[:5])) / 5 for a, b in zip(ranked, exact_top)]
            rows.append(
                {
                    "chunks": total,
                    "index": name,
                    **recall(ranked, gold),
                    "same_top5_as_exact": round(float(np.mean(same5)), 4),
                    "ms_p50": p50,
                    "ms_p99": p99,
                    "build_s": round(build_s, 1),
                    "file_mb": round((vdir / store.FAISS_FILE).stat().st_size / 2**20, 1),
                }
            )
            console.print(rows[-1])
        del index, variants, ix
    shutil.rmtree(vdir, ignore_errors=True)
    return rows


def bench_ann_xquad(args: argparse.Namespace) -> None:
    import faiss

    from ingest import store
    from ingest.embed import Embedder
    from slm.evals.evalset import prepare_eval

    if not XQUAD.is_file():
        raise SystemExit(f"error: {XQUAD} not found (fix: run beside ../shared/data)")
    faiss.omp_set_num_threads(cpu_count())
    load_before = [round(v, 2) for v in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="lorebot-ann-"))
    # The int8 graph is exported once into a cache kept between runs (as build_memory's).
    cache = os.environ.get("LOREBOT_MODEL_CACHE_DIR")
    models = Path(cache) if cache else Path(tempfile.gettempdir()) / "lorebot-bm" / "models"
    settings = Settings(data_dir=work / "data", model_cache_dir=models)
    embedder = Embedder.from_settings(settings)
    embedder.encode(["warm up"])
    eval_set = prepare_eval(
        settings, XQUAD, limit=args.xquad, seed=0, abstain=0, embedder=embedder, progress=False
    )
    try:
        reader = eval_set.retriever
        vdir, n = reader.path, reader.n
        recs = reader.db.execute("SELECT * FROM chunks ORDER BY row").fetchall()
        chunks = [store._to_chunk(r) for r in recs]
        items = eval_set.questions
        gold = [{row for row, c in enumerate(chunks) if eval_set.relevant(it, c)} for it in items]
        qvecs = np.stack([reader.query_vector(it.question) for it in items])
        console.print(f"{len(items)} XQuAD-en questions, {len(chunks)} chunks of its passages")
        cand, top_k = settings.retrieval.candidates, 5
        manifest = json.loads((vdir / store.MANIFEST).read_text())
        hybrid = []
        for kind in ("flat (exact)", "hnsw float32 (before)", "hnsw float16 + re-score (after)"):
            if kind.startswith("hnsw"):
                # Unlinked, not overwritten: the readers opened so far map the old file.
                (vdir / store.FAISS_FILE).unlink()
                if "float32" in kind:
                    faiss.write_index(
                        float32_graph(np.load(vdir / store.EMBEDDINGS)),
                        str(vdir / store.FAISS_FILE),
                    )
                else:
                    store.write_faiss(vdir, "hnsw")
                manifest["index_type"] = "hnsw"
                (vdir / store.MANIFEST).write_text(json.dumps(manifest))
            r = store.IndexReader(reader.settings, vdir, embedder=embedder)
            ranges = [(0, r.n)]

            def serve(q: np.ndarray, text: str, r=r, ranges=ranges) -> list:
                return r.searcher.search(text, q, ranges, top_k, cand, r._fetch)

            ranked = [[h.row for h in serve(q, it.question)] for q, it in zip(qvecs, items)]
            lat = []
            for q, it in list(zip(qvecs, items))[:300]:
                t = time.perf_counter()
                serve(q, it.question)
                lat.append((time.perf_counter() - t) * 1000)
            hybrid.append(
                {
                    "chunks": r.n,
                    "index": kind,
                    "loaded_as": type(r.index).__name__,
                    **recall(ranked, gold),
                    "ms_p50": round(pct(lat, 50), 3),
                    "ms_p99": round(pct(lat, 99), 3),
                }
            )
            console.print(hybrid[-1])
            r.close()
        chunk_vecs = np.load(vdir / store.EMBEDDINGS)
        base = real_vectors(args.real)
        dense = []
        for size in args.sizes:
            dense += dense_at_scale(chunk_vecs, qvecs, gold, size, work, base, args.int8)
    finally:
        eval_set.close()
        shutil.rmtree(work, ignore_errors=True)
    for title, rows in (
        (f"XQuAD-en, serving (hybrid) search, {n} chunks", hybrid),
        ("XQuAD-en, dense search alone, among handbook vectors", dense),
    ):
        table = Table(title=title)
        cols = [c for c in rows[0] if c != "loaded_as"] if rows else []
        for col in cols:
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(*(str(row[c]) for c in cols))
        console.print(table)
    load_after = [round(v, 2) for v in os.getloadavg()]
    console.print(f"load average before {load_before}, after {load_after}")
    save(
        "ingest-ann-xquad",
        {
            "questions": len(items),
            "hybrid": hybrid,
            "dense": dense,
            "load_before": load_before,
            "load_after": load_after,
        },
    )


# ------------------------------------------------------------------------------ embed
def bench_embed(args: argparse.Namespace) -> None:
    from ingest.embed import Embedder

    shared = REPO.parent / "shared" / "data" / "corpora" / "18f-handbook" / "pages"
    texts: list[str] = []
    for path in sorted(shared.rglob("*.md")):
        words = path.read_text(encoding="utf-8", errors="replace").split()
        texts += [" ".join(words[i : i + 150]) for i in range(0, len(words), 150)]
    texts = texts[: args.n]
    emb = Embedder(batch_size=64)
    emb.encode(texts[:8])
    t = time.perf_counter()
    emb.encode(texts)
    s = time.perf_counter() - t
    data = {
        "texts": len(texts),
        "seconds": round(s, 2),
        "chunks_per_s": round(len(texts) / s, 1),
        "threads": emb.threads,
    }
    console.print(data)
    save("ingest-embed", data)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("path")
    c.add_argument("--name")
    c.add_argument("--queries", type=int, default=200)
    c.add_argument("--quiet", action="store_true")
    c.add_argument(
        "--baseline",
        action="store_true",
        help="after the build, embed the same chunks with plain sentence-transformers "
        "(batch 64) and print the full build's time over that embedding time",
    )
    m = sub.add_parser("messy")
    m.add_argument("path")
    m.add_argument("--timeout", type=float, default=180)
    m.add_argument("--quiet", action="store_true")
    a = sub.add_parser("ann")
    a.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    a.add_argument("--real", type=int, default=20_000, help="real vectors to embed at most")
    a.add_argument(
        "--ef", type=int, nargs="*", default=[32, 64, 128, 256], help="efSearch values to sweep"
    )
    a.add_argument(
        "--xquad",
        type=int,
        default=0,
        metavar="N",
        help="instead: XQuAD-en recall@1/@5 of N questions, flat vs float32 vs float16 graph",
    )
    a.add_argument(
        "--int8", action="store_true", help="with --xquad: an int8 graph too, for comparison"
    )
    e = sub.add_parser("embed")
    e.add_argument("--n", type=int, default=512)
    args = p.parse_args()
    if args.cmd == "ann" and args.xquad:
        if args.xquad < 1 or any(size < 1 for size in args.sizes):
            raise SystemExit("error: --xquad and --sizes must be positive (fix: e.g. --xquad 200)")
        bench_ann_xquad(args)
        return
    {"corpus": bench_corpus, "messy": bench_messy, "ann": bench_ann, "embed": bench_embed}[
        args.cmd
    ](args)


if __name__ == "__main__":
    main()
