"""The grounded prompt: a fixed system prompt, numbered passages, bounded history, the question.

Two constraints shape it. The model is tiny (135M parameters): the instructions are few
and concrete, each passage is cut to the sentences that share words with the question,
and the question comes last, where it attends best. And prompt tokens are the latency
budget (about 380 tokens/s on two cores): the system prompt is the same bytes on every
call, first in the prompt, so llama.cpp's KV cache keeps it between calls and only what
follows it is evaluated per question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from lorebot.text import content_words, split_sentences
from lorebot.types import SearchHit, Turn

__all__ = ["content_words", "split_sentences"]  # re-exported: the prompt's own vocabulary

#: What the model is told to say when the passages do not hold the answer; the answer
#: path recognises it (see :func:`is_not_found`) and abstains.
NOT_FOUND = "The documents do not say."

# No "say you don't know" instruction: measured on 50 XQuAD questions with the gold
# passage, a 135M model told to reply NOT_FOUND when unsure used it for questions the
# passage did answer; without it, 42% of answers contain the gold answer. Abstention is
# decided on retrieval evidence instead (retrieval.min_score), plus is_not_found() when
# the model volunteers it.
SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. "
    "Reply with one short sentence that states the fact from the passage, "
    "copying its words and numbers, and cite the passage number like [1]."
)

#: Earlier turns of a thread given to the model with a follow-up question.
HISTORY_TURNS = 2
#: Most tokens of each earlier turn kept (the rest is cut).
HISTORY_TURN_TOKENS = 60
#: A passage cut to fit the budget must keep at least this many tokens, else it is dropped.
MIN_PASSAGE_TOKENS = 24
#: Marks a passage cut to fit the budget.
ELLIPSIS = "…"

#: Sentences kept from each passage: those sharing the most words with the question.
#: Measured on XQuAD-en with the gold passage: keeping the best 2-3 of ~6 sentences keeps
#: the answer in 92% of passages, cuts prompt tokens by about 40% and raises token F1.
FOCUS_SENTENCES = 3

CountTokens = Callable[[str], int]

_NOT_FOUND_PATTERNS = re.compile(
    r"documents? do(?:es)? not (?:say|mention|contain|cover|specify|provide)"
    r"|passages? do(?:es)? not (?:say|mention|contain|cover|specify|provide)"
    r"|not (?:mentioned|stated|specified|covered) in the (?:passages?|documents?)",
    re.IGNORECASE,
)
_CITATION_MARK = re.compile(r"\s*\[\d+(?:\s*[,;-]\s*\d+)*\]")


def is_not_found(answer_text: str) -> bool:
    """True when the model said (in so many words) that the passages do not hold the answer."""
    return bool(_NOT_FOUND_PATTERNS.search(answer_text))


def passage_header(n: int, hit: SearchHit) -> str:
    """``[n] Title > Heading``: where the passage comes from, which the model may need."""
    chunk = hit.chunk
    where = chunk.title.strip()
    heading = chunk.heading.strip()
    if heading and heading != where:
        where = f"{where} > {heading}" if where else heading
    return f"[{n}] {where}".rstrip()


def truncate_to_tokens(text: str, max_tokens: int, count_tokens: CountTokens) -> str:
    """The longest word-boundary prefix of ``text`` that fits ``max_tokens`` tokens.

    Binary search over whitespace-separated words, so a model tokenizer is called about
    log2(words) times rather than once per word.
    """
    if max_tokens <= 0:
        return ""
    if count_tokens(text) <= max_tokens:
        return text
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def focus_passage(text: str, question: str, keep: int = FOCUS_SENTENCES) -> str:
    """The ``keep`` sentences of ``text`` that share most words with ``question``, in order.

    A 135M model answers better from two or three relevant sentences than from a whole
    passage, and every sentence dropped is prompt time saved. Ties go to earlier
    sentences, which tend to name the subject. The citation still shows the whole passage.
    """
    sentences = split_sentences(text)
    if len(sentences) <= keep:
        return " ".join(sentences)
    wanted = content_words(question)
    ranked = sorted(
        range(len(sentences)), key=lambda i: (-len(content_words(sentences[i]) & wanted), i)
    )
    return " ".join(sentences[i] for i in sorted(ranked[:keep]))


def render_passage(n: int, hit: SearchHit, text: str | None = None) -> str:
    body = " ".join((hit.chunk.text if text is None else text).split())
    return f"{passage_header(n, hit)}\n{body}"


def select_passages(
    hits: Sequence[SearchHit],
    *,
    context_tokens: int,
    count_tokens: CountTokens,
    question: str | None = None,
    focus: int | None = FOCUS_SENTENCES,
) -> tuple[list[str], list[SearchHit]]:
    """Rendered passages that fit ``context_tokens``, best first, and the hits they came from.

    With a ``question`` (and ``focus`` not None) each passage is first reduced to its
    ``focus`` sentences most related to the question. Whole passages are taken in rank
    order while they fit; the first one that does not fit is cut to the remaining budget
    (if a useful amount remains) and is the last. The top passage is always included,
    cut if need be.
    """
    blocks: list[str] = []
    used: list[SearchHit] = []
    left = context_tokens
    for hit in hits:
        n = len(used) + 1
        text = hit.chunk.text
        if question is not None and focus:
            text = focus_passage(text, question, focus)
        block = render_passage(n, hit, text)
        cost = count_tokens(block)
        if cost <= left:
            blocks.append(block)
            used.append(hit)
            left -= cost
            continue
        room = left - count_tokens(passage_header(n, hit)) - count_tokens(ELLIPSIS)
        if room >= MIN_PASSAGE_TOKENS or not used:
            body = truncate_to_tokens(" ".join(text.split()), max(room, 0), count_tokens)
            block = render_passage(n, hit, f"{body} {ELLIPSIS}")
            # Token counts are not additive at the seams; shave words until the block fits.
            while body and count_tokens(block) > left:
                body = body.rsplit(" ", 1)[0] if " " in body else ""
                block = render_passage(n, hit, f"{body} {ELLIPSIS}")
            if body:
                blocks.append(block)
                used.append(hit)
        break
    return blocks, used


def history_messages(history: Sequence[Turn], count_tokens: CountTokens) -> list[dict[str, str]]:
    """The last few turns of the thread as chat messages, each cut short.

    Citation marks are removed from earlier answers: their numbers referred to passages
    the model no longer sees.
    """
    out: list[dict[str, str]] = []
    for turn in list(history)[-HISTORY_TURNS:]:
        role = "assistant" if turn.role == "assistant" else "user"
        text = _CITATION_MARK.sub("", turn.text).strip()
        text = truncate_to_tokens(" ".join(text.split()), HISTORY_TURN_TOKENS, count_tokens)
        if text:
            out.append({"role": role, "content": text})
    # A chat must alternate and the current question is a user turn: drop a trailing user turn
    # (it would make two user turns in a row) and a leading assistant turn (no question before it).
    if out and out[-1]["role"] == "user":
        out.pop()
    if out and out[0]["role"] == "assistant":
        out.pop(0)
    return out


def user_message(question: str, passages: Sequence[str]) -> str:
    """Passages first, then the question, last, where a small model attends best.

    No reminder of the rules follows the question: measured, a closing "or say '<not
    found phrase>'" made the model give that phrase for half the questions whose answer
    was in the passage.
    """
    body = "\n\n".join(passages)
    return f"Passages:\n{body}\n\nQuestion: {' '.join(question.split())}"


def build_messages(
    question: str,
    hits: Sequence[SearchHit],
    history: Sequence[Turn],
    *,
    context_tokens: int,
    count_tokens: CountTokens,
    focus: int | None = FOCUS_SENTENCES,
) -> tuple[list[dict[str, str]], list[SearchHit]]:
    """Chat messages for one grounded question and the hits numbered [1]..[n] in them.

    The system prompt comes first and never varies, so llama.cpp can reuse its KV cache;
    each passage is focused on the question (``focus`` sentences; None keeps it whole)
    and the set is trimmed to ``context_tokens``; the history is bounded.
    """
    passages, used = select_passages(
        hits,
        context_tokens=context_tokens,
        count_tokens=count_tokens,
        question=question,
        focus=focus,
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages += history_messages(history, count_tokens)
    messages.append({"role": "user", "content": user_message(question, passages)})
    return messages, used


# -- the reader's prompt ----------------------------------------------------------------

#: The reader asks the model to pick the short answer out of one sentence. The nightly
#: refresh trains on exactly these messages (slm.training), so what the adapter learns is
#: what the reader asks.
READER_SYSTEM_PROMPT = "Answer the question with a short phrase copied from the sentence."


def reader_messages(question: str, sentence: str) -> list[dict[str, str]]:
    """The chat messages whose assistant reply is the short answer (scored, not generated)."""
    return [
        {"role": "system", "content": READER_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Sentence: {' '.join(sentence.split())}\n"
            f"Question: {' '.join(question.split())}",
        },
    ]
