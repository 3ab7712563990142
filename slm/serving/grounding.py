"""A cheap check that an answer does not invent facts the passages never mention.

A 135M model asked something its passages do not answer rarely says so; it makes up a
plausible answer instead ("The wifi password is 123456."). The facts people act on are
mostly numbers and names, so this module looks for exactly those: digits and capitalised
words in the answer that appear neither in the passages shown to the model nor in the
question. Measured on XQuAD-en with the gold passage, about a quarter of the base model's
answers contain such a term, and only 17% of those contain the right answer (against 54%
of the others), so the answer path treats them as "the documents do not say".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CITATION = re.compile(r"\[[^\]]{0,40}\]|\b(?:passage|source|document)\s+#?\d+\b", re.IGNORECASE)
#: Where an answer may be cut: after a sentence, or before a comma, semicolon or
#: "and"/"but"/"which".
_CLAUSE_END = re.compile(
    r"(?<=[.!?])\s|(?<=\])\s|[,;:]\s|\s(?=(?:and|but|which|while|with|including)\b)"
)
#: A cut answer must keep at least this many words to be worth showing.
MIN_PREFIX_WORDS = 5
_NUMBER = re.compile(r"\d(?:[\d,.:/]*\d)?")
_CAPITALISED = re.compile(r"(?<![\w'’-])[A-Z][A-Za-z'’-]*[A-Za-z]")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|\(\s*|\"\s*)$")
_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
    "13": "thirteen", "14": "fourteen", "15": "fifteen", "16": "sixteen", "17": "seventeen",
    "18": "eighteen", "19": "nineteen", "20": "twenty", "30": "thirty", "40": "forty",
    "50": "fifty", "60": "sixty", "100": "hundred", "1000": "thousand",
}  # fmt: skip
#: Capitalised words a grounded answer may use without the passages having them.
_ALLOWED = frozenset(
    {
        "i", "a", "an", "the", "it", "its", "in", "on", "at", "of", "this", "that", "these",
        "those", "he", "she", "they", "his", "her", "their", "we", "our", "you", "your",
        "according", "yes", "no", "however", "also", "answer", "passage", "passages", "source",
        "sources", "document", "documents", "question", "mr", "mrs", "ms", "dr", "st",
    }
)  # fmt: skip


def _plain_number(text: str) -> str:
    return text.replace(",", "").rstrip(".:/")


def _word_key(word: str) -> str:
    word = word.lower().replace("’", "'")
    return word[:-2] if word.endswith("'s") else word.rstrip("'")


class GroundingCheck:
    """Checks answers against a fixed set of sources, prepared once.

    The answer path runs it on the partial answer after every streamed piece (to stop
    streaming an invention to Slack) and once on the final text.
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self.source = " ".join(sources)
        self.plain_source = self.source.replace(",", "")
        self.source_words = {_word_key(w) for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", self.source)}

    def __call__(self, answer: str) -> list[str]:
        """Numbers and names in ``answer`` found in none of the sources, in order."""
        return list(dict.fromkeys(term for _, term in self.findings(answer)))

    def findings(self, answer: str) -> list[tuple[int, str]]:
        """(position, term) of every unsupported number or name in ``answer``.

        Citation marks ("[2]") are not numbers of the answer. Numbers match digit for
        digit ignoring thousands separators, or as a word ("2" is supported by "two").
        Capitalised words match case-insensitively with possessives folded; one that
        starts a sentence is not checked, since the model capitalises ordinary words there.
        """
        answer = _CITATION.sub(lambda m: " " * len(m.group(0)), answer)  # keep positions
        found: list[tuple[int, str]] = []
        for m in _NUMBER.finditer(answer):
            number = _plain_number(m.group(0))
            if not number or number in self.plain_source:
                continue
            word = _NUMBER_WORDS.get(number)
            if word and re.search(rf"\b{word}\b", self.source, re.IGNORECASE):
                continue
            found.append((m.start(), number))
        for m in _CAPITALISED.finditer(answer):
            word = m.group(0)
            key = _word_key(word)
            if key in _ALLOWED or key in self.source_words:
                continue
            if all(part in self.source_words for part in key.split("-") if part):
                continue
            if _SENTENCE_START.search(answer[: m.start()]):
                continue
            found.append((m.start(), word))
        return sorted(found)

    def supported_prefix(self, answer: str, *, min_words: int = MIN_PREFIX_WORDS) -> str | None:
        """The answer cut before its first unsupported term, at a clause boundary.

        "Staff get 27 days of leave, with a maximum of 100 days" keeps "Staff get 27 days
        of leave." when 100 is in no passage. None when the answer is fully supported
        (nothing to cut) or when too little would remain to be an answer.
        """
        found = self.findings(answer)
        if not found:
            return None
        head = answer[: found[0][0]]
        bounds = [m.start() for m in _CLAUSE_END.finditer(head)]
        if not bounds:
            return None
        kept = head[: bounds[-1]].rstrip(" ,;:-–(")
        if len(re.findall(r"[A-Za-z0-9]+", _CITATION.sub(" ", kept))) < min_words or self(kept):
            return None
        return kept if kept.endswith((".", "!", "?")) else kept + "."


def unsupported_terms(answer: str, sources: Iterable[str]) -> list[str]:
    """Numbers and names in ``answer`` found in none of ``sources`` (:class:`GroundingCheck`)."""
    return GroundingCheck(sources)(answer)
