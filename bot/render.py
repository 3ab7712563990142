"""Block Kit rendering: pure functions from domain objects to Slack message payloads.

Both the bot (placeholders, errors) and the worker's delivery (streamed text, the final
answer) use these, so a message looks the same whichever process writes it. Every
function returns ``{"text": fallback, "blocks": [...]}`` ready for ``chat.postMessage``
or ``chat.update``; nothing here talks to Slack.

Slack's limits shape the code: 3,000 characters per section text, 50 blocks per
message, and ``&``, ``<``, ``>`` must be escaped so that model output can never ping
``@channel`` or forge a link.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from bot import messages
from lorebot.types import Answer, Citation

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
#: The top-level ``text`` is what notifications and screen readers show.
FALLBACK_LIMIT = 3000
SNIPPET_CHARS = 200
ACTION_FEEDBACK_UP = "feedback_up"
ACTION_FEEDBACK_DOWN = "feedback_down"
FEEDBACK_ACTIONS = (ACTION_FEEDBACK_UP, ACTION_FEEDBACK_DOWN)
#: The 👎 modal: its callback id, and the block / action ids of its one text input.
VIEW_SUGGEST = "feedback_suggest"
BLOCK_SUGGESTION = "suggestion"
ACTION_SUGGESTION = "text"
TRUNCATION_NOTE = "\n_…the answer was too long for one Slack message and was cut here._"

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Cut `text` into pieces of at most `limit` characters at the gentlest boundary.

    Paragraph breaks are preferred, then line breaks, sentence ends, spaces; a word
    longer than `limit` is cut hard. An escape entity such as ``&amp;`` is never split.
    """
    if limit < 8:
        raise ValueError("limit must be at least 8 characters")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for sep in ("\n\n", "\n", ". ", "? ", "! ", " "):
            at = window.rfind(sep)
            if at > limit // 4:
                cut = at + len(sep)
                break
        if cut <= 0:
            cut = limit
            tail = _ENTITY_TAIL.search(window)
            if tail:
                cut = tail.start() or limit
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(*texts: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": t[:SECTION_LIMIT]} for t in texts[:10]],
    }


def _fallback(text: str) -> str:
    """The top-level ``text`` from raw (model or document) text: escaped like the blocks.

    Slack shows it in notifications and parses it as mrkdwn too, so an unescaped
    ``<!channel>`` or ``<url|label>`` there would ping or link. Cut to the limit without
    splitting an escape entity.
    """
    flat = escape(text.strip())
    if len(flat) <= FALLBACK_LIMIT:
        return flat
    cut = flat[: FALLBACK_LIMIT - 1]
    tail = _ENTITY_TAIL.search(cut)
    return (cut[: tail.start()] if tail else cut) + "…"


def _italic(text: str) -> str:
    return f"_{text}_"


# --------------------------------------------------------------------------- placeholder
def placeholder(
    n_documents: int | None,
    *,
    queue_position: int | None = None,
    truncated: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The message posted at once: what is being searched, and anything worth knowing.

    `truncated` is ``(limit, original_length)`` when the question was cut.
    """
    lines = [messages.searching(n_documents)]
    notes = []
    if queue_position is not None and queue_position > 0:
        notes.append(messages.queue_position(queue_position))
    if truncated is not None:
        notes.append(messages.truncated(*truncated))
    blocks = [_section(":mag: " + _italic(lines[0]))]
    if notes:
        blocks.append(_context(*notes))
    return {"text": " ".join(lines + notes), "blocks": blocks}


def streaming(partial: str) -> dict[str, Any]:
    """The placeholder while the model is still writing: the text so far plus a note."""
    body = escape(partial)
    pieces = split_text(body) if body.strip() else []
    room = MAX_BLOCKS - 1
    if len(pieces) > room:
        pieces = pieces[: room - 1] + [pieces[room - 1][: SECTION_LIMIT - 2] + " …"]
    blocks = [_section(p) for p in pieces]
    blocks.append(_context(messages.STREAMING_NOTE))
    return {"text": _fallback(partial) or messages.searching(None), "blocks": blocks}


# --------------------------------------------------------------------------- answer
def link_host(url: str | None) -> str | None:
    """The host of a citation URL that may be shown as a link: plain https, no credentials.

    Ingest lets only the configured hosts' URLs through (``index.link_hosts``); this is the
    last check, for whatever else reaches a Citation.
    """
    url = (url or "").strip()
    if not url.lower().startswith("https://") or any(ch in url for ch in "|<>`\"' \t\r\n"):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a malformed port
    except ValueError:
        return None
    if parts.username or parts.password or not parts.hostname:
        return None
    return parts.hostname.lower()


def _citation_link(c: Citation) -> str:
    title = escape(c.title.strip() or c.source)
    url = (c.url or "").strip()
    if link_host(url):
        return f"<{url}|{title}>"
    path = c.source.replace("`", "'")
    return f"*{title}* `{path}`"


def citation_text(c: Citation) -> str:
    """One numbered source: link (with its host) or path, heading and page, then a snippet."""
    head = f"*[{c.n}]* {_citation_link(c)}"
    where = [escape(c.heading)] if c.heading else []
    if c.page:
        where.append(f"p. {c.page}")
    if host := link_host(c.url):
        where.append(f"`{host}`")  # where the link goes, whatever its title says
    if c.collection:
        where.append(f"_{escape(c.collection)}_")
    if where:
        head += " · " + " · ".join(where)
    snippet = escape(c.snippet(SNIPPET_CHARS)).replace("\n", " ")
    text = f"{head}\n>{snippet}" if snippet else head
    return text[:SECTION_LIMIT]


def context_line(answer: Answer, latency_s: float | None = None) -> str:
    """Index version, adapter version and latency, so a wrong answer can be traced."""
    parts = [f"index `{answer.index_version or '-'}`", f"adapter `{answer.adapter or 'base'}`"]
    if latency_s is not None:
        parts.append(f"{latency_s:.1f} s")
    elif "total" in answer.timings_ms:
        parts.append(f"{answer.timings_ms['total'] / 1000:.1f} s")
    parts.append(f"ref `{answer.question_id}`")
    return " · ".join(parts)


def feedback_buttons(question_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"feedback:{question_id}"[:255],
        "elements": [
            {
                "type": "button",
                "action_id": ACTION_FEEDBACK_UP,
                "text": {"type": "plain_text", "text": "👍 Helpful", "emoji": True},
                "value": question_id,
            },
            {
                "type": "button",
                "action_id": ACTION_FEEDBACK_DOWN,
                "text": {"type": "plain_text", "text": "👎 Not helpful", "emoji": True},
                "value": question_id,
            },
        ],
    }


def suggest_modal(
    question_id: str,
    *,
    question: str | None,
    channel: str | None,
    thread_ts: str | None,
    max_chars: int,
) -> dict[str, Any]:
    """The optional "suggest the right answer" modal a 👎 opens (``views.open``).

    ``private_metadata`` carries the question id and where to thank the user; Slack sends
    it back untouched with the submission (which bolt has verified as signed by Slack).
    """
    blocks: list[dict[str, Any]] = [_section(messages.SUGGEST_INTRO)]
    if question:
        blocks.append(_context(f"*Question:* {escape(question)}"[:SECTION_LIMIT]))
    blocks.append(
        {
            "type": "input",
            "block_id": BLOCK_SUGGESTION,
            "label": {"type": "plain_text", "text": messages.SUGGEST_LABEL},
            "element": {
                "type": "plain_text_input",
                "action_id": ACTION_SUGGESTION,
                "multiline": True,
                "max_length": max_chars,
                "placeholder": {"type": "plain_text", "text": messages.SUGGEST_PLACEHOLDER},
            },
        }
    )
    meta = {"q": question_id, "c": channel, "t": thread_ts}
    return {
        "type": "modal",
        "callback_id": VIEW_SUGGEST,
        "title": {"type": "plain_text", "text": messages.SUGGEST_TITLE},
        "submit": {"type": "plain_text", "text": messages.SUGGEST_SUBMIT},
        "close": {"type": "plain_text", "text": messages.SUGGEST_CLOSE},
        "private_metadata": json.dumps(meta, separators=(",", ":")),
        "blocks": blocks,
    }


#: Characters that would end or garble a mrkdwn ``*bold*`` span.
_BOLD_BREAKERS = frozenset("*_~`\n")


def _lead_in_bold(body: str, answer: Answer) -> str:
    """The escaped answer ``body`` with its first line in bold when that line is the short
    answer (read mode: "27 days [1]" above the quoted sentence), so it stands out first.

    Left as it is when the first line is not the short answer, or holds a character that
    would break the bold span (the text is still shown, only not in bold).
    """
    short = (answer.short_answer or "").strip()
    if not short or answer.abstained:
        return body
    first, sep, rest = body.partition("\n")
    if not first.startswith(escape(short)):
        return body
    # The citation mark stays outside the bold: "*27 days* [1]".
    words = first.rstrip()
    mark = re.search(r"(\s*(?:\[\d+\])+)$", words)
    lead, cite = (words[: mark.start()], mark.group(1)) if mark else (words, "")
    if not lead.strip() or any(ch in _BOLD_BREAKERS for ch in lead) or lead != lead.strip():
        return body
    return f"*{lead}*{cite}{sep}{rest}"


def answer_message(answer: Answer, *, latency_s: float | None = None) -> dict[str, Any]:
    """The final message: answer, numbered sources, context line and 👍/👎 buttons.

    A read-mode answer's first line is its short answer (in bold), the quoted sentence with
    its citation follows.

    Long answers are split over several section blocks; if even that does not fit in
    Slack's 50 blocks the answer is cut with a visible note (sources, context and the
    buttons always stay).
    """
    text = answer.answer.strip() or "(the model returned an empty answer)"
    tail: list[dict[str, Any]] = []
    if answer.citations:
        label = "*Nearest sources* (not an answer)" if answer.abstained else "*Sources*"
        tail.append(_section(label))
        tail.extend(_section(citation_text(c)) for c in answer.citations[: MAX_BLOCKS - 10])
    tail.append(_context(context_line(answer, latency_s)))
    tail.append(feedback_buttons(answer.question_id))

    pieces = split_text(_lead_in_bold(escape(text), answer))
    room = MAX_BLOCKS - len(tail)
    if len(pieces) > room:
        keep = pieces[:room]
        last = keep[-1][: SECTION_LIMIT - len(TRUNCATION_NOTE)]
        keep[-1] = last + TRUNCATION_NOTE
        pieces = keep
    blocks = [_section(p) for p in pieces] + tail
    return {"text": _fallback(text), "blocks": blocks}


# --------------------------------------------------------------------------- errors
def error_message(reason: str, ref_id: str) -> dict[str, Any]:
    """What a failed question's placeholder becomes: never silence, always a reference."""
    reason = (reason or messages.INTERNAL_ERROR).strip()
    body = f"{messages.error_title()}\n{escape(reason)}"
    blocks = [_section(body[:SECTION_LIMIT]), _context(messages.error_reference(ref_id))]
    return {
        "text": _fallback(f"Sorry, I couldn't answer this: {reason} (reference {ref_id})"),
        "blocks": blocks,
    }


def notice(text: str) -> dict[str, Any]:
    """A plain one-section message (admin replies, progress lines).

    `text` is mrkdwn the caller built (and escaped where it holds untrusted parts); the
    fallback is the same text, cut to the limit.
    """
    pieces = split_text(text)[:MAX_BLOCKS]
    flat = text.strip()
    if len(flat) > FALLBACK_LIMIT:
        flat = flat[: FALLBACK_LIMIT - 1] + "…"
    return {"text": flat, "blocks": [_section(p) for p in pieces]}


# --------------------------------------------------------------------------- admin status
def _stats_lines(stats: dict[str, Any]) -> list[str]:
    """Index statistics whatever their exact shape: version, totals, per-collection rows."""
    lines = []
    version = stats.get("version")
    if version:
        lines.append(f"• index version `{version}`")
    totals = [
        f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
        for k, v in stats.items()
        if k in ("documents", "chunks", "files") and v is not None
    ]
    if totals:
        lines.append("• " + ", ".join(totals))
    per = stats.get("collections") or stats.get("per_collection")
    if isinstance(per, dict):
        for name, vals in sorted(per.items()):
            if isinstance(vals, dict):
                detail = ", ".join(
                    f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in vals.items()
                )
            else:
                detail = str(vals)
            lines.append(f"    ◦ `{escape(str(name))}`: {escape(detail)}")
    elif isinstance(per, list):
        for item in per:
            lines.append(f"    ◦ {escape(str(item))}")
    for k, v in stats.items():
        if k in ("version", "documents", "chunks", "files", "collections", "per_collection"):
            continue
        if isinstance(v, (str, int, float)) and v is not None:
            lines.append(f"• {escape(str(k))}: {escape(str(v))}")
    return lines


def status_text(
    *,
    worker_status: dict[str, Any] | None,
    queue_depths: dict[str, int],
    live_workers: list[str],
    last_refresh: dict[str, Any] | None,
    worker_error: str | None = None,
) -> str:
    """The `/lorebot status` report as mrkdwn."""
    lines = ["*lorebot status*"]
    if worker_status is None:
        lines.append(f"• index: unknown ({escape(worker_error or 'no worker answered')})")
    else:
        stats = worker_status.get("index")
        if stats:
            lines.extend(_stats_lines(stats))
        else:
            lines.append("• index: none built yet (run `/lorebot reindex` or `lorebot ingest`)")
        lines.append(f"• adapter `{escape(str(worker_status.get('adapter') or 'base'))}`")
    if last_refresh:
        summary = ", ".join(
            f"{escape(str(k))} {escape(str(v))}"
            for k, v in last_refresh.items()
            if isinstance(v, (str, int, float, bool))
        )
        lines.append(f"• last nightly refresh: {summary}")
    else:
        lines.append("• last nightly refresh: none recorded")
    depths = ", ".join(f"{q} {n}" for q, n in queue_depths.items())
    lines.append(f"• queue depth: {depths}")
    if live_workers:
        lines.append(
            f"• live workers ({len(live_workers)}): "
            + ", ".join(f"`{escape(w)}`" for w in sorted(live_workers))
        )
    else:
        lines.append("• live workers: *none*")
    return "\n".join(lines)
