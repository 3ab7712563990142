"""Does the nightly refresh make answers better on questions people wrote? The honest judge.

    python bench/refresh_gain.py QA.json [--limit N] [--budget-s S] [--json]

1. The passages of a SQuAD v1.1 file become documents of a fresh data directory (one
   Markdown file each, through the real ingestion; a few passages go to a second
   collection that the hidden-passage questions may not search).
2. The real refresh (:func:`slm.training.refresh.run_refresh`: pairs → RAFT examples →
   LoRA → GGUF → parity → gate → registry) runs on that index with the named LoRA budget
   (``--budget-s``). It trains only on the searchable collection and is handed settings
   that name no QA file: its pair generator and its gate see the index, never the file's
   questions or answers (``tests/slm/training/test_refresh_gain.py`` proves it).
3. The file's human-written questions (``--limit`` sampled with ``--seed``, plus
   ``--abstain`` whose passage is hidden) are asked through the bot's answer path
   (:func:`slm.evals.runner.run_eval`) with the base model and with the new adapter, in
   the same run, whatever the gate decided.

Prints the two summaries side by side with the adapter's gain, writes
``bench/figures/refresh-gain.png`` and ``bench/results/refresh-gain.json``. With ``--json``
the last line of stdout is ``{"base": {...}, "adapter": {...}, "refresh": {...}}``, the two
summaries under the metric names of ``lorebot eval --json``. Settings come from the
environment (``LOREBOT_*``) as everywhere; ``--budget-s``, ``--teacher-questions`` and
``--answer-mode`` override theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, console, exit_cleanly_on_sigterm, loadavg, save  # noqa: E402

FIGURE = REPO / "bench" / "figures" / "refresh-gain.png"
#: Rows of the side-by-side table: (summary key, label, higher is better).
ROWS = (
    ("f1", "token F1 (short answer)", True),
    ("em", "exact match", True),
    ("contains", "gold answer contained", True),
    ("acceptable", "acceptable (cos ≥ 0.5)", True),
    ("somewhat", "somewhat (cos 0.4–0.5)", True),
    ("unacceptable", "unacceptable (cos < 0.4)", False),
    ("abstained", "answerable refused", False),
    ("correct_abstention", "hidden-passage refused", True),
    ("recall@5", "gold passage in top 5", True),
    ("p50_total_ms", "latency p50 ms", False),
    ("p95_total_ms", "latency p95 ms", False),
)


def refresh_settings(
    settings: Any,
    data_dir: Path,
    collection: str,
    *,
    budget_s: int | None,
    teacher_questions: int | None,
) -> Any:
    """The settings the refresh gets: the fresh data dir, one trainable collection, and no
    QA file, golden set or feedback anywhere in them (the judge's questions stay out)."""
    training: dict[str, Any] = {
        "collections": [collection],
        "xquad_path": None,
        "golden_set": None,
        "use_feedback": False,
    }
    if budget_s is not None:
        training["time_budget_s"] = budget_s
    if teacher_questions is not None:
        training["questions_per_chunk"] = teacher_questions
    return settings.model_copy(
        update={"data_dir": data_dir, "training": settings.training.model_copy(update=training)}
    )


def run_bench_refresh(
    settings: Any, *, teacher: Any = None, embedder: Any = None, verbose: bool = True
) -> Any:
    """One real refresh on ``settings`` (see :func:`refresh_settings`); its report."""
    from slm.training.refresh import run_refresh

    def progress(step: str, message: str, detail: bool) -> None:
        if verbose and not detail:
            print(f"refresh: {step}: {message}", file=sys.stderr, flush=True)

    return run_refresh(settings, progress=progress, teacher=teacher, embedder=embedder)


def _refresh_summary(report: Any) -> dict[str, Any]:
    pairs = report.pairs or {}
    return {
        "run": report.run,
        "status": report.status,
        "reason": report.reason,
        "version": report.version,
        "seconds": round(report.total_s, 1),
        "durations_s": report.durations_s,
        "chunks": report.chunks,
        "pairs_generated": pairs.get("generated"),
        "pairs_kept": pairs.get("kept"),
        "pass_rates": pairs.get("pass_rates"),
        "by_teacher": pairs.get("by_teacher"),
        "split": report.split,
        "examples": report.examples,
        "training": report.training,
        "parity": report.parity,
        "gate": report.metrics,
    }


def judge(
    settings: Any, eval_set: Any, embedder: Any, adapter: Path | None, version: str | None
) -> dict[str, Any]:
    """The eval set asked through the answer path by one model (base when ``adapter`` is None)."""
    from slm.evals.runner import run_eval
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator.from_settings(settings, lora_path=adapter, adapter=version)
    gen.load()
    try:
        report = run_eval(
            settings,
            eval_set.qa_path,
            generator=gen,
            embedder=embedder,
            eval_set=eval_set,
            history=False,
            progress=sys.stderr.isatty(),
            label="adapter" if adapter else "base",
        )
    finally:
        gen.close()
    return report.summary()


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "–"
    if key.endswith("_ms"):
        return f"{v:,.0f}"
    return f"{v:.3f}"


def print_table(base: dict[str, Any], adapter: dict[str, Any], refresh: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table("measure", "base model", "with the adapter", "gain", title="refresh gain")
    for key, label, _ in ROWS:
        b, a = base.get(key), adapter.get(key)
        gain = f"{a - b:+.3f}" if isinstance(a, float | int) and isinstance(b, float | int) else "–"
        if key.endswith("_ms") and gain != "–":
            gain = f"{a / b:.2f}×" if b else "–"
        t.add_row(label, _fmt(key, b), _fmt(key, a), gain)
    console.print(t)
    tr = refresh.get("training") or {}
    console.print(
        f"refresh {refresh['run']}: {refresh['status']} {refresh.get('version') or ''} — "
        f"{refresh['reason']}\n  {refresh['seconds']:.0f} s; pairs {refresh.get('pairs_kept')}"
        f" kept of {refresh.get('pairs_generated')}; {tr.get('steps')} steps, "
        f"{tr.get('tokens')} tokens at {tr.get('tokens_per_s')} tokens/s "
        f"(stopped by {tr.get('stopped_by')}); durations {refresh['durations_s']}"
    )


def plot(base: dict[str, Any], adapter: dict[str, Any], title: str, path: Path) -> Path:
    """Grouped bars of the share metrics, and p50/p95 latency beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [(k, label) for k, label, _ in ROWS if not k.endswith("_ms")]
    fig, (ax, lx) = plt.subplots(
        1, 2, figsize=(11, 4), dpi=100, gridspec_kw={"width_ratios": [4, 1]}
    )
    xs = range(len(shares))
    for off, (name, s, colour) in zip(
        (-0.2, 0.2), (("base model", base, "grey"), ("with the adapter", adapter, "tab:orange"))
    ):
        ax.bar(
            [x + off for x in xs], [s.get(k) or 0 for k, _ in shares], 0.4, label=name, color=colour
        )
    ax.set_xticks(list(xs), [label for _, label in shares], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share / score")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=9)
    lat = ("p50_total_ms", "p95_total_ms")
    for off, (s, colour) in zip((-0.2, 0.2), ((base, "grey"), (adapter, "tab:orange"))):
        lx.bar(
            [i + off for i in range(2)], [(s.get(k) or 0) / 1000 for k in lat], 0.4, color=colour
        )
    lx.set_xticks([0, 1], ["p50", "p95"])
    lx.set_ylabel("seconds per answer")
    lx.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qa", type=Path, help="SQuAD v1.1 file (its passages become the corpus)")
    ap.add_argument("--limit", type=int, default=100, help="human questions asked (default 100)")
    ap.add_argument("--abstain", type=int, default=20, help="hidden-passage questions")
    ap.add_argument("--seed", type=int, default=0, help="question sample seed")
    ap.add_argument(
        "--budget-s", type=int, default=900, help="LoRA training budget of the refresh, seconds"
    )
    ap.add_argument(
        "--teacher-questions",
        type=int,
        default=None,
        help="training.questions_per_chunk for the refresh (default: the settings')",
    )
    ap.add_argument(
        "--answer-mode",
        choices=("read", "generate"),
        default=None,
        help="model.answer_mode for the gate and both judges (default: the settings')",
    )
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the data here")
    ap.add_argument("--png", type=Path, default=FIGURE)
    ap.add_argument("--json", action="store_true", help="last stdout line: the JSON summary")
    args = ap.parse_args(argv)
    exit_cleanly_on_sigterm()
    if not args.qa.is_file():
        console.print(f"error: {args.qa} not found (fix: pass a SQuAD v1.1 file)")
        return 2

    import shutil
    import tempfile

    from lorebot.settings import Settings
    from slm.evals.evalset import EVAL_COLLECTION, prepare_eval
    from slm.evals.runner import _default_embedder
    from slm.training import registry

    started, load0 = time.perf_counter(), loadavg()
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="lorebot-bench-gain-"))
    settings = Settings(data_dir=root / "eval-scratch")
    if args.answer_mode:
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"answer_mode": args.answer_mode})}
        )
    embedder = _default_embedder(settings)
    t0 = time.perf_counter()
    eval_set = prepare_eval(
        settings,
        args.qa,
        limit=args.limit,
        seed=args.seed,
        abstain=args.abstain,
        embedder=embedder,
        progress=False,
    )
    try:
        assert eval_set.workdir is not None
        data_dir = eval_set.workdir / "data"  # the fresh index of the file's passages only
        ingest_s = time.perf_counter() - t0
        print(
            f"corpus: {len(eval_set.passages)} passages indexed in {ingest_s:.0f} s "
            f"({len(eval_set.heldout)} hidden from their questions) at {data_dir}",
            file=sys.stderr,
        )
        rs = refresh_settings(
            settings,
            data_dir,
            EVAL_COLLECTION,
            budget_s=args.budget_s,
            teacher_questions=args.teacher_questions,
        )
        report = run_bench_refresh(rs, embedder=embedder)
        refresh = _refresh_summary(report)
        refresh["ingest_s"] = round(ingest_s, 1)
        refresh["budget_s"] = args.budget_s
        refresh["questions_per_chunk"] = rs.training.questions_per_chunk
        refresh["answer_mode"] = rs.model.answer_mode
        base = judge(rs, eval_set, embedder, None, None)
        if report.version and registry.is_complete(rs, report.version):
            adapter_path = registry.version_dir(rs, report.version) / registry.ADAPTER_FILE
            adapter = judge(rs, eval_set, embedder, adapter_path, report.version)
        else:
            adapter = {k: None for k in base}
        if args.data_dir is None:
            shutil.rmtree(root / "eval-scratch", ignore_errors=True)
    finally:
        eval_set.close()
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    refresh["bench_s"] = round(time.perf_counter() - started, 1)
    print_table(base, adapter, refresh)
    title = (
        f"{args.qa.name}: {base.get('n')} human questions, refresh {refresh['status']} "
        f"({refresh.get('pairs_kept')} pairs, {(refresh.get('training') or {}).get('steps')} "
        f"steps, budget {args.budget_s} s)"
    )
    png = plot(base, adapter, title, args.png)
    console.print(f"[dim]wrote {png}[/]")
    out = {"base": base, "adapter": adapter, "refresh": refresh}
    given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save("refresh-gain", {"args": given, **out}, started_load=load0)
    if args.json:
        print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
