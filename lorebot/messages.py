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


def answer_text(answer: Answer) -> Text:
    """An answer with numbered citations, for the terminal."""
    out = Text()
    out.append("A: ", style="bold green")
    out.append(answer.answer.strip() + "\n")
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
