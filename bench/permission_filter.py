"""What answering as the asker costs per question: the permission filter at 100k chunks.

One synthetic index version of ``--chunks`` rows (random unit vectors in a flat FAISS
index, as lorebot builds up to 100k chunks, and a BM25 index over generated text), with
10 chunks a document. Half the documents belong to an answer-as-the-asker source, with
the ACL mix a company would have: 40 % shared with a group (``--groups`` groups of 30),
40 % with three people, 10 % with the domain, 10 % Confluence-style (space viewers and a
page restriction). ``--users`` askers ask ``--questions`` questions in turn.

Each question is searched in the same run, alternating, with no filter (the baseline)
and as its asker (the mask from :class:`ingest.permissions.PermissionIndex`, then the
same hybrid search with it), ``--repeat`` times each, keeping each mode's best (the
machine is shared). The filter's cost per question is the difference; its own work (the
cold mask, its intersection with the collections, the FAISS bitmap selector, the masked
BM25 scores) is also timed alone. The mask is measured cold (first question of an asker:
principals and ACLs evaluated) and warm (cached per asker and index version).

    PYTHONPATH=$PWD .venv/bin/python bench/permission_filter.py            # 100k chunks
    PYTHONPATH=$PWD .venv/bin/python bench/permission_filter.py --chunks 20000 --questions 100
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ingest.permissions import PermissionIndex  # noqa: E402
from ingest.search import HybridSearch  # noqa: E402
from ingest.store import BM25_DIR, bm25_tokenize, build_faiss, choose_index_type  # noqa: E402,F401
from lorebot.types import Chunk  # noqa: E402

CHUNKS_PER_DOC = 10
ROOT = "/data/connectors/drive/docs"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def build(n: int, seed: int) -> tuple[HybridSearch, list[str]]:
    import bm25s

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 384), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index_type = choose_index_type(n)
    index = build_faiss(vecs, index_type)
    vocab = [f"w{i}" for i in range(8000)]
    words = rng.integers(0, len(vocab), size=(n, 40))
    texts = [" ".join(vocab[j] for j in row) for row in words]
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    return HybridSearch(index, bm25, n, index_type), texts


def acl_mix(n: int, users: list[str], groups: int, seed: int):
    rnd = random.Random(seed)
    docs = n // CHUNKS_PER_DOC
    files, acls = [], {}
    for d in range(docs):
        path = f"{ROOT}/hr/doc{d}.md" if d % 2 == 0 else f"/data/folders/general/doc{d}.md"
        files.append((path, (d * CHUNKS_PER_DOC, (d + 1) * CHUNKS_PER_DOC)))
        if d % 2:
            continue
        r = rnd.random()
        if r < 0.4:
            acl = [[f"group:g{rnd.randrange(groups)}"]]
        elif r < 0.8:
            acl = [sorted(f"user:{u}" for u in rnd.sample(users, 3))]
        elif r < 0.9:
            acl = [["domain:example.com"]]
        else:
            acl = [[f"group:g{rnd.randrange(groups)}"], [f"user:{rnd.choice(users)}"]]
        acls[f"hr/doc{d}.md"] = acl
    members = {f"g{g}": rnd.sample(users, 30) for g in range(groups)}
    store = {"docs": acls, "groups": members, "synced_at": time.time()}
    return files, store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="searches per question and mode")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="FAISS OpenMP threads (0 = its default; on a loaded machine its spinning "
        "threads make the unfiltered search several times slower, which hides the cost)",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    searcher, texts = build(args.chunks, args.seed)
    built_s = time.perf_counter() - t0
    users = [f"u{i}@example.com" for i in range(args.users)]
    files, store = acl_mix(args.chunks, users, args.groups, args.seed)
    t0 = time.perf_counter()
    perms = PermissionIndex(args.chunks, files, {"drive": (Path(ROOT), store, True)})
    compile_ms = (time.perf_counter() - t0) * 1000

    def fetch(rows: list[int]) -> dict[int, tuple[Chunk, str]]:
        return {
            r: (
                Chunk(chunk_id=str(r), text=texts[r], title="t", source="s", collection="c"),
                str(r),
            )  # fmt: skip
            for r in rows
        }

    rng = np.random.default_rng(args.seed + 1)
    rnd = random.Random(args.seed + 1)
    ranges = [(0, args.chunks)]
    base_ms, filt_ms, cold_ms, warm_ms, own_ms = [], [], [], [], []
    leaks = 0
    askers = [rnd.choice(users) for _ in range(args.questions)]

    def plain(q: str, qvec: np.ndarray) -> float:
        t = time.perf_counter()
        searcher.search(q, qvec, ranges, args.k, args.candidates, fetch)
        return (time.perf_counter() - t) * 1000

    def filtered(q: str, qvec: np.ndarray, email: str) -> tuple[float, int]:
        t = time.perf_counter()
        mask = perms.mask(email)
        hits = searcher.search(q, qvec, ranges, args.k, args.candidates, fetch, mask)
        took = (time.perf_counter() - t) * 1000
        return took, sum(not mask[h.row] for h in hits)

    def own_work(email: str, scores: np.ndarray) -> float:
        """The operations the filter adds to a search, alone: the asker's mask, its
        intersection with the collections' ranges, the FAISS bitmap selector, the BM25
        scores masked."""
        import faiss

        from ingest.search import ranges_to_mask

        t = time.perf_counter()
        mask = perms.mask(email)
        allowed = mask & ranges_to_mask(args.chunks, ranges).astype(bool)
        np.count_nonzero(allowed)
        bits = np.packbits(allowed, bitorder="little")
        faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        np.where(allowed, scores, np.float32(0.0))
        return (time.perf_counter() - t) * 1000

    scores = np.random.default_rng(0).random(args.chunks, dtype=np.float32)
    for i in range(args.questions):
        q = " ".join(texts[rnd.randrange(args.chunks)].split()[:6])
        qvec = rng.standard_normal(384).astype(np.float32)
        qvec /= np.linalg.norm(qvec)
        email = askers[i]
        # Best of --repeat, alternating, per question: the machine's load is noise.
        bs, fs = [], []
        for r in range(args.repeat):
            if (i + r) % 2:
                bs.append(plain(q, qvec))
                took, bad = filtered(q, qvec, email)
            else:
                took, bad = filtered(q, qvec, email)
                bs.append(plain(q, qvec))
            fs.append(took)
            leaks += bad
        base_ms.append(min(bs))
        filt_ms.append(min(fs))
        perms._masks.clear()
        t = time.perf_counter()
        perms.mask(email)
        cold_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        perms.mask(email)
        warm_ms.append((time.perf_counter() - t) * 1000)
        perms._masks.clear()
        own_ms.append(own_work(email, scores))
    cost = [f - b for f, b in zip(filt_ms, base_ms)]
    out = {
        "chunks": args.chunks,
        "documents": len(files),
        "restricted_rows": perms.restricted_rows,
        "distinct_acls": perms.n_acls,
        "users": args.users,
        "groups": args.groups,
        "questions": args.questions,
        "index_type": searcher.index_type,
        "build_s": round(built_s, 1),
        "compile_ms": round(compile_ms, 1),
        "search_no_filter_ms": {"p50": pct(base_ms, 50), "p95": pct(base_ms, 95)},
        "search_filtered_ms": {"p50": pct(filt_ms, 50), "p95": pct(filt_ms, 95)},
        "filter_cost_ms": {
            "p50": pct(cost, 50),
            "p95": pct(cost, 95),
            "mean": statistics.fmean(cost),
        },  # fmt: skip
        "filter_own_work_ms": {"p50": pct(own_ms, 50), "p95": pct(own_ms, 95)},
        "mask_cold_ms": {"p50": pct(cold_ms, 50), "p95": pct(cold_ms, 95)},
        "mask_warm_ms": {"p50": pct(warm_ms, 50), "p95": pct(warm_ms, 95)},
        "hits_outside_mask": leaks,
    }
    out = json.loads(json.dumps(out, default=float), parse_float=lambda x: round(float(x), 3))
    print(
        f"permission filter at {args.chunks} chunks ({out['index_type']} index), "
        f"{args.questions} questions, {args.users} askers, {perms.n_acls} distinct ACLs"
    )
    print(f"{'':24}{'p50 ms':>10}{'p95 ms':>10}")
    for label, key in (
        ("search, no filter", "search_no_filter_ms"),
        ("search as the asker", "search_filtered_ms"),
        ("filter cost (paired)", "filter_cost_ms"),
        ("filter's own work", "filter_own_work_ms"),
        ("mask, first question", "mask_cold_ms"),
        ("mask, cached", "mask_warm_ms"),
    ):
        print(f"{label:24}{out[key]['p50']:>10.3f}{out[key]['p95']:>10.3f}")
    print(f"compile {out['compile_ms']} ms; hits outside the asker's mask: {leaks}")
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; faiss threads "
          f"{args.threads or 'default'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
