"""Does the answer state the fact? The sample handbook's and the staff questions, answered
by the generating path (the baseline) and the reader, in one run.

    python bench/answer_quality.py                           # sample handbook, 27 + 8 questions
    python bench/answer_quality.py --set staff --split test  # staff questions, test half
    python bench/answer_quality.py --set staff --split tune --index-dir /tmp/staff-index
    python bench/answer_quality.py --adapter data/adapters/versions/<v>/adapter.gguf
    python bench/answer_quality.py --neighbours 0 1          # without / with the neighbours
    python bench/answer_quality.py --modes read --readers main current  # main's reader beside

``--set sample`` builds a temporary index of the packaged sample handbook and asks
tests/fixtures/sample_qa.json; ``--set staff`` indexes the two real handbooks of
../shared/data/corpora (kept in ``--index-dir`` when given, so the halves reuse one index)
and asks tests/fixtures/staff_questions.json (``--split tune`` to tune on, ``test`` to
report). Every question goes through slm.serving.answer.answer_question (the worker's
function) with the real model, once per ``--modes`` (``model.answer_mode``; the first is
the baseline). Reports, per mode: the right document cited first, a key fact in the answer
text, a key fact in the short answer, yes/no questions answered with the right word first,
answerable questions wrongly refused, unanswerable ones correctly refused, and the p50
latency of the whole answer and of its first streamed token. Writes
bench/results/answer-quality[-staff-<split>].json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    SAMPLE_QA,
    build_sample_index,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    save,
)
from rich.markup import escape
from rich.table import Table

from lorebot import assets
from lorebot.settings import Settings, cpu_count
from lorebot.types import Question

STAFF_QA = REPO / "tests" / "fixtures" / "staff_questions.json"
CORPORA = REPO.parent.parent / "shared" / "data" / "corpora"
if not CORPORA.is_dir():  # a worktree beside the main checkout
    CORPORA = REPO.parent / "shared" / "data" / "corpora"


def staff_index(index_dir: Path, *, threads: int, corpora: tuple[str, ...]):
    """The handbooks' index in ``index_dir``, built there the first time."""
    from ingest import Source, build_index, open_index
    from ingest.embed import Embedder

    settings = Settings(data_dir=index_dir)
    embedder = Embedder(
        settings.index.embedding_model, threads=threads, onnx_dir=settings.models_dir
    )
    marker = index_dir / "built"
    if not marker.exists():
        t0 = time.perf_counter()
        build_index(
            settings,
            [Source(path=CORPORA / name, collection=name) for name in corpora],
            progress=False,
            embedder=embedder,
        )
        marker.write_text("ok", encoding="utf-8")
        console.print(f"staff index built in {time.perf_counter() - t0:.0f} s")
    index = open_index(settings, embedder=embedder)
    index.search("warm up the query embedder", k=1)
    return settings, index


STAFF_CORPORA = ("18f-handbook", "sourcegraph-handbook")

#: ``--readers main``: the read mode as main served it before the staff-half fix of issue 15
#: (the re-ranking with no top-document margin, abstention at 0.81 on its score, rrf), so
#: the fix and main's reader are measured side by side in one run.
MAIN_READER = {
    "weights": {
        "first": 1.0,
        "cosine": 0.0,
        "lexical": -0.25,
        "rare": 0.0,
        "answer_type": 0.05,
        "intro": 0.0,
        "neighbour": -0.15,
        "rank": 0.1,
        "top_doc": 0.0,
    },
    "retrieval": {"min_confidence": 0.81, "fusion": "rrf"},
}


def use_ranking(index, retrieval) -> None:
    """Order ``index``'s candidates as ``retrieval`` says (its fusion): the ranker is
    fixed when an index is opened, so a variant swaps it."""
    from ingest.rank import Ranker

    index.searcher.ranker = Ranker.from_settings(retrieval, index._sentences)


_YES_NO_FIRST = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def _questions(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(answerable, unanswerable) items, each with ``document`` and ``key_facts``."""
    if args.set == "sample":
        qa = json.loads(SAMPLE_QA.read_text(encoding="utf-8"))
        answerable = [{**q, "document": q["source"]} for q in qa["answerable"]]
        unanswerable = [q if isinstance(q, dict) else {"question": q} for q in qa["unanswerable"]]
        return answerable, unanswerable
    qa = json.loads(STAFF_QA.read_text(encoding="utf-8"))

    def keep(q: dict) -> bool:
        corpus = args.corpus is None or q["corpus"] == args.corpus
        return corpus and (args.split == "all" or q["split"] == args.split)

    return [q for q in qa["answerable"] if keep(q)], [q for q in qa["unanswerable"] if keep(q)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("sample", "staff"), default="sample")
    ap.add_argument("--split", choices=("tune", "test", "all"), default="test")
    ap.add_argument(
        "--corpus",
        choices=STAFF_CORPORA,
        default=None,
        help="staff: one handbook only (its questions, an index of it alone: quicker)",
    )
    ap.add_argument("--modes", nargs="+", default=["generate", "read"])
    ap.add_argument(
        "--neighbours",
        nargs="+",
        type=int,
        default=None,
        help="retrieval.neighbours values to compare in the same run (default: the setting)",
    )
    ap.add_argument(
        "--readers",
        nargs="+",
        choices=("current", "main"),
        default=["current"],
        help="read mode: this checkout's reader and/or main's before the staff fix (MAIN_READER)",
    )
    ap.add_argument("--index-dir", type=Path, default=None, help="staff index kept here")
    ap.add_argument("--adapter", type=Path, default=None, help="A GGUF LoRA adapter to serve.")
    ap.add_argument("--threads", type=int, default=min(2, cpu_count()))
    ap.add_argument("--verbose", action="store_true", help="print every answer")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()
    if args.set == "staff" and not CORPORA.is_dir():
        console.print(f"error: {CORPORA} not found (fix: run next to ../shared/data)")
        return 2

    from slm.serving import sentence_rank
    from slm.serving.answer import answer_question
    from slm.serving.generator import LlamaGenerator

    answerable, unanswerable = _questions(args)
    tmp = Path(tempfile.mkdtemp(prefix="lorebot-bench-quality-"))
    try:
        if args.set == "sample":
            settings, index = build_sample_index(tmp, threads=args.threads)
        else:
            corpora = (args.corpus,) if args.corpus else STAFF_CORPORA
            settings, index = staff_index(
                args.index_dir or tmp, threads=args.threads, corpora=corpora
            )
        generator = LlamaGenerator(
            assets.answer_model_path(settings.model.path),
            n_threads=args.threads,
            n_ctx=settings.model.n_ctx,
            seed=0,
            temperature=0.0,
            lora_path=args.adapter,
            adapter=args.adapter.parent.name if args.adapter else None,
        )
        results = {}
        neighbours = args.neighbours or [settings.retrieval.neighbours]
        variants = [
            (m, nb, r)
            for m in args.modes
            for nb in neighbours
            for r in (args.readers if m == "read" else ["current"])
        ]
        served_weights = sentence_rank.WEIGHTS
        for mode, nb, reader in variants:
            model = settings.model.model_copy(update={"answer_mode": mode})
            retrieval = settings.retrieval.model_copy(update={"neighbours": nb})
            label = mode if len(neighbours) == 1 else f"{mode} nb={nb}"
            if len(args.readers) > 1 and mode == "read":
                label += f" ({reader})"
            sentence_rank.WEIGHTS = served_weights
            if reader == "main":
                sentence_rank.WEIGHTS = dict(MAIN_READER["weights"])
                retrieval = retrieval.model_copy(update=MAIN_READER["retrieval"])
            use_ranking(index, retrieval)
            row = {
                "top_doc": 0,
                "key_fact": 0,
                "key_fact_short": 0,
                "yes_no": 0,
                "yes_no_right": 0,
                "wrongly_refused": 0,
                "refused_unanswerable": 0,
                "ms": [],
                "first": [],
            }
            for item in answerable:
                a = answer_question(
                    Question(text=item["question"]),
                    index,
                    generator,
                    retrieval=retrieval,
                    model=model,
                )
                row["ms"].append(a.timings_ms.get("total", 0.0))
                if "first_token" in a.timings_ms:
                    row["first"].append(a.timings_ms["first_token"])
                cited = [c for c in a.citations if c.cited] or a.citations
                row["top_doc"] += bool(cited) and (
                    cited[0].source.endswith("/" + item["document"])
                    or cited[0].source == item["document"]
                    or Path(cited[0].source).name == item["document"]
                )
                facts = [f.lower() for f in item["key_facts"]]
                hit = (not a.abstained) and any(f in a.answer.lower() for f in facts)
                row["key_fact"] += hit
                short = (a.short_answer or "").lower()
                row["key_fact_short"] += bool(short) and any(f in short for f in facts)
                if item.get("yes_no"):
                    row["yes_no"] += 1
                    first = _YES_NO_FIRST.match(a.answer)
                    row["yes_no_right"] += bool(first) and first.group(1).lower() == item["yes_no"]
                row["wrongly_refused"] += a.abstained
                if args.verbose:
                    console.print(
                        escape(f"[{label}] {'OK ' if hit else '-- '}{item['question']}\n")
                        + escape(f"    {a.answer[:200]!r}")
                    )
            for item in unanswerable:
                a = answer_question(
                    Question(text=item["question"]),
                    index,
                    generator,
                    retrieval=retrieval,
                    model=model,
                )
                row["refused_unanswerable"] += a.abstained
            row["p50_ms"] = sorted(row["ms"])[len(row["ms"]) // 2]
            row["p50_first_token_ms"] = (
                sorted(row["first"])[len(row["first"]) // 2] if row["first"] else None
            )
            del row["ms"], row["first"]
            results[label] = row
        sentence_rank.WEIGHTS = served_weights
        index.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n_ans, n_un = len(answerable), len(unanswerable)
    name = "sample handbook" if args.set == "sample" else f"staff questions, {args.split} half"
    if args.set == "staff" and args.corpus:
        name += f", {args.corpus} only"
    table = Table(
        title=f"{name}: {n_ans} answerable, {n_un} unanswerable questions"
        + (f", adapter {args.adapter.parent.name}" if args.adapter else ", base model")
    )
    table.add_column("measure")
    labels = list(results)
    base = labels[0]
    for label in labels:
        table.add_column(label, justify="right")
    measures = (
        ("right doc cited first", "top_doc", n_ans),
        ("key fact in the answer", "key_fact", n_ans),
        ("key fact in the short answer", "key_fact_short", n_ans),
        ("yes/no right word first", "yes_no_right", None),
        ("answerable refused", "wrongly_refused", n_ans),
        ("unanswerable refused", "refused_unanswerable", n_un),
    )
    for measure, key, total in measures:
        cells = []
        for label in labels:
            r = results[label]
            cells.append(f"{r[key]}/{total if total is not None else r['yes_no']}")
        table.add_row(measure, *cells)
    for measure, key in (("p50 answer ms", "p50_ms"), ("p50 first token ms", "p50_first_token_ms")):
        cells = []
        for label in labels:
            v, b = results[label][key], results[base][key]
            ratio = f" ({v / b:.2f}×)" if label != base and v and b else ""
            cells.append("–" if v is None else f"{v:.0f}{ratio}")
        table.add_row(measure, *cells)
    console.print(table)
    out = save(
        "answer-quality"
        + ("" if args.set == "sample" else f"-staff-{args.split}")
        + (f"-{args.corpus}" if args.set == "staff" and args.corpus else ""),
        {
            "adapter": str(args.adapter) if args.adapter else None,
            "neighbours": args.neighbours,
            "readers": args.readers,
            "results": results,
            "answerable": n_ans,
            "unanswerable": n_un,
        },
        started_load=started_load,
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
