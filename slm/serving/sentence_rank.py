"""Which sentence answers: the reader's second look at the best few passage sentences.

:func:`slm.serving.evidence.rank_evidence` shortlists passage sentences by MiniLM cosine
and shared words. That finds the neighbourhood, but on its own it prefers the sentence
that *talks about* the question's topic over the one that *answers* it: "A lost or stolen
laptop" (an incident kind) beats "Call the security hotline on extension 4999" for "Who do
I contact if my laptop is stolen?", and a sentence introducing a procedure ("follow all
of the steps below:") beats the step that holds the fact.

This module re-scores the shortlist with features that say whether a sentence could
*answer*, each cheap and general (no rule names a question):

- ``first``: the first stage's own score (cosine + half the word share + a bonus for a
  digit when a quantity is asked), so that weights of 0 elsewhere keep its order;
- ``cosine``: MiniLM cosine of the question and the sentence embedded on its own;
- ``lexical``: share of the question's content words in the sentence (of the best share);
- ``rare``: the same share, each word weighted by how few of the shortlisted sentences
  contain it (a word every sentence has decides nothing);
- ``answer_type``: +1 when the question asks for a kind of thing (a number, a date or
  time, a duration, a person/team/contact, a place) and the sentence holds one that is
  not among the question's own words, -1 when it asks and the sentence holds none;
- ``intro``: the sentence only introduces a list or a procedure (ends on a colon, "the
  following", "as follows", "below");
- ``neighbour``: the sentence comes from a chunk next to a hit rather than from a hit;
- ``rank``: 1 / the retrieval rank of the hit it comes from (a neighbour takes its hit's);
- ``top_doc``: the sentence comes from the document of retrieval's top hit (that hit, a
  later hit of the same document or a neighbour of one). Its weight is the margin by which
  a sentence of another document must out-score the top document's best before the answer
  (and the citation) leaves the page retrieval ranked first.

The score is a weighted sum (:data:`WEIGHTS`); the weights, and the choice of this
re-ranking over the shortlist order, were measured on tuning questions only
(``bench/reader_features.py sentences`` / ``rank``; figures in the README).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lorebot.text import content_words
from slm.serving.evidence import Evidence

#: Feature names, in the order of :func:`features`' columns.
FEATURES = (
    "first",
    "cosine",
    "lexical",
    "rare",
    "answer_type",
    "intro",
    "neighbour",
    "rank",
    "top_doc",
)

#: Weights of the features (see the module docstring and the README for how they were chosen).
WEIGHTS: dict[str, float] = {
    "first": 1.0,
    "cosine": 0.0,
    "lexical": -0.25,
    "rare": 0.0,
    "answer_type": 0.05,
    "intro": 0.0,
    "neighbour": -0.15,
    "rank": 0.1,
    # A sentence of another page must beat the top page's best by 0.1 (staff tune half: the
    # answer's page right for 23 of 30 instead of 22, sample handbook 27 of 27 instead of 26,
    # XQuAD-en tuning unchanged; 0.05-0.2 the same, 0.3 and more lose pages the reader
    # rightly moved to: retrieval's own first page is right for 19 of 30).
    "top_doc": 0.1,
}

#: Sentences of the first-stage ranking that are re-scored here.
SHORTLIST = 8

_Q_NUMBER = re.compile(
    r"^\s*how (?:many|much|far|old|big|large|tall|high|fast|heavy|often)\b"
    r"|\bwhat (?:number|percentage|percent|amount|size|age|proportion|fraction|extension)\b"
    r"|\bhow much\b|\bhow many\b|\b(?:budget|cost|price|fee|allowance|stipend|limit)\b"
    r"|\b(?:number|extension)\b|\bwhat(?:'s| is) the (?:most|max(?:imum)?|min(?:imum)?|least)\b"
    r"|\bmax(?:imum)? (?:value|amount|number)\b"
    r"|\bper (?:km|mile|day|night|hour|week|month|year|person)\b",
    re.IGNORECASE,
)
_Q_DURATION = re.compile(r"\bhow (?:long|soon|quickly|fast)\b|\bhow much time\b", re.IGNORECASE)
# "when" asks for a time at the start of a question or before its verb ("when is", "by
# when"), not as a conjunction ("what do I use when I travel?").
_Q_DATE = re.compile(
    r"^\W*when\b|\bwhen (?:is|are|was|were|do|does|did|can|could|should|will|would|must|"
    r"has|have|had)\b|\b(?:what|which) (?:year|date|day|month|century|time|period|decade|era)\b"
    r"|\bby when\b|\bdeadline\b|\bhow (?:early|late)\b|\bwhat time\b",
    re.IGNORECASE,
)
_Q_CONTACT = re.compile(
    r"\bwho\b|\bwhom\b|\bwhose\b|\bcontact\b|\breach out\b|\bnotify\b|\bhelp ?desk\b"
    r"|\b(?:which|what) (?:team|person|group|office|department|e-?mail address|address|"
    r"phone number|number|channel) (?:do|should|can|to|is)\b"
    r"|\bhow (?:do|can|should) (?:i|we) (?:report|reach|contact|get in touch)\b"
    r"|\b(?:i|we) (?:can |should |could |do )?(?:call|phone|ring|email|e-mail)\b",
    re.IGNORECASE,
)
_Q_PLACE = re.compile(
    r"\bwhere\b|\b(?:what|which) (?:country|city|state|place|region|continent|county|river|"
    r"island|building|room|floor|channel|site|page|website|url)\b",
    re.IGNORECASE,
)

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?"
)
_WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)s?"
_NUM_WORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    r"eighty|ninety|hundred|thousand|million|billion|dozen|half|several|a few|once|twice)"
)
_NUMBER = re.compile(rf"\d|\b{_NUM_WORD}\b", re.IGNORECASE)
_DATE = re.compile(
    rf"\b{_MONTH}(?=\W|$)|\b{_WEEKDAY}\b|\b1\d{{3}}s?\b|\b20\d\d\b|\bcentur(?:y|ies)\b"
    r"|\b\d{1,2}(?:st|nd|rd|th)\b|\b\d{1,2}(?::\d\d)?\s?(?:am|pm|a\.m\.|p\.m\.)"
    r"|\b(?:noon|midnight|today|tomorrow|yesterday|annually|monthly|weekly|daily|"
    r"quarterly|yearly|morning|evening|afternoon|weekend|spring|summer|autumn|fall|winter)\b"
    r"|\b(?:before|after|within|by|until|during|since) (?:the )?(?:end|start|first|last|next)\b",
    re.IGNORECASE,
)
_DURATION = re.compile(
    rf"(?:\d[\d.,]*|\b{_NUM_WORD})[\s-]+(?:business |working |calendar )?"
    r"(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?|centuries)\b"
    r"|\b(?:immediately|right away|as soon as|straight away|same day|next day|"
    r"next working day|within)\b",
    re.IGNORECASE,
)
_CONTACT = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.]+|\bhttps?://|\bwww\.|\b\w+\.(?:com|org|gov|net|io|example)\b"
    r"|(?:\+?\d[\d ()-]{6,}\d)|\bext(?:ension|\.)?\s*\d+|#[a-z][\w-]+"
    r"|\b(?:hotline|helpdesk|help desk|service desk|team|manager|supervisor|officer|desk|"
    r"department|office|lead|admin(?:istrator)?s?|hr|people ops|representative|coordinator|"
    r"channel|queue|ticket|inbox|mailbox|call|e-?mail (?:us|them|the)|slack)\b",
    re.IGNORECASE,
)
_CAPITALISED = re.compile(r"\b[A-Z][\w'’.&-]*[a-z0-9][\w'’&-]*|\b[A-Z]{2,}\b")
_PLACE_WORD = re.compile(
    r"\b(?:room|floor|building|office|street|road|avenue|city|country|river|island|"
    r"region|campus|site|page|channel|folder|drive|portal|website|intranet|wiki)\b",
    re.IGNORECASE,
)
_INTRO = re.compile(
    r":\s*$|\bthe following\b|\bas follows\b|\b(?:steps?|list|instructions|items|options)"
    r" below\b|\bbelow:|\bfollow (?:these|the|all)\b[^.]*\bsteps\b",
    re.IGNORECASE,
)


def asked_kinds(question: str) -> set[str]:
    """The kinds of thing a question asks for: number, duration, date, contact, place."""
    kinds: set[str] = set()
    if _Q_NUMBER.search(question):
        kinds.add("number")
    if _Q_DURATION.search(question):
        kinds.add("duration")
    if _Q_DATE.search(question):
        kinds.add("date")
    if _Q_CONTACT.search(question):
        kinds.add("contact")
    if _Q_PLACE.search(question):
        kinds.add("place")
    return kinds


def _new_names(sentence: str, question_words: set[str]) -> bool:
    """Whether the sentence has a capitalised name the question does not (the first word of
    a sentence, a label or an item is capitalised anyway: it counts only in all capitals)."""
    for m in _CAPITALISED.finditer(sentence):
        word = m.group()
        before = sentence[: m.start()].rstrip()
        if (not before or before[-1] in ":.!?;-•*") and not word.isupper():
            continue
        if not (content_words(word) & question_words):
            return True
    return False


def holds(kind: str, sentence: str, question: str) -> bool:
    """Whether ``sentence`` holds a thing of ``kind`` that the question does not name."""
    qwords = content_words(question)

    def new(rx: re.Pattern[str]) -> bool:
        return any(m.group().lower() not in question.lower() for m in rx.finditer(sentence))

    if kind == "number":
        return new(_NUMBER)
    if kind == "duration":
        return new(_DURATION)
    if kind == "date":
        return new(_DATE)
    if kind == "contact":
        return new(_CONTACT) or _new_names(sentence, qwords)
    if kind == "place":
        return _new_names(sentence, qwords) or new(_PLACE_WORD)
    return False


def answer_type(question: str, sentence: str, kinds: set[str] | None = None) -> float:
    """+1: the question asks for a kind the sentence holds; -1: it asks and none is there;
    0: the question asks for no particular kind."""
    kinds = asked_kinds(question) if kinds is None else kinds
    if not kinds:
        return 0.0
    return 1.0 if any(holds(k, sentence, question) for k in kinds) else -1.0


def introduces(sentence: str) -> bool:
    """Whether a sentence only introduces a list or a procedure ("do the following:")."""
    return bool(_INTRO.search(sentence.strip()))


@dataclass(frozen=True)
class Candidate:
    """One shortlisted sentence, as the re-ranker sees it."""

    text: str
    cosine: float  # MiniLM cosine with the question, the sentence embedded on its own
    first: float = 0.0  # its first-stage score (rank_evidence's: cosine, word share, digits)
    rank: int = 1  # retrieval rank of the hit it comes from (1 = top)
    neighbour: bool = False  # from a chunk next to a hit, not from a hit
    top_doc: bool = False  # from the document of retrieval's top hit


def features(question: str, candidates: Sequence[Candidate]) -> np.ndarray:
    """One row per candidate, one column per name of :data:`FEATURES`."""
    if not candidates:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    wanted = content_words(question)
    sentence_words = [content_words(c.text) for c in candidates]
    shared = np.array([len(w & wanted) for w in sentence_words], dtype=np.float32)
    lexical = shared / max(1.0, float(shared.max()))
    n = len(candidates)
    weight = {w: math.log(1.0 + n / (1 + sum(w in s for s in sentence_words))) for w in wanted}
    total = sum(weight.values()) or 1.0
    rare = np.array(
        [sum(weight[w] for w in s & wanted) / total for s in sentence_words], dtype=np.float32
    )
    kinds = asked_kinds(question)
    rows = np.zeros((n, len(FEATURES)), dtype=np.float32)
    for i, c in enumerate(candidates):
        rows[i] = (
            c.first,
            c.cosine,
            lexical[i],
            rare[i],
            answer_type(question, c.text, kinds),
            1.0 if introduces(c.text) else 0.0,
            1.0 if c.neighbour else 0.0,
            1.0 / max(1, c.rank),
            1.0 if c.top_doc else 0.0,
        )
    return rows


def scores(
    question: str, candidates: Sequence[Candidate], weights: dict[str, float] | None = None
) -> np.ndarray:
    """The re-ranking score of each candidate (higher answers better)."""
    w = WEIGHTS if weights is None else weights
    vector = np.array([w.get(name, 0.0) for name in FEATURES], dtype=np.float32)
    return features(question, candidates) @ vector


def rerank(
    question: str,
    ranked: Sequence[Evidence],
    origin: Callable[[int], tuple[int, bool] | tuple[int, bool, bool]],
    weights: dict[str, float] | None = None,
) -> list[Evidence]:
    """``ranked`` (rank_evidence's shortlist) re-ordered by :func:`scores`, best first.

    ``origin`` maps an evidence's passage number to (the retrieval rank of its hit, whether
    it is a neighbouring chunk[, whether it is of the top hit's document]). Each returned
    evidence's ``score`` is its re-ranking score less the ``top_doc`` term (a preference
    between documents, not evidence that the sentence answers), which the reader's
    abstention reads.
    """
    # Without embeddings (a retriever that offers none) the shortlist's own score, words and
    # numbers, stands in for the cosine.
    candidates = [
        Candidate(
            e.text, e.cosine if e.cosine is not None else e.score, e.score, *origin(e.passage)
        )
        for e in ranked
    ]
    w = WEIGHTS if weights is None else weights
    s = scores(question, candidates, w)
    plain = s - w.get("top_doc", 0.0) * np.array([c.top_doc for c in candidates], dtype=np.float32)
    order = sorted(range(len(ranked)), key=lambda i: -float(s[i]))
    return [replace(ranked[i], score=float(plain[i])) for i in order]
