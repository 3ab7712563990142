"""The report of one evaluation run: every question as scored, the summary figures, and their
renderings (a JSON dict, one history line, a rich table, a PNG chart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slm.evals import metrics

#: The timings from Answer.timings_ms that the report summarises, in pipeline order.
TIMING_KEYS = (
    "total",
    "retrieve",
    "prompt_build",
    "generate",
    "first_token",
    "prompt_eval",
    "decode",
)


@dataclass
class EvalItem:
    """One question as asked, answered and scored."""

    qid: str
    kind: str  # "answerable" or "heldout" (its passage hidden: abstaining is right)
    question: str
    golds: list[str]
    answer: str = ""
    short_answer: str | None = None  # what EM and F1 score when the answer has one
    f1_whole: float = 0.0  # token F1 of the whole answer text (quote included)
    abstained: bool = False
    error: str | None = None
    em: float = 0.0
    f1: float = 0.0
    contains: bool = False
    cosine: float = 0.0
    bucket: str = "unacceptable"
    gold_rank: int | None = None
    cited_gold: bool | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def model_called(self) -> bool:
        return "generate" in self.timings_ms


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


@dataclass
class EvalReport:
    """The outcome of one evaluation run: summary figures plus every item."""

    qa_file: str
    index_mode: str
    index_version: str | None
    questions_in_file: int
    seed: int
    limit: int | None
    config: dict[str, Any]
    retrieval: dict[str, Any]
    answers: dict[str, Any]
    similarity: dict[str, float]
    abstention: dict[str, Any]
    latency_ms: dict[str, dict[str, Any]]
    tokens: dict[str, Any]
    items: list[EvalItem]
    started_at: str
    duration_s: float
    machine: dict[str, Any]
    label: str | None = None

    # -- machine-readable
    def summary(self) -> dict[str, Any]:
        """The flat figures one history line keeps."""
        return _round(
            {
                "at": self.started_at,
                "label": self.label,
                "qa_file": Path(self.qa_file).name,
                "index": self.index_mode,
                "adapter": self.config.get("adapter"),
                "answer_mode": self.config.get("answer_mode"),
                "n": self.answers.get("n"),
                "recall@1": self.retrieval.get("recall@1"),
                "recall@5": self.retrieval.get("recall@5"),
                "em": self.answers.get("em"),
                "f1": self.answers.get("f1"),
                "contains": self.answers.get("contains"),
                "acceptable": self.similarity.get("acceptable"),
                "somewhat": self.similarity.get("somewhat"),
                "unacceptable": self.similarity.get("unacceptable"),
                "abstained": self.answers.get("abstained"),
                "correct_abstention": self.abstention.get("correct"),
                "p50_total_ms": self.latency_ms.get("total", {}).get("p50"),
                "p95_total_ms": self.latency_ms.get("total", {}).get("p95"),
                "p50_first_token_ms": self.latency_ms.get("first_token", {}).get("p50"),
                "mean_prompt_tokens": self.tokens.get("mean_prompt"),
                "context_tokens": self.config.get("context_tokens"),
                "top_k": self.config.get("top_k"),
            }
        )

    def to_dict(self, *, items: bool = True) -> dict[str, Any]:
        """JSON-ready report (``lorebot eval --json``).

        ``items=False`` leaves out the per-question rows.
        """
        out: dict[str, Any] = {
            "qa_file": self.qa_file,
            "label": self.label,
            "index": {"mode": self.index_mode, "version": self.index_version},
            "questions_in_file": self.questions_in_file,
            "seed": self.seed,
            "limit": self.limit,
            "config": self.config,
            "retrieval": _round(self.retrieval),
            "answers": _round(self.answers),
            "similarity": _round(self.similarity),
            "abstention": _round(self.abstention),
            "latency_ms": {k: _round(v, 1) for k, v in self.latency_ms.items()},
            "tokens": _round(self.tokens, 1),
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 1),
            "machine": self.machine,
        }
        if items:
            out["items"] = [_round(asdict(i)) for i in self.items]
        return out

    # -- for people
    def table(self):
        """A rich Table of every summary figure."""
        from rich.table import Table

        def pct(v: Any) -> str:
            return "–" if v is None else f"{100 * v:.1f}%"

        def num(v: Any, fmt: str = "{:.3f}") -> str:
            return "–" if v is None else fmt.format(v)

        def ms(v: Any) -> str:
            return "–" if v is None else f"{v:,.0f} ms"

        title = (
            f"lorebot eval · {Path(self.qa_file).name} · {self.answers.get('n', 0)} questions · "
            f"index {self.index_mode} · adapter {self.config.get('adapter') or 'base'}"
            + (f" · {mode} mode" if (mode := self.config.get("answer_mode")) else "")
        )
        table = Table("metric", "value", "note", title=title, title_justify="left")
        r, a, s, ab = self.retrieval, self.answers, self.similarity, self.abstention
        table.add_row("[bold]retrieval", "", "")
        table.add_row("recall@1", pct(r.get("recall@1")), r.get("relevance", ""))
        table.add_row("recall@5", pct(r.get("recall@5")), "target ≥ 95%")
        table.add_row("[bold]answers", "", "")
        table.add_row("exact match", pct(a.get("em")), "SQuAD normalisation, citations removed")
        table.add_row("token F1", num(a.get("f1")), "best over gold answers")
        table.add_row("gold answer contained", pct(a.get("contains")), "")
        table.add_row("F1 of answered", num(a.get("f1_answered")), "abstentions left out")
        table.add_row("cites the gold passage", pct(a.get("cited_gold")), "of answered questions")
        table.add_row("abstained (answerable)", pct(a.get("abstained")), "should be low")
        table.add_row("errors", str(a.get("errors", 0)), "")
        table.add_row(
            "[bold]similarity to gold", "", "MiniLM cosine; abstentions count as unacceptable"
        )
        table.add_row("acceptable (≥ 0.5)", pct(s.get("acceptable")), "")
        table.add_row("somewhat (0.4–0.5)", pct(s.get("somewhat")), "")
        table.add_row("unacceptable (< 0.4)", pct(s.get("unacceptable")), "")
        table.add_row("[bold]abstention check", "", "")
        if ab.get("n"):
            table.add_row(
                "correct abstentions",
                pct(ab.get("correct")),
                f"{ab['n']} questions, passage hidden",
            )
        else:
            table.add_row("correct abstentions", "–", ab.get("note", "not run"))
        table.add_row("[bold]latency", "", "p50 / p95")
        for key in TIMING_KEYS:
            lat = self.latency_ms.get(key) or {}
            if lat.get("n"):
                table.add_row(key, f"{ms(lat.get('p50'))} / {ms(lat.get('p95'))}", f"n={lat['n']}")
        table.add_row("[bold]tokens", "", "")
        table.add_row(
            "prompt tokens (mean)",
            num(self.tokens.get("mean_prompt"), "{:.0f}"),
            f"budget {self.config.get('context_tokens')} passage tokens",
        )
        table.add_row("answer tokens (mean)", num(self.tokens.get("mean_completion"), "{:.1f}"), "")
        table.add_row(
            "duration", f"{self.duration_s:.0f} s", f"load {self.machine.get('loadavg_start')}"
        )
        return table

    def write_chart(self, path: Path) -> Path:
        """A PNG: the similarity buckets and the main rates side by side."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(11, 4.2), dpi=110)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})

        shares = [self.similarity.get(b, 0.0) for b in metrics.BUCKETS]
        bars = left.bar(
            ["≥ 0.5\nacceptable", "0.4–0.5\nsomewhat", "< 0.4\nunacceptable"],
            shares,
            color=["#2e7d32", "#f9a825", "#c62828"],
        )
        left.bar_label(bars, labels=[f"{100 * v:.0f}%" for v in shares])
        left.set_ylim(0, 1.12)
        left.set_title("answer vs gold: cosine similarity")
        left.set_ylabel("share of questions")

        rates = {
            "recall@1": self.retrieval.get("recall@1"),
            "recall@5": self.retrieval.get("recall@5"),
            "EM": self.answers.get("em"),
            "F1": self.answers.get("f1"),
            "contains\ngold": self.answers.get("contains"),
            "abstained\n(answerable)": self.answers.get("abstained"),
            "correct\nabstention": self.abstention.get("correct"),
        }
        names = [k for k, v in rates.items() if v is not None]
        values = [rates[k] for k in names]
        bars = right.bar(names, values, color="#1565c0")
        right.bar_label(bars, labels=[f"{v:.2f}" for v in values])
        right.set_ylim(0, 1.12)
        lat = self.latency_ms.get("total", {})
        p50 = lat.get("p50")
        right.set_title(
            f"{self.answers.get('n', 0)} questions · p50 {p50 / 1000:.2f} s/question"
            if p50
            else "rates"
        )
        fig.suptitle(
            f"lorebot eval · {Path(self.qa_file).name} · "
            f"adapter {self.config.get('adapter') or 'base'} · "
            f"context {self.config.get('context_tokens')} tokens · {self.started_at}",
            fontsize=10,
        )
        fig.tight_layout()
        fig.savefig(path)
        return path
