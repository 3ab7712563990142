"""RAFT-style training examples: the serving prompt with the gold passage among distractors.

Retrieval-augmented fine-tuning (Zhang et al., 2024) trains on what the model will see
when serving: the question with its gold passage mixed among retrieved passages that do
not answer it, and the target is the grounded answer citing the gold one. A share of
examples carry distractors only, with the target "the documents do not say", so the
model learns not to answer from the wrong passage.

The prompt is built by :func:`slm.serving.prompt.build_messages`, the very function the answer
path calls, so training and serving cannot drift apart. Distractors are the question's
own nearest neighbours (hard negatives) from the trainable collections only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorebot.types import Chunk, SearchHit
from slm.serving.prompt import (
    ELLIPSIS,
    FOCUS_SENTENCES,
    MIN_PASSAGE_TOKENS,
    NOT_FOUND,
    build_messages,
    focus_passage,
    passage_header,
    reader_messages,
    render_passage,
    truncate_to_tokens,
)
from slm.training.pairs import Pair, support_score


@dataclass
class RaftExample:
    """Chat messages whose last (assistant) message is the training target."""

    messages: list[dict[str, str]]
    pair_id: str
    kind: str  # "gold" | "no_gold" | "reader"
    gold_n: int | None = None
    chunk_ids: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.messages[-1]["content"]

    def prompt(self) -> list[dict[str, str]]:
        """The messages without the target: a probe prompt for parity and tests."""
        return self.messages[:-1]


def _hit(chunk: Chunk, score: float) -> SearchHit:
    return SearchHit(chunk=chunk, score=score, dense_score=score)


def distractors_for(
    pair: Pair,
    reader: Any,
    collections: Sequence[str],
    n: int,
    *,
    min_support: float,
) -> list[Chunk]:
    """The question's nearest chunks that are not its gold chunk and do not answer it."""
    if n <= 0:
        return []
    hits = reader.search(
        pair.question, k=n + 4, collections=list(collections), candidates=max(20, n + 4)
    )
    out: list[Chunk] = []
    for hit in hits:
        if hit.chunk.chunk_id == pair.chunk_id:
            continue
        # A passage that states the answer too is not a distractor (copied text, FAQs).
        share, invented = support_score(pair.answer, hit.chunk)
        if share >= min_support and not invented:
            continue
        out.append(hit.chunk)
        if len(out) == n:
            break
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def _answer_span(text: str, answer: str) -> tuple[int, int] | None:
    """Word indexes [start, end) of ``answer`` in ``text`` (whitespace-normalised, any case);
    for an answer not copied verbatim, the sentence sharing most words with it."""
    words = text.split()
    want = _words(answer).rstrip(".!?").lower()
    if not words or not want:
        return None
    low = _words(text).lower()
    at = low.find(want)
    if at >= 0:
        start = low[:at].count(" ")
        return start, start + max(1, len(want.split()))
    best = focus_passage(text, answer, 1)
    at = low.find(_words(best).lower()) if best else -1
    if at < 0:
        return None
    start = low[:at].count(" ")
    return start, start + max(1, len(best.split()))


def answer_window(
    text: str, answer: str, hit: SearchHit, budget: int, count_tokens: Callable[[str], int]
) -> str:
    """The words of ``text`` around ``answer`` that fit ``budget`` tokens as a rendered passage,
    cut ends marked with an ellipsis. The answer's own words are kept first."""
    words = text.split()
    span = _answer_span(text, answer) or (0, 1)
    lo, hi = span

    def render(a: int, b: int) -> str:
        body = " ".join(words[a:b])
        body = (ELLIPSIS + " " if a > 0 else "") + body + (" " + ELLIPSIS if b < len(words) else "")
        return body

    def fits(a: int, b: int) -> bool:
        return count_tokens(render_passage(9, hit, render(a, b))) <= budget

    grew = True
    while grew:
        grew = False
        for a, b in ((lo - 1, hi), (lo, hi + 1)):  # one word left, then one right
            if 0 <= a and b <= len(words) and fits(a, b):
                lo, hi, grew = a, b, True
    while hi - lo > 1 and not fits(lo, hi):  # the answer alone is over the budget
        hi -= 1
    return render(lo, hi)


def _with_text(chunk: Chunk, text: str) -> Chunk:
    return chunk.model_copy(update={"text": text})


def _gold_text(gold: Chunk, pair: Pair, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The gold passage as the prompt shows it: focused on the question as serving focuses
    it, unless that drops the answer (then the text around the answer), cut to the window
    around the answer when it alone exceeds ``budget``."""
    text = focus_passage(gold.text, pair.question, FOCUS_SENTENCES)
    if (
        _answer_span(gold.text, pair.answer) is not None
        and _words(pair.answer).rstrip(".!?").lower() not in _words(text).lower()
    ):
        text = gold.text
    hit = _hit(gold, 0.9)
    if count_tokens(render_passage(9, hit, _words(text))) <= budget:
        return _words(text)
    return answer_window(text, pair.answer, hit, budget, count_tokens)


def _fit_distractors(
    question: str,
    distractors: Sequence[Chunk],
    budget: int,
    count_tokens: Callable[[str], int],
) -> list[Chunk]:
    """Distractors (focused as serving focuses them) that fill ``budget`` tokens, the last one
    cut to what remains as :func:`select_passages` would cut it."""
    out: list[Chunk] = []
    left = budget
    for chunk in distractors:
        hit = _hit(chunk, 0.5)
        text = _words(focus_passage(chunk.text, question, FOCUS_SENTENCES))
        cost = count_tokens(render_passage(9, hit, text))
        if cost <= left:
            out.append(_with_text(chunk, text))
            left -= cost
            continue
        room = left - count_tokens(passage_header(9, hit)) - count_tokens(ELLIPSIS)
        if room >= MIN_PASSAGE_TOKENS:
            body = truncate_to_tokens(text, room, count_tokens)
            if body:
                out.append(_with_text(chunk, f"{body} {ELLIPSIS}"))
        break
    return out


def build_example(
    pair: Pair,
    gold: Chunk,
    distractors: Sequence[Chunk],
    *,
    no_gold: bool,
    rng: random.Random,
    context_tokens: int,
    count_tokens: Callable[[str], int],
) -> RaftExample:
    """One example: passages in random order (the gold one too), target answer with ``[n]``.

    An example meant to hold the gold passage always holds it, its answer included: the
    gold passage is placed in the budget first (cut to the window around its answer if it
    alone exceeds ``context_tokens``) and the distractors fill what is left, whatever the
    order they are shown in. Should the gold passage still be missing, the target becomes
    the not-found reply: the target must always match what the model was shown.
    """
    if no_gold:
        chunks = list(distractors)
        rng.shuffle(chunks)
        hits = [_hit(c, 0.9 - 0.05 * i) for i, c in enumerate(chunks)]
        messages, used = build_messages(
            pair.question, hits, [], context_tokens=context_tokens, count_tokens=count_tokens
        )
    else:
        gold_text = _gold_text(gold, pair, context_tokens, count_tokens)
        gold_cost = count_tokens(render_passage(9, _hit(gold, 0.9), gold_text))
        others = _fit_distractors(
            pair.question, distractors, context_tokens - gold_cost, count_tokens
        )
        chunks = [_with_text(gold, gold_text), *others]
        rng.shuffle(chunks)
        while True:
            hits = [_hit(c, 0.9 - 0.05 * i) for i, c in enumerate(chunks)]
            # Texts are focused and fitted above: the prompt shows them as they are.
            messages, used = build_messages(
                pair.question,
                hits,
                [],
                context_tokens=context_tokens,
                count_tokens=count_tokens,
                focus=None,
            )
            shown = [h for h in used if h.chunk.chunk_id == gold.chunk_id]
            whole = bool(shown) and _words(shown[0].chunk.text) in messages[-1]["content"]
            if whole or len(chunks) == 1:
                break
            # Token counts are not additive at the seams: drop the last distractor and retry.
            last = max(i for i, c in enumerate(chunks) if c.chunk_id != gold.chunk_id)
            chunks.pop(last)
    gold_n = next(
        (i for i, h in enumerate(used, start=1) if h.chunk.chunk_id == gold.chunk_id), None
    )
    if gold_n is None:
        target, kind = NOT_FOUND, "no_gold"
    else:
        answer = pair.answer.rstrip()
        # The mark goes before the final stop, as the system prompt's example shows.
        if answer.endswith((".", "!", "?")):
            target = f"{answer[:-1]} [{gold_n}]{answer[-1]}"
        else:
            target = f"{answer} [{gold_n}]."
        kind = "gold"
    return RaftExample(
        messages=[*messages, {"role": "assistant", "content": target}],
        pair_id=pair.pair_id,
        kind=kind,
        gold_n=gold_n,
        chunk_ids=[h.chunk.chunk_id for h in used],
    )


def reader_example(pair: Pair) -> RaftExample | None:
    """The reader's prompt (question + the sentence the short answer was copied from) with the
    short answer as target: exactly what ``model.answer_mode=read`` scores when serving."""
    if not pair.sentence or pair.answer not in pair.sentence:
        return None
    return RaftExample(
        messages=[
            *reader_messages(pair.question, pair.sentence),
            {"role": "assistant", "content": pair.answer},
        ],
        pair_id=pair.pair_id,
        kind="reader",
    )


def build_examples(
    pairs: Sequence[Pair],
    chunks: dict[str, Chunk],
    reader: Any,
    collections: Sequence[str],
    *,
    distractors: int,
    no_gold_share: float,
    seed: int,
    context_tokens: int,
    count_tokens: Callable[[str], int],
    min_support: float,
) -> list[RaftExample]:
    """One example per pair; ``no_gold_share`` of them (rounded) with distractors only. A pair
    with a short answer and its sentence (answer-first pairs) also gets a reader example.

    Every passage comes from ``collections`` (the gold chunk was filtered on the way in,
    distractors are searched with the same filter), so nothing restricted is shown.
    """
    rng = random.Random(seed)
    allowed = set(collections)
    items: list[tuple[Pair, Chunk, list[Chunk]]] = []
    for pair in pairs:
        gold = chunks.get(pair.chunk_id)
        if gold is None or gold.collection not in allowed:
            continue
        others = distractors_for(
            pair, reader, collections, max(distractors, 1), min_support=min_support
        )
        items.append((pair, gold, others))
    # Exactly the configured share of examples goes without its gold passage, drawn among
    # the pairs that have distractors to show instead (a coin per pair drifts off it).
    eligible = [i for i, (_, _, others) in enumerate(items) if others]
    wanted = min(len(eligible), round(no_gold_share * len(items)))
    chosen = set(rng.sample(eligible, wanted))
    out: list[RaftExample] = []
    for i, (pair, gold, others) in enumerate(items):
        no_gold = i in chosen
        out.append(
            build_example(
                pair,
                gold,
                others[: max(distractors, 1)] if no_gold else others[:distractors],
                no_gold=no_gold,
                rng=rng,
                context_tokens=context_tokens,
                count_tokens=count_tokens,
            )
        )
        reading = reader_example(pair)
        if reading is not None:
            out.append(reading)
    return out
