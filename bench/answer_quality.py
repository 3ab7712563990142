"""Does the answer state the fact? The sample handbook's questions, with and without the evidence
quote.

    python bench/answer_quality.py              # 27 answerable + 8 unanswerable questions
    python bench/answer_quality.py --adapter data/adapters/versions/<v>/adapter.gguf
    python bench/answer_quality.py --context-tokens 150 200 300 600   # the quote variant per budget

Builds a temporary index of the packaged sample handbook, then asks every question of
tests/fixtures/sample_qa.json through slm.serving.answer.answer_question (the worker's function)
with the real model, once with the quoted evidence sentence (the default) and once with
the model's own sentence only. Reports, per variant: the right document cited first, the
key fact in the answer text, answerable questions wrongly refused, and unanswerable ones
correctly refused, and the p50 latency of the whole answer and of its first streamed
token. Writes bench/results/answer-quality.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SAMPLE_QA, build_sample_index, console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

from lorebot import assets
from lorebot.settings import cpu_count
from lorebot.types import Question


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=None, help="A GGUF LoRA adapter to serve.")
    ap.add_argument("--threads", type=int, default=min(2, cpu_count()))
    ap.add_argument(
        "--context-tokens",
        type=int,
        nargs="+",
        default=None,
        help="passage-token budgets to compare (quote variant; default: the setting's only)",
    )
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    from slm.serving.answer import answer_question
    from slm.serving.generator import LlamaGenerator

    qa = json.loads(SAMPLE_QA.read_text(encoding="utf-8"))
    tmp = Path(tempfile.mkdtemp(prefix="lorebot-bench-quality-"))
    try:
        settings, index = build_sample_index(tmp, threads=args.threads)
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
        default = settings.retrieval.context_tokens
        variants = [
            (f"model sentence + evidence quote, context {b}", True, b)
            for b in args.context_tokens or [default]
        ]
        if not args.context_tokens:
            variants = [
                ("model sentence + evidence quote", True, default),
                ("model sentence only", False, default),
            ]
        for variant, quote, budget in variants:
            retrieval = settings.retrieval.model_copy(update={"context_tokens": budget})
            row = {
                "top_doc": 0,
                "key_fact": 0,
                "wrongly_refused": 0,
                "refused_unanswerable": 0,
                "ms": [],
                "first": [],
                "prompt_tokens": [],
            }
            for item in qa["answerable"]:
                a = answer_question(
                    Question(text=item["question"]),
                    index,
                    generator,
                    retrieval=retrieval,
                    model=settings.model,
                    quote_evidence=quote,
                )
                row["ms"].append(a.timings_ms.get("total", 0.0))
                if "first_token" in a.timings_ms:
                    row["first"].append(a.timings_ms["first_token"])
                    row["prompt_tokens"].append(a.prompt_tokens)
                cited = [c for c in a.citations if c.cited] or a.citations
                row["top_doc"] += bool(cited) and Path(cited[0].source).name == item["source"]
                row["key_fact"] += (not a.abstained) and any(
                    f.lower() in a.answer.lower() for f in item["key_facts"]
                )
                row["wrongly_refused"] += a.abstained
            for item in qa["unanswerable"]:
                a = answer_question(
                    Question(text=item["question"]),
                    index,
                    generator,
                    retrieval=retrieval,
                    model=settings.model,
                    quote_evidence=quote,
                )
                row["refused_unanswerable"] += a.abstained
            row["p50_ms"] = sorted(row["ms"])[len(row["ms"]) // 2]
            row["p50_first_token_ms"] = (
                sorted(row["first"])[len(row["first"]) // 2] if row["first"] else None
            )
            row["mean_prompt_tokens"] = (
                sum(row["prompt_tokens"]) / len(row["prompt_tokens"])
                if row["prompt_tokens"]
                else None
            )
            del row["ms"], row["first"], row["prompt_tokens"]
            results[variant] = row
        index.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n_ans, n_un = len(qa["answerable"]), len(qa["unanswerable"])
    table = Table(
        title=f"Sample handbook: {n_ans} answerable, {n_un} unanswerable questions"
        + (f", adapter {args.adapter.parent.name}" if args.adapter else ", base model")
    )
    for col in (
        "variant",
        "right doc first",
        "key fact in answer",
        "answerable refused",
        "unanswerable refused",
        "prompt tokens",
        "p50 ms",
        "p50 first token ms",
    ):
        table.add_column(col)
    for variant, r in results.items():
        first = r["p50_first_token_ms"]
        table.add_row(
            variant,
            f"{r['top_doc']}/{n_ans}",
            f"{r['key_fact']}/{n_ans}",
            f"{r['wrongly_refused']}/{n_ans}",
            f"{r['refused_unanswerable']}/{n_un}",
            f"{r['mean_prompt_tokens'] or 0:.0f}",
            f"{r['p50_ms']:.0f}",
            "–" if first is None else f"{first:.0f}",
        )
    console.print(table)
    out = save(
        "answer-quality",
        {
            "adapter": str(args.adapter) if args.adapter else None,
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
