"""Answer quality and latency as the passage-token budget grows: the case for the default.

    python bench/context_budget.py                          # XQuAD-en, 50 questions
    python bench/context_budget.py --budgets 150 300 600 --limit 20

One temporary XQuAD index and one loaded model serve every budget; each budget runs the
evaluation harness (slm.evals.runner.run_eval, i.e. the bot's answer path) over the same
sampled questions with ``retrieval.context_tokens`` set to it. ``--top-k`` (default 8) is
raised above the default so that the budget, not the passage count, decides how much
the model reads. Writes a table, bench/results/context-budget.json and a PNG plot of
F1 / gold-answer-contained / acceptable share and p50 latency / first token against the
budget.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, XQUAD, console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

from lorebot.settings import RetrievalSettings, Settings, cpu_count


def plot(rows: list[dict[str, Any]], png: Path, default: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = [r["context_tokens"] for r in rows]
    for key, label in (
        ("f1", "token F1"),
        ("contains", "gold answer contained"),
        ("acceptable", "cosine ≥ 0.5"),
        ("recall_in_prompt", "gold passage in prompt"),
    ):
        top.plot(x, [r[key] for r in rows], marker="o", label=label)
    top.set_ylabel("share / score")
    top.set_ylim(0, 1.05)
    top.legend(fontsize=8, loc="upper left", ncols=2)
    top.axvline(default, color="grey", linestyle=":", linewidth=1)
    top.set_title("answer quality and latency vs passage-token budget")
    bottom.plot(x, [r["p50_total_ms"] / 1000 for r in rows], marker="s", label="p50 answer (s)")
    bottom.plot(
        x, [r["p50_first_token_ms"] / 1000 for r in rows], marker="^", label="p50 first token (s)"
    )
    bottom.axvline(default, color="grey", linestyle=":", linewidth=1)
    bottom.set_xlabel("retrieval.context_tokens (dotted: current default)")
    bottom.set_ylabel("seconds")
    bottom.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    return png


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--qa", type=Path, default=XQUAD, help="SQuAD v1.1 file (default XQuAD-en)")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--budgets", type=int, nargs="+", default=[150, 300, 450, 600, 900, 1200])
    ap.add_argument(
        "--top-k", type=int, default=8, help="passages retrieved (the budget cuts them)"
    )
    ap.add_argument("--threads", type=int, default=cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="context-budget")
    args = ap.parse_args(argv)
    exit_cleanly_on_sigterm()
    if not args.qa.is_file():
        raise SystemExit(f"{args.qa} is absent: pass --qa FILE")

    import tempfile

    from ingest.embed import Embedder
    from lorebot.assets import answer_model_path
    from slm.evals.evalset import prepare_eval
    from slm.evals.runner import run_eval
    from slm.serving.generator import LlamaGenerator

    started_load = loadavg()
    console.rule(f"context budget · {args.qa.name} · {args.limit} questions · load {started_load}")
    # history=False below: nothing is written to this data dir. The passage budget is the
    # generating path's prompt (read mode builds no such prompt): measured in that mode.
    base = Settings(
        data_dir=Path(tempfile.gettempdir()) / "lorebot-bench-unused",
        model={"n_threads": args.threads, "answer_mode": "generate"},
    )
    default_budget = RetrievalSettings().context_tokens
    embedder = Embedder(None, threads=args.threads)
    generator = LlamaGenerator(
        answer_model_path(base.model.path), n_threads=args.threads, n_ctx=base.model.n_ctx
    )
    generator.load()
    rows: list[dict[str, Any]] = []
    with prepare_eval(
        base, args.qa, limit=args.limit, seed=args.seed, abstain=0, embedder=embedder
    ) as eval_set:
        for budget in args.budgets:
            settings = base.model_copy(
                update={
                    "retrieval": base.retrieval.model_copy(
                        update={"context_tokens": budget, "top_k": args.top_k}
                    )
                }
            )
            report = run_eval(
                settings,
                args.qa,
                eval_set=eval_set,
                generator=generator,
                embedder=embedder,
                history=False,
                label=f"context {budget}",
            )
            items = [i for i in report.items if i.kind == "answerable"]
            row = {
                "context_tokens": budget,
                "f1": report.answers["f1"],
                "em": report.answers["em"],
                "contains": report.answers["contains"],
                "acceptable": report.similarity["acceptable"],
                "unacceptable": report.similarity["unacceptable"],
                "abstained": report.answers["abstained"],
                "cited_gold": report.answers["cited_gold"],
                # the gold passage is in the prompt when it ranks within the passages that fit
                "recall_in_prompt": None,
                "mean_prompt_tokens": report.tokens["mean_prompt"],
                "p50_total_ms": report.latency_ms["total"]["p50"],
                "p95_total_ms": report.latency_ms["total"]["p95"],
                "p50_first_token_ms": report.latency_ms["first_token"]["p50"],
                "p50_prompt_eval_ms": report.latency_ms["prompt_eval"]["p50"],
                "loadavg": loadavg(),
            }
            row["recall_in_prompt"] = _gold_in_prompt(eval_set, settings, generator, items)
            rows.append(row)
            console.print(
                f"[dim]budget {budget}: F1 {row['f1']:.3f}, p50 {row['p50_total_ms']:,.0f} ms, "
                f"{row['mean_prompt_tokens']:.0f} prompt tokens, load {row['loadavg']}[/]"
            )
    generator.close()

    table = Table(
        "context tokens",
        "F1",
        "EM",
        "contains",
        "cos ≥ 0.5",
        "gold in prompt",
        "abstained",
        "prompt tok",
        "p50 s",
        "p95 s",
        "p50 first tok s",
        title=f"context budget · {args.qa.name} · {args.limit} questions · top_k {args.top_k}",
        title_justify="left",
    )
    for r in rows:
        mark = " (default)" if r["context_tokens"] == default_budget else ""
        table.add_row(
            f"{r['context_tokens']}{mark}",
            f"{r['f1']:.3f}",
            f"{r['em']:.3f}",
            f"{r['contains']:.2f}",
            f"{r['acceptable']:.2f}",
            f"{r['recall_in_prompt']:.2f}",
            f"{r['abstained']:.2f}",
            f"{r['mean_prompt_tokens']:.0f}",
            f"{r['p50_total_ms'] / 1000:.2f}",
            f"{r['p95_total_ms'] / 1000:.2f}",
            f"{r['p50_first_token_ms'] / 1000:.2f}",
        )
    console.print(table)
    png = plot(rows, RESULTS / f"{args.name}.png", default_budget)
    console.print(f"[dim]plot: {png}[/]")
    save(
        args.name,
        {
            "qa": str(args.qa),
            "limit": args.limit,
            "top_k": args.top_k,
            "threads": args.threads,
            "default_context_tokens": default_budget,
            "rows": rows,
            "plot": str(png.name),
        },
        started_load=started_load,
    )


def _gold_in_prompt(eval_set: Any, settings: Settings, generator: Any, items: list[Any]) -> float:
    """Share of questions whose gold passage survives the budget into the prompt."""
    from slm.serving.prompt import select_passages

    by_qid = {q.qid: q for q in eval_set.questions}
    hits_in = 0
    for item in items:
        q = by_qid[item.qid]
        hits = eval_set.retriever.search(
            q.question, k=settings.retrieval.top_k, candidates=settings.retrieval.candidates
        )
        _, used = select_passages(
            hits,
            context_tokens=settings.retrieval.context_tokens,
            count_tokens=generator.count_tokens,
        )
        hits_in += any(eval_set.relevant(q, h.chunk) for h in used)
    return hits_in / len(items) if items else 0.0


if __name__ == "__main__":
    main()
