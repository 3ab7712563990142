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
from slm.serving.prompt import NOT_FOUND, build_messages, reader_messages
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

    When the budget cuts the gold passage out of the prompt, the target becomes the
    not-found reply: the target must always match what the model was shown.
    """
    chunks = list(distractors) if no_gold else [gold, *distractors]
    rng.shuffle(chunks)
    hits = [_hit(c, 0.9 - 0.05 * i) for i, c in enumerate(chunks)]
    messages, used = build_messages(
        pair.question, hits, [], context_tokens=context_tokens, count_tokens=count_tokens
    )
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
    """One example per pair; about ``no_gold_share`` of them with distractors only. A pair
    with a short answer and its sentence (answer-first pairs) also gets a reader example.

    Every passage comes from ``collections`` (the gold chunk was filtered on the way in,
    distractors are searched with the same filter), so nothing restricted is shown.
    """
    rng = random.Random(seed)
    out: list[RaftExample] = []
    allowed = set(collections)
    for pair in pairs:
        gold = chunks.get(pair.chunk_id)
        if gold is None or gold.collection not in allowed:
            continue
        others = distractors_for(
            pair, reader, collections, max(distractors, 1), min_support=min_support
        )
        no_gold = bool(others) and rng.random() < no_gold_share
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
