"""Is the right page found first? Retrieval alone (no model) for the staff questions.

    python bench/retrieval_staff.py --index-dir DIR                     # tune half
    python bench/retrieval_staff.py --index-dir DIR --candidates 10 20 40 --fusion rrf score
    python bench/retrieval_staff.py --index-dir DIR --xquad 200         # and XQuAD-en recall
    python bench/retrieval_staff.py --index-dir DIR --split test        # report once, at the end
    python bench/retrieval_staff.py --set sample                        # the sample handbook

``DIR`` is a lorebot data dir holding an index of both handbooks, e.g. the one
``bench/answer_quality.py --set staff --index-dir DIR`` builds; it is only read. Each
question of tests/fixtures/staff_questions.json (``--split``) goes through the serving
search (``IndexReader.search``: the dense and keyword candidates, ordered by
ingest.rank) once per fusion × candidates, and the bench reports how often the gold page
is the first hit's page (doc@1), among the ``retrieval.top_k`` hits the model reads
(doc@k), and the mean reciprocal rank of the gold page among the distinct pages of the
first 20 hits. ``--xquad N`` also builds a temporary index of XQuAD-en's passages, as
``lorebot eval --limit N`` does, and reports the gold passage's recall@1 and @5 for the
same variants (the eval's own measure). ``--misses`` prints, for the last variant, each
question whose page is not first: the gold page's best rank by cosine, by best sentence
and by BM25 alone, and what came first. Writes bench/results/retrieval-staff-<split>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    SAMPLE_QA,
    XQUAD,
    build_sample_index,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    save,
)
from rich.table import Table

from lorebot.settings import Settings, cpu_count

STAFF_QA = REPO / "tests" / "fixtures" / "staff_questions.json"
if not XQUAD.is_file():  # a worktree beside the main checkout
    XQUAD = REPO.parent.parent / "shared" / "data" / "qa" / "xquad-en" / "xquad.en.json"
MRR_DEPTH = 20


def _doc(chunk) -> str:
    return f"{chunk.collection}::{chunk.source}"


def _gold(item: dict) -> str:
    return f"{item['corpus']}::{item['document']}"


def _questions(which: str, split: str) -> list[dict]:
    """Answerable items with ``corpus`` (the collection) and ``document`` (its source)."""
    if which == "sample":
        qa = json.loads(SAMPLE_QA.read_text(encoding="utf-8"))
        return [{**q, "corpus": "handbook", "document": q["source"]} for q in qa["answerable"]]
    qa = json.loads(STAFF_QA.read_text(encoding="utf-8"))
    return [q for q in qa["answerable"] if split == "all" or q["split"] == split]


def use(index, retrieval) -> None:
    """Order ``index``'s candidates as ``retrieval`` says (a bench swaps it per variant)."""
    from ingest.rank import Ranker

    index.searcher.ranker = Ranker.from_settings(retrieval, index._sentences)


def staff_scores(index, items: list[dict], top_k: int, candidates: int) -> dict:
    """doc@1, doc@top_k, MRR of the gold page, and each question's rank (None: not found)."""
    at1 = atk = 0
    rr = 0.0
    ranks: list[int | None] = []
    for item in items:
        gold = _gold(item)
        read = index.search(item["question"], k=top_k, candidates=candidates)
        at1 += bool(read) and _doc(read[0].chunk) == gold
        atk += any(_doc(h.chunk) == gold for h in read)
        deep = index.search(item["question"], k=MRR_DEPTH, candidates=candidates)
        docs = list(dict.fromkeys(_doc(h.chunk) for h in deep))
        rank = docs.index(gold) + 1 if gold in docs else None
        rr += 1.0 / rank if rank else 0.0
        ranks.append(rank)
    n = max(1, len(items))
    return {"doc@1": at1, f"doc@{top_k}": atk, "mrr": round(rr / n, 3), "n": len(items),
            "ranks": ranks}  # fmt: skip


def xquad_recall(eval_set, candidates: int) -> dict:
    """recall@1 and @5 of the gold passage, searched as `lorebot eval` does."""
    from slm.evals import metrics

    found = {1: 0, 5: 0}
    for item in eval_set.questions:
        hits = eval_set.retriever.search(item.question, k=5, candidates=candidates)
        rank = metrics.first_relevant_rank([eval_set.relevant(item, h.chunk) for h in hits])
        for k in found:
            found[k] += rank is not None and rank <= k
    n = max(1, len(eval_set.questions))
    return {f"recall@{k}": round(v / n, 3) for k, v in found.items()}


def misses(index, items: list[dict], top_k: int, candidates: int) -> None:
    """Where each question's gold page stands in each signal alone, and what came first."""
    from ingest.rank import best_sentence_cosines

    rows = index.db.execute("SELECT row, collection, source FROM chunks ORDER BY row").fetchall()
    docs = np.array([f"{r['collection']}::{r['source']}" for r in rows])
    vectors = index.index.reconstruct_n(0, index.n)
    everything = [(0, index.n)]
    for item in items:
        gold = _gold(item)
        hits = index.search(item["question"], k=top_k, candidates=candidates)
        if hits and _doc(hits[0].chunk) == gold:
            continue
        qvec = index.query_vector(item["question"])
        cos = vectors @ qvec
        kw = index.searcher.keyword_scores(item["question"], everything)
        sent = best_sentence_cosines(range(index.n), qvec, index._sentences)

        def page_rank(scores, gold=gold):
            if scores is None:
                return "-"
            order = docs[np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")]
            return list(dict.fromkeys(order.tolist())).index(gold) + 1

        first = _doc(hits[0].chunk).split("::", 1)[1] if hits else "-"
        console.print(
            f"{item.get('id') or item['question']}: page rank by cosine {page_rank(cos)}, "
            f"by best sentence {page_rank(sent)}, by BM25 {page_rank(kw)}; first: {first}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("staff", "sample"), default="staff")
    ap.add_argument("--index-dir", type=Path, default=None, help="data dir of the staff index")
    ap.add_argument("--split", choices=("tune", "test", "all"), default="tune")
    ap.add_argument("--candidates", nargs="+", type=int, default=None)
    ap.add_argument("--fusion", nargs="+", choices=("rrf", "score"), default=["rrf", "score"])
    ap.add_argument("--xquad", type=int, default=0, metavar="N", help="XQuAD-en questions too")
    ap.add_argument("--misses", action="store_true", help="explain the last variant's misses")
    ap.add_argument("--threads", type=int, default=min(2, cpu_count()))
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    import tempfile

    from ingest import open_index
    from ingest.embed import Embedder
    from lorebot.errors import LorebotError

    if args.set == "staff" and args.index_dir is None:
        console.print("error: --set staff needs --index-dir (fix: a data dir with both handbooks)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="lorebot-bench-rank-"))
    if args.set == "sample":
        settings, index = build_sample_index(tmp, threads=args.threads)
        embedder = index._embedder
    else:
        settings = Settings(data_dir=args.index_dir)
        embedder = Embedder(
            settings.index.embedding_model, threads=args.threads, onnx_dir=settings.models_dir
        )
        try:
            index = open_index(settings, embedder=embedder)
        except LorebotError as exc:
            console.print(f"error: {exc.one_line()}")
            return 2
    items = _questions(args.set, args.split)
    top_k = settings.retrieval.top_k
    candidates = args.candidates or [settings.retrieval.candidates]

    eval_set = None
    if args.xquad:
        if not XQUAD.is_file():
            console.print(f"error: {XQUAD} not found (fix: run next to ../shared/data)")
            return 2
        from slm.evals.evalset import prepare_eval

        eval_set = prepare_eval(
            Settings(), XQUAD, limit=args.xquad, seed=0, embedder=embedder, progress=False
        )
    rows = []
    try:
        for fusion in args.fusion:
            retrieval = settings.retrieval.model_copy(update={"fusion": fusion})
            use(index, retrieval)
            if eval_set is not None:
                use(eval_set.retriever, retrieval)
            for cand in candidates:
                t0 = time.perf_counter()
                row = {
                    "fusion": fusion,
                    "candidates": cand,
                    **staff_scores(index, items, top_k, cand),
                }
                row["ms_per_search"] = round(
                    (time.perf_counter() - t0) * 1000 / (2 * len(items)), 1
                )
                if eval_set is not None:
                    row["xquad"] = xquad_recall(eval_set, cand)
                rows.append(row)
        if args.misses:
            misses(index, items, top_k, candidates[-1])
    finally:
        if eval_set is not None:
            eval_set.close()
        index.close()
        shutil.rmtree(tmp, ignore_errors=True)

    half = f"{args.split} half" if args.set == "staff" else "answerable"
    table = Table(title=f"{args.set} questions, {half}: the gold page ({len(items)} questions)")
    for col in ("fusion", "candidates", "doc@1", f"doc@{top_k}", "MRR", "XQuAD r@1 / r@5", "ms"):
        table.add_column(col)
    for r in rows:
        x = r.get("xquad")
        table.add_row(
            r["fusion"],
            str(r["candidates"]),
            f"{r['doc@1']}/{r['n']}",
            f"{r[f'doc@{top_k}']}/{r['n']}",
            f"{r['mrr']:.3f}",
            f"{x['recall@1']:.3f} / {x['recall@5']:.3f}" if x else "-",
            f"{r['ms_per_search']:.0f}",
        )
    console.print(table)
    load = loadavg()
    console.print(f"load average before {started_load}, after {load}")
    ranking = {k: getattr(settings.retrieval, k) for k in ("dense_weight", "sentence_weight")}
    save(
        f"retrieval-staff-{args.split}" if args.set == "staff" else "retrieval-sample",
        {
            "set": args.set,
            "split": args.split,
            "index_dir": str(args.index_dir),
            "ranking": ranking,
            "rows": rows,
        },  # fmt: skip
        started_load=started_load,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
