"""Pure parsing of what people type in Slack: questions, thread history, admin commands."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lorebot.types import Turn

_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL_REF = re.compile(r"<#([CDG][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_EMOJI_CODE = re.compile(r":[a-z0-9_+\-']+:(?::skin-tone-\d:)?")
_ASKED = re.compile(r"^<@([UW][A-Z0-9]+)> asked: ", re.DOTALL)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def clean_text(text: str, bot_user_id: str | None = None) -> str:
    """Slack's message markup to plain text: drop the bot's mention, keep the words.

    Other mentions become ``@U123``, channel references ``#name``, links their label
    (or URL), and Slack's HTML escapes are undone; whitespace is collapsed.
    """

    def user(m: re.Match) -> str:
        return "" if bot_user_id and m.group(1) == bot_user_id else f"@{m.group(1)}"

    out = _USER_MENTION.sub(user, text or "")
    out = _CHANNEL_REF.sub(lambda m: f"#{m.group(2) or m.group(1)}", out)
    out = _SPECIAL.sub(lambda m: f"@{m.group(1)}", out)
    out = _LINK.sub(lambda m: m.group(2) or m.group(1), out)
    out = _unescape(out)
    return " ".join(out.split())


def has_words(text: str) -> bool:
    """False for text made only of emoji (``:tada:`` codes or pictographs) and punctuation."""
    stripped = _EMOJI_CODE.sub(" ", text)
    return any(ch.isalnum() for ch in stripped)


@dataclass(frozen=True)
class ParsedQuestion:
    text: str
    problem: str | None = None  # "empty" or "no_words"
    truncated_from: int | None = None  # original length when cut


def parse_question(raw: str, *, bot_user_id: str | None, max_chars: int) -> ParsedQuestion:
    """Clean a message and decide whether it is a question we can work with."""
    text = clean_text(raw, bot_user_id)
    if not text:
        return ParsedQuestion("", problem="empty")
    if not has_words(text):
        return ParsedQuestion(text, problem="no_words")
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        if space > max_chars * 0.8:
            cut = cut[:space]
        return ParsedQuestion(cut, truncated_from=len(text))
    return ParsedQuestion(text)


def thread_history(
    messages: list[dict[str, Any]],
    *,
    current_ts: str,
    bot_user_id: str | None,
    bot_id: str | None,
    max_turns: int,
    max_chars: int,
    skip_prefixes: tuple[str, ...] = (),
) -> list[Turn]:
    """Earlier turns of a thread (conversations.replies order), newest `max_turns` kept.

    The bot's own messages are assistant turns, except its "<@U> asked: …" echo of a
    slash command, which is the user's question. Placeholders and errors (text starting
    with one of `skip_prefixes`) are not turns.
    """
    if max_turns <= 0:
        return []
    turns: list[Turn] = []
    for m in messages:
        ts = m.get("ts")
        if ts is None or float(ts) >= float(current_ts):
            continue
        if m.get("subtype") not in (None, "bot_message", "thread_broadcast", "file_share"):
            continue
        text = m.get("text") or ""
        from_bot = (bot_user_id is not None and m.get("user") == bot_user_id) or (
            bot_id is not None and m.get("bot_id") == bot_id
        )
        if from_bot:
            asked = _ASKED.match(text)
            if asked:
                role, body = "user", text[asked.end() :]
            elif text.startswith(skip_prefixes):
                continue
            else:
                role, body = "assistant", text
        elif m.get("bot_id"):
            continue  # other bots are not part of the conversation
        else:
            role, body = "user", text
        body = clean_text(body, bot_user_id)[:max_chars]
        if body:
            turns.append(Turn(role=role, text=body))
    return turns[-max_turns:]


@dataclass
class AdminCommand:
    name: str
    args: list[str] = field(default_factory=list)
    channel: str | None = None  # a <#C…> reference in the arguments


def parse_admin(text: str) -> AdminCommand:
    """``/lorebot`` text to a command name, its arguments and an optional channel."""
    channel = None
    m = _CHANNEL_REF.search(text or "")
    if m:
        channel = m.group(1)
        text = _CHANNEL_REF.sub(" ", text)
    words = (text or "").replace(",", " ").split()
    if not words:
        return AdminCommand("help", channel=channel)
    return AdminCommand(words[0].lower(), [w for w in words[1:]], channel=channel)
