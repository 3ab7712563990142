"""Short-answer candidates: the phrases of a sentence that could answer a question.

The reader (:mod:`slm.serving.reader`) chooses the short answer among phrases *copied*
from a passage sentence, so every short answer is supported by the passage by
construction. This module proposes those phrases without any model: every run of one to
eight words that neither starts nor ends on a function word, does not straddle a clause
boundary, and is not made of the question's own words. Each gets a prior from what the
question asks for (a number, a date, a name), from how close it sits to the words the
sentence shares with the question, and from its length; the answer model then scores the
best few (see the reader).

Measured with the gold sentence on 100 XQuAD-en questions (a tuning sample, not the
reported 200): the best of the top 16 by prior has token F1 0.67 with the gold answer
(oracle), the prior's first choice 0.25, the model's rescoring of the 16 about 0.48.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Words a candidate may not start or end on (articles may start one: "the dot").
_FUNCTION = frozenset(
    """a an the of in on at to for by with from into onto over under about as than and or
    but nor so yet is was are were be been being has have had do does did will would can
    could may might must shall should it its this that these those there their they them he
    she his her we our you your i me my which who whom whose what when where why how not no
    per via""".split()
)
_LEADING_OK = frozenset({"the", "a", "an"})
#: A candidate containing one of these spans two clauses ("X was Y"): not a phrase.
_CLAUSE_WORDS = frozenset(
    {"is", "was", "are", "were", "be", "been", "has", "have", "had", "which", "who", "that"}
)
#: Words of the question that say nothing about the answer.
_QUESTION_NOISE = _FUNCTION | frozenset({"many", "much", "long", "often", "kind", "type", "name"})
_TOKEN = re.compile(r"[A-Za-z0-9$€£#@/][A-Za-z0-9'’.\-&/$%€£#@_+:]*[A-Za-z0-9%)]|[A-Za-z0-9$%]")
_WORD = re.compile(r"[A-Za-z0-9]+")
_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\b"
)
_NUMBER_WORD = (
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
    r"thirty|forty|fifty|hundred|thousand|million|billion|dozen|half|first|second|third)\b"
)
_DATE = re.compile(
    _MONTH + r"|\b1\d{3}s?\b|\b20\d\d\b|\bcentur(?:y|ies)\b|\b\d{1,2}(?:st|nd|rd|th)\b"
)
_NUMBER = re.compile(r"\d|" + _NUMBER_WORD, re.IGNORECASE)

#: What a question asks for, by its wording, and the kinds of phrase that answer it.
_ASKS = (
    (
        "number",
        re.compile(
            r"^\s*how (?:many|much|long|far|old|big|large|tall|high|often|soon|early|late)\b"
            r"|\bwhat (?:number|percentage|percent|amount|extension|size|age)\b"
            r"|\b(?:how much|phone|extension|number|percent|limit|maximum|minimum)\b",
            re.IGNORECASE,
        ),
        {"number", "date"},
    ),
    (
        "date",
        re.compile(
            r"\bwhen\b|\bwhat (?:year|date|day|month|century|time|period|decade)\b"
            r"|\bwhich (?:year|date|day|month|century)\b|\bwhat time\b",
            re.IGNORECASE,
        ),
        {"date", "number"},
    ),
    (
        # "Who do I contact/call/ask ...": a team or person, or the number or address to use
        "contact",
        re.compile(
            r"\b(?:who|whom)\b.*\b(?:contact|call|phone|ring|e-?mail|reach|notify|ask|tell)\b",
            re.IGNORECASE,
        ),
        {"name", "number"},
    ),
    ("name", re.compile(r"\bwho\b|\bwhom\b|\bwhose\b", re.IGNORECASE), {"name"}),
    (
        "place",
        re.compile(
            r"\bwhere\b|\b(?:what|which) (?:country|city|state|place|region|continent|county)\b",
            re.IGNORECASE,
        ),
        {"name"},
    ),
)
_YES_NO = re.compile(
    r"^\s*(?:is|are|was|were|am|do|does|did|can|could|will|would|should|shall|may|might|must|"
    r"has|have|had|isn't|aren't|don't|doesn't|can't|won't)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|can't|won't|isn't|aren't|doesn't|don't|didn't|mustn't|"
    r"shouldn't|neither|nor|none|without|prohibited|forbidden|not allowed)\b|n't\b",
    re.IGNORECASE,
)

_CAPITAL_AFTER_FIRST = re.compile(r"\s[A-Z]")

#: Most words in a candidate phrase.
MAX_WORDS = 8


@dataclass(frozen=True)
class Span:
    """One candidate phrase of a sentence and its prior."""

    text: str
    start: int
    end: int
    kind: str  # number | date | name | phrase
    prior: float


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - _QUESTION_NOISE


def asks_for(question: str) -> tuple[str | None, set[str]]:
    """What the question asks for ("number", "date", "contact", "name", "place" or None)
    and the kinds of phrase that answer it."""
    for name, rx, kinds in _ASKS:
        if rx.search(question):
            return name, kinds
    return None, set()


def is_yes_no(question: str) -> bool:
    """A question answered by yes or no ("Can I keep my laptop?", "Is there a gym?")."""
    return bool(_YES_NO.search(question))


def negated(sentence: str) -> bool:
    """Whether a sentence says something is not so (a cue for a "No")."""
    return bool(_NEGATION.search(sentence))


def kind_of(text: str) -> str:
    if _DATE.search(text):
        return "date"
    if _NUMBER.search(text):
        return "number"
    if text[:1].isupper():
        return "name"
    return "phrase"


def candidates(question: str, sentence: str, limit: int = 16) -> list[Span]:
    """The ``limit`` phrases of ``sentence`` with the best prior, best first."""
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]
    asked = words(question)
    _, wanted = asks_for(question)
    anchors = [
        m.start()
        for w in asked
        for m in re.finditer(r"\b" + re.escape(w) + r"\b", sentence, re.IGNORECASE)
    ]
    seen: dict[str, Span] = {}
    for i in range(len(tokens)):
        first = tokens[i][0].lower()
        if first in _FUNCTION and first not in _LEADING_OK:
            continue
        for j in range(i + 1, min(len(tokens), i + MAX_WORDS) + 1):
            segment = tokens[i:j]
            if segment[-1][0].lower() in _FUNCTION:
                continue
            start, end = segment[0][1], segment[-1][2]
            text = sentence[start:end]
            if j - i > 1 and (re.search(r";|:\s|[()]|,\s|\s[-–—]\s", text)):
                break  # a clause boundary: longer spans from here cross it too
            if {t[0].lower() for t in segment[1:-1]} & _CLAUSE_WORDS:
                continue
            own = words(text)
            if not own:
                continue
            kind = kind_of(text)
            if kind == "name" and start == 0 and not _CAPITAL_AFTER_FIRST.search(text):
                kind = "phrase"  # only capitalised because it opens the sentence
            prior = 0.0
            if wanted:
                prior += 1.5 if kind in wanted else -1.0
            prior -= 2.0 * len(own & asked) / len(own)  # the question's words do not answer it
            if anchors:  # answers sit near what the sentence shares with the question
                prior -= min(min(abs(start - a), abs(end - a)) for a in anchors) / max(
                    1, len(sentence)
                )
            prior -= 0.08 * (j - i)
            if text not in seen or seen[text].prior < prior:
                seen[text] = Span(text, start, end, kind, prior)
    return sorted(seen.values(), key=lambda s: -s.prior)[:limit]
