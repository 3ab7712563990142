"""Reviewed answers: a right answer a user suggested and an admin accepted, shown as such.

A 👎 with a suggested answer that an admin accepts (``lorebot feedback review``, or an
answer written in the console) trains the next adapter, but a few LoRA steps on a 135M
model do not reliably change which sentence the reader quotes. So the nightly refresh also
*publishes* every accepted correction (:func:`lorebot.feedback.publish_reviewed`), and the
answer path reads it like a passage:

* a question matches a reviewed answer when its words are the reviewed question's (case and
  spacing aside) or their MiniLM cosine is at least :data:`MATCH_COSINE`, and only among the
  reviewed answers its asker may see: one whose collections (those of the passages the
  corrected answer listed) are all among the question's. A reviewed answer never reaches an
  asker who could not search where it was given;
* the reader reads the reviewed answer's sentences (the answer model picks the short
  phrase, as for a document sentence) and quotes the whole reviewed answer, cited as
  "Reviewed answer" with its provenance: the original question, who suggested it, who
  accepted it and when;
* the retrieved passages are checked against it: those that state it (one or two passages
  holding most of its words and every number and name it has) are cited beside it; when
  none do, which is the case
  when the correction contradicts the documents or says what they do not, the reviewed
  answer is still shown, its citation says "not stated in the documents found", and the
  retrieved passages are listed under it as not cited, so the asker sees both.

The adapter still learns from the correction (the training pairs); this is what makes the
correction visible the morning after, whatever the adapter learnt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorebot import feedback
from lorebot.settings import Settings
from lorebot.text import content_words, split_sentences
from lorebot.types import Answer, Citation, Question, SearchHit
from slm.serving.citations import to_citation
from slm.serving.evidence import Encode, Evidence
from slm.serving.grounding import GroundingCheck

log = logging.getLogger(__name__)

#: MiniLM cosine from which a question is the reviewed one reworded. Set on
#: bench/reviewed_match.py (README "Feedback"): 9 of 12 rewordings match from here, and none
#: of 12 near misses; at 0.90 "What happens if I submit a claim early?" (0.906) matched
#: the "late" question.
MATCH_COSINE = 0.92
#: Share of the reviewed answer's content words a passage must hold to state it.
SUPPORT_SHARE = 0.7
#: Most passages cited together as stating a reviewed answer.
STATING_PASSAGES = 2
#: Sentences of a reviewed answer the reader reads (each costs one scoring call).
READ_SENTENCES = 3
#: Passages listed (not cited) under a reviewed answer that no passage states.
LISTED_PASSAGES = 2


def normalise(question: str) -> str:
    return " ".join(question.lower().replace("?", " ").split())


@dataclass(frozen=True)
class ReviewedAnswer:
    """One published correction and where it may be shown."""

    question: str
    answer: str
    collections: tuple[str, ...]
    question_id: str | None = None
    user: str | None = None
    reviewer: str | None = None
    reviewed_at: str | None = None

    def visible_to(self, collections: Sequence[str] | None) -> bool:
        """Whether an asker who may search ``collections`` (None: all) may see it."""
        return collections is None or set(self.collections) <= set(collections)

    def provenance(self) -> str:
        """Who suggested and who accepted it, and when (the citation's source line)."""
        day = (self.reviewed_at or "")[:10]
        text = f"accepted by {self.reviewer or 'an admin'}" + (f" on {day}" if day else "")
        if self.user and self.user != self.reviewer:
            text += f", suggested by {self.user}"
        return text


class ReviewedAnswers:
    """The published reviewed answers, matched against questions."""

    def __init__(self, answers: Sequence[ReviewedAnswer]) -> None:
        self.answers = list(answers)
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> ReviewedAnswers:
        """From :func:`lorebot.feedback.publish_reviewed`'s file; empty when there is none
        or it cannot be read (logged: answers go on without reviewed answers)."""
        try:
            rows = feedback.published_reviewed(path)
        except feedback.FeedbackReadError as exc:
            log.warning("reviewed answers not used: %s", exc.message)
            rows = []
        return cls(
            [
                ReviewedAnswer(
                    question=r["question"],
                    answer=" ".join(r["answer"].split()),
                    collections=tuple(str(c) for c in r["collections"]),
                    question_id=r.get("question_id"),
                    user=r.get("user"),
                    reviewer=r.get("reviewer"),
                    reviewed_at=r.get("reviewed_at"),
                )
                for r in rows
            ]
        )

    def __len__(self) -> int:
        return len(self.answers)

    def match(
        self, question: str, collections: Sequence[str] | None, encode: Encode | None = None
    ) -> ReviewedAnswer | None:
        """The reviewed answer to ``question`` its asker may see, or None.

        Visibility is decided first: answers of collections the asker may not search are
        never compared. Then the same words, then (with ``encode``) the closest question
        at cosine >= :data:`MATCH_COSINE`.
        """
        visible = [a for a in self.answers if a.visible_to(collections)]
        if not visible:
            return None
        key = normalise(question)
        for a in visible:
            if normalise(a.question) == key:
                return a
        if encode is None:
            return None
        with self._lock:
            missing = [a.question for a in visible if a.question not in self._vectors]
            if missing:
                for text, vec in zip(missing, encode(missing)):
                    self._vectors[text] = np.asarray(vec, dtype=np.float32)
            bank = np.stack([self._vectors[a.question] for a in visible])
        q = np.asarray(encode([question])[0], dtype=np.float32)
        sims = bank @ q
        best = int(np.argmax(sims))
        return visible[best] if float(sims[best]) >= MATCH_COSINE else None


_CACHE: dict[Path, tuple[tuple[int, int], ReviewedAnswers]] = {}
_CACHE_LOCK = threading.Lock()


def for_settings(settings: Settings) -> ReviewedAnswers:
    """This data directory's published reviewed answers, re-read when the file changed (a
    ``stat`` per question otherwise), so a worker sees the refresh's publication at once."""
    path = feedback.reviewed_path(settings)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        loaded = ReviewedAnswers.load(path) if stamp != (0, 0) else ReviewedAnswers([])
        _CACHE[path] = (stamp, loaded)
        return loaded


def _words(hit: SearchHit) -> set[str]:
    c = hit.chunk
    return content_words(f"{c.title} {c.heading} {c.text}")


def stating_passages(
    answer: str, hits: Sequence[SearchHit], limit: int = STATING_PASSAGES
) -> list[SearchHit]:
    """The fewest retrieved passages (at most ``limit``) that together state ``answer``: at
    least :data:`SUPPORT_SHARE` of its content words and no number or name they lack (a
    handbook often splits one rule over two chunks). [] when they do not."""
    words = content_words(answer)
    chosen: list[SearchHit] = []
    covered: set[str] = set()
    pool = list(hits)
    while words and pool and len(chosen) < limit:
        best = max(pool, key=lambda h: len((_words(h) & words) - covered))
        gain = (_words(best) & words) - covered
        if not gain:
            break
        chosen.append(best)
        covered |= gain
        pool.remove(best)
        texts = [t for h in chosen for t in (h.chunk.title, h.chunk.heading, h.chunk.text)]
        if len(covered) / len(words) >= SUPPORT_SHARE and not GroundingCheck(texts)(answer):
            return chosen
    return []


def _citation(reviewed: ReviewedAnswer, stated: bool) -> Citation:
    heading = f"to “{' '.join(reviewed.question.split())}”"
    if not stated:
        heading += " · not stated in the documents found"
    return Citation(
        n=1,
        chunk_id=f"reviewed:{reviewed.question_id or normalise(reviewed.question)}",
        title="Reviewed answer",
        source=reviewed.provenance(),
        collection=", ".join(reviewed.collections),
        heading=heading,
        score=1.0,
        text=reviewed.answer,
        cited=True,
    )


def answer_reviewed(
    question: Question,
    reviewed: ReviewedAnswer,
    hits: Sequence[SearchHit],
    generator: Any,
    *,
    common: dict[str, Any],
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    """The answer to ``question`` from its reviewed answer (see the module docstring).

    ``hits`` are the passages retrieved for the question (its asker's view); ``common``
    holds the index and adapter versions, the timings and the start, as in
    :func:`slm.serving.answer.answer_question`; ``on_token`` gets the whole answer at once.
    """
    from slm.serving.reader import read

    timings, started = common["timings"], common["started"]
    t_read = time.perf_counter()
    text = reviewed.answer
    short = None
    if hasattr(generator, "score_answers"):
        sentences = [
            Evidence(passage=1, text=s, score=0.0) for s in split_sentences(text)[:READ_SENTENCES]
        ]
        reading = read(question.text, sentences, generator, sentences_read=len(sentences))
        short = reading.short if reading is not None else None
    timings["read"] = (time.perf_counter() - t_read) * 1000
    stating = stating_passages(text, hits)
    if stating:
        marks = "".join(f"[{n}]" for n in range(1, len(stating) + 2))
        citations = [_citation(reviewed, True)] + [
            to_citation(n, h, cited=True) for n, h in enumerate(stating, start=2)
        ]
    else:
        marks = "[1]"
        citations = [_citation(reviewed, False)] + [
            to_citation(i, h, cited=False) for i, h in enumerate(hits[:LISTED_PASSAGES], start=2)
        ]
    body = f"> {text} {marks}"
    shown = f"{short} [1]\n{body}" if short and short != text else body
    if on_token is not None:
        try:
            on_token(shown)
        except Exception:  # a failed Slack update must not lose the answer
            log.warning("question %s: token callback failed", question.question_id, exc_info=True)
    timings["first_token"] = (time.perf_counter() - started) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    log.info(
        "question %s answered from reviewed answer %s (reviewer %s) stating_passages=%d short=%r",
        question.question_id,
        reviewed.question_id,
        reviewed.reviewer,
        len(stating),
        (short or "")[:60],
    )
    return Answer(
        question_id=question.question_id,
        question=question.text,
        answer=shown,
        short_answer=short or text,
        citations=citations,
        abstained=False,
        index_version=common["index_version"],
        adapter=common["adapter"],
        timings_ms=timings,
    )
