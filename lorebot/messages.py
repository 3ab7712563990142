"""User-facing text of the command line, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from lorebot.types import Answer

if TYPE_CHECKING:  # pragma: no cover
    from lorebot.settings import Settings

DEMO_QUESTIONS = [
    "How many days of annual leave do I get per year?",
    "Who do I contact if my laptop is stolen?",
]
#: ``lorebot demo --learn`` asks these before and after its refresh.
LEARN_QUESTIONS = [
    *DEMO_QUESTIONS,
    "How much is the one-off home office allowance?",
]


def answer_text(answer: Answer) -> Text:
    """An answer with numbered citations, for the terminal (a short answer first, in bold)."""
    out = Text()
    out.append("A: ", style="bold green")
    text = answer.answer.strip()
    first, sep, rest = text.partition("\n")
    short = (answer.short_answer or "").strip()
    if short and not answer.abstained and first.startswith(short):
        # Read mode: the short answer stands out; the quoted sentence follows as it is.
        out.append(first, style="bold")
        out.append(sep + rest + "\n")
    else:
        out.append(text + "\n")
    if answer.citations:
        label = "Nearest sources (not an answer):" if answer.abstained else "Sources:"
        out.append(label + "\n", style="bold")
        for c in answer.citations:
            out.append(f"  [{c.n}] ", style="cyan")
            out.append(c.title, style="bold")
            out.append(
                f" — {c.location()}" + ("" if c.cited else "  (not cited)") + "\n", style="dim"
            )
            out.append(f"      {c.snippet(160)}\n", style="italic")
    t = answer.timings_ms
    parts = [f"{k} {t[k]:.0f} ms" for k in ("retrieve", "generate", "total", "roundtrip") if k in t]
    out.append(
        f"index {answer.index_version or '-'} · adapter {answer.adapter or 'base'} · "
        + ", ".join(parts),
        style="dim",
    )
    return out


def answer_json(answer: Answer, timings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stable JSON shape of `lorebot ask --json` (``timings``: where its wall time went,
    in seconds, see :func:`lorebot.cli.ask.ask_timings`)."""
    out = {
        "question_id": answer.question_id,
        "question": answer.question,
        "answer": answer.answer,
        "short_answer": answer.short_answer,
        "abstained": answer.abstained,
        "citations": [
            {
                "n": c.n,
                "source": c.url or c.source,
                "title": c.title,
                "chunk_id": c.chunk_id,
                "score": round(c.score, 4),
                "text": c.text,
                "page": c.page,
                "collection": c.collection,
                "cited": c.cited,
            }
            for c in answer.citations
        ],
        "index_version": answer.index_version,
        "adapter": answer.adapter,
        "timings_ms": {k: round(v, 1) for k, v in answer.timings_ms.items()},
        "tokens": {"prompt": answer.prompt_tokens, "completion": answer.completion_tokens},
    }
    if timings is not None:
        out["timings"] = timings
    return out


def ingest_done(report: Any) -> str:
    return (
        f"index version {report.version}: {report.chunks_total} chunks; "
        f"{report.ok} ok, {report.failed} failed, {report.skipped} skipped in "
        f"{report.duration_s:.1f} s"
    )


def stack_up(settings: Settings, stack: Any) -> str:
    names = ", ".join(c.name for c in stack.children)
    from lorebot.settings import mask_url

    redis = mask_url(settings.redis.effective_url)
    redis += " (embedded)" if settings.redis.embedded else ""
    return (
        f"lorebot is up: redis {redis}; {names}. Logs in {stack.log_dir}. Ctrl-C stops everything."
    )


def learn_table(result: Any) -> Any:
    """The same questions answered before and after the demo's refresh (a rich Table)."""
    from rich.table import Table

    before = f"before ({result.before_adapter or 'base model'})"
    after = f"after (adapter {result.after_adapter})" if result.after_adapter else "after"
    t = Table("question", before, after, show_lines=True)
    for q, a, b in zip(result.questions, result.before, result.after, strict=True):
        t.add_row(q, _short(a), _short(b))
    return t


def _short(answer: Answer, limit: int = 240) -> str:
    text = " ".join((answer.answer or "").split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return ("(abstained) " if answer.abstained else "") + text


def learn_verdict(result: Any, total_s: float) -> str:
    """The gate's verdict, its scores and what the run did, in a few lines."""
    r = result.report
    m = r.metrics or {}
    scores = ", ".join(
        f"{label} {m[label]['score']:.3f}"
        for label in ("candidate", "current", "base")
        if m.get(label, {}).get("score") is not None
    )
    verdict = {
        "promoted": "[bold green]PROMOTED[/]: the new adapter now serves",
        "rejected": "[bold yellow]REJECTED[/]: what served before still serves",
        "skipped": "[bold]SKIPPED[/]: nothing was trained",
    }.get(r.status, f"[bold red]{r.status.upper()}[/]")
    tr = r.training or {}
    lines = [
        f"gate: {verdict} — {r.reason}",
        f"gate scores (mean token F1 on held-out questions): {scores or '-'}",
        f"pairs kept {r.pairs.get('kept', 0)}, training examples {r.examples.get('train', 0)}, "
        f"{tr.get('steps', 0)} LoRA steps in {tr.get('train_s', 0)} s "
        f"(loss {tr.get('first_loss', '-')} → {tr.get('final_loss', '-')})",
        f"done in {total_s / 60:.1f} min (refresh {result.seconds.get('refresh', 0):.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r.durations_s.items())
        + ")",
    ]
    return "\n".join(lines)
