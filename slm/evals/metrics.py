"""Scores for question answering, retrieval and latency: pure functions, no model, no I/O.

The answer scores follow the SQuAD v1.1 convention so that figures compare with published
ones: both texts are normalised (lower case, punctuation and the articles a/an/the
removed, whitespace collapsed) before exact match and token F1, and a question with
several gold answers scores the best of them. Citation marks such as ``[1]`` are removed
from the bot's answer first: they are part of the user interface, not of the answer, and
would otherwise cost every cited answer its exact match.

The similarity buckets are the ones published SLM fine-tuning evaluations use for the
cosine similarity of an answer's embedding to the gold answer's: >= 0.5 acceptable,
0.4-0.5 somewhat acceptable, < 0.4 unacceptable.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

#: Cosine similarity at or above which an answer counts as acceptable.
ACCEPTABLE = 0.5
#: Cosine similarity at or above which (and below ACCEPTABLE) an answer is "somewhat" acceptable.
SOMEWHAT = 0.4
BUCKETS = ("acceptable", "somewhat", "unacceptable")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
# [1], [1, 2], [1-3], [2; 4]: the citation marks the prompt asks the model for.
_CITATION = re.compile(r"\s*\[\s*\d+(?:\s*[,;\-–]\s*\d+)*\s*\]")


def strip_citations(text: str) -> str:
    """The answer without its ``[n]`` citation marks."""
    return " ".join(_CITATION.sub("", text).split())


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golds: str | Sequence[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD's rule: two empty answers agree, one empty answer scores nothing.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: str | Sequence[str]) -> float:
    """Token-overlap F1 of the normalised texts, the best over the gold answers."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(g).split()) for g in _golds(golds)), default=0.0)


def contains_answer(text: str, golds: str | Sequence[str]) -> bool:
    """Whether a normalised gold answer occurs, on word boundaries, in the normalised text.

    Used for answers (a long answer that states the fact still "contains" it) and, with
    ``--index current``, for retrieved passages (recall without passage ids).
    """
    hay = f" {normalize_answer(text)} "
    for g in _golds(golds):
        needle = normalize_answer(g)
        if needle and f" {needle} " in hay:
            return True
    return False


def recall_at_k(ranked: Sequence[object], relevant: object | Iterable[object], k: int) -> float:
    """1.0 when any relevant item is among the first ``k`` ranked items, else 0.0.

    ``relevant`` is one id or a collection of ids (a passage split into several chunks).
    """
    if k <= 0:
        return 0.0
    if isinstance(relevant, (str, bytes)) or not isinstance(relevant, Iterable):
        wanted = {relevant}
    else:
        wanted = set(relevant)
    return float(any(item in wanted for item in list(ranked)[:k]))


def first_relevant_rank(ranked: Sequence[bool]) -> int | None:
    """1-based rank of the first True in a list of relevance flags, or None."""
    for i, flag in enumerate(ranked, start=1):
        if flag:
            return i
    return None


def similarity_bucket(cosine: float) -> str:
    """acceptable (>= 0.5), somewhat (0.4 to 0.5) or unacceptable (< 0.4)."""
    if cosine >= ACCEPTABLE:
        return "acceptable"
    if cosine >= SOMEWHAT:
        return "somewhat"
    return "unacceptable"


def bucket_shares(cosines: Sequence[float]) -> dict[str, float]:
    """The share of answers in each similarity bucket (zeros for no answers)."""
    counts = Counter(similarity_bucket(c) for c in cosines)
    n = len(cosines)
    return {b: (counts[b] / n if n else 0.0) for b in BUCKETS}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks; None when empty.

    The same definition as numpy's default, so p50 of an even count is the mean of the
    two middle values.
    """
    data = sorted(float(v) for v in values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean, or None when there are no values."""
    data = [float(v) for v in values]
    return sum(data) / len(data) if data else None


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """{n, p50, p95, mean} of a list of durations in milliseconds."""
    data = [float(v) for v in values_ms]
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "mean": mean(data),
    }
