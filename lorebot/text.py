"""Sentences and words of a passage: one segmentation shared by ingestion and answering.

Ingestion stores a vector for every sentence unit of a chunk (pooled from the chunk's own
MiniLM pass), and the answer path picks its evidence quote among the same units of the
retrieved chunks. Both must cut a text the same way, so the segmentation lives here, in
the kernel, where ``ingest`` and ``slm`` can both import it.

A *sentence* is a run of prose ending in ``.``, ``!`` or ``?`` before a capital, digit or
quote, a paragraph, or a list item. A *unit* is a sentence with any heading or label
before it joined on ("Reception: Call extension 2400."), because a label alone
("Reception", "Buying your old laptop") names what follows rather than saying anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_WORD = re.compile(r"[a-z0-9]+")
_UNDERLINE = re.compile(r"^[=\-_#*\s]+$")
_STOPWORDS = frozenset(
    {
        "a", "an", "the", "of", "in", "on", "at", "to", "is", "was", "were", "are", "be", "been",
        "do", "does", "did", "what", "which", "who", "whom", "whose", "how", "when", "where",
        "why", "for", "by", "with", "and", "or", "as", "that", "this", "it", "its", "from", "has",
        "have", "had", "can", "i", "my", "we", "our", "you", "your", "me", "should", "would",
        "will", "there", "their", "they",
    }
)  # fmt: skip

#: A unit shorter than this (in words) without end punctuation is a heading or label.
LABEL_WORDS = 5


@dataclass(frozen=True)
class Unit:
    """One sentence unit: its flattened text and where it lies in the source text."""

    text: str
    start: int
    end: int


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without the commonest function words."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every non-blank sentence of ``text``, in order."""
    lead = len(text) - len(text.lstrip())
    body = text.strip()
    spans: list[tuple[int, int]] = []
    at = 0
    for sep in _SENTENCE_END.finditer(body):
        spans.append((at, sep.start()))
        at = sep.end()
    spans.append((at, len(body)))
    return [(lead + s, lead + e) for s, e in spans if body[s:e].strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences (and list items) of a passage, each with its whitespace flattened."""
    return [" ".join(text[s:e].split()) for s, e in sentence_spans(text)]


def units(text: str) -> list[Unit]:
    """Sentence units of a passage, headings and labels joined to the sentence after them."""
    out: list[Unit] = []
    pending: Unit | None = None
    for s, e in sentence_spans(text):
        words = [w for w in text[s:e].split() if not _UNDERLINE.match(w)]
        if not words:
            continue
        sentence = " ".join(words)
        if len(words) < LABEL_WORDS and not sentence.endswith((".", "!", "?")):
            pending = (
                Unit(f"{pending.text} {sentence}", pending.start, e)
                if pending
                else Unit(sentence, s, e)
            )
            continue
        if pending is not None:
            out.append(Unit(f"{pending.text}: {sentence}", pending.start, e))
        else:
            out.append(Unit(sentence, s, e))
        pending = None
    if pending is not None and not out:
        out.append(pending)
    return out
