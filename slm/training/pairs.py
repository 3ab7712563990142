"""Question/answer pairs from the documents: who writes them, and the filters they must pass.

A 135M teacher writes many bad pairs (questions about "the passage", answers that invent
numbers), so no pair reaches training without passing, in order:

* ``format``: a real question (ends with "?", a sensible length, not about "the passage")
  and a short answer that is not a refusal;
* ``supported``: the answer's words come from its chunk (share >= ``min_support``) and it
  names no number or name the chunk lacks (:mod:`slm.serving.grounding`);
* ``duplicate``: no earlier question is a near-paraphrase (MiniLM cosine);
* ``round_trip``: searching the question finds its own chunk in the top k — a question
  the bot cannot route to its passage teaches nothing about answering from it.

Deterministic extraction (headings and key sentences turned into questions) adds pairs
that cost no model call. Every pair keeps its provenance: chunk, document, teacher and
the scores of each filter.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lorebot import feedback
from lorebot.errors import ConfigError, LorebotError
from lorebot.settings import Settings
from lorebot.types import Chunk, SearchHit
from slm.evals.metrics import strip_citations
from slm.serving.grounding import GroundingCheck
from slm.serving.prompt import build_messages, content_words, is_not_found, split_sentences

log = logging.getLogger(__name__)

FILTERS = ("format", "supported", "duplicate", "round_trip")

QUESTION_SYSTEM = (
    "You write quiz questions about a passage. Write one question that the passage answers, "
    "then its answer copied from the passage."
)
_BAD_QUESTION = re.compile(
    r"\b(passage|passages|document|documents|text above|this text|the author|article)\b"
    r"|\[|\]|answer:",
    re.IGNORECASE,
)
_PRONOUN_START = re.compile(
    r"^(it|this|that|there|they|these|those|we|you|he|she|which)\b", re.IGNORECASE
)


class TeacherError(LorebotError):
    """The teacher model cannot be reached or answered garbage."""


# ----------------------------------------------------------------------------- pairs
@dataclass
class Pair:
    """One question with its answer and where they come from."""

    question: str
    answer: str
    chunk_id: str
    collection: str
    document: str
    title: str
    chunk_hash: str
    teacher: str
    run: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    pair_id: str = ""
    #: For a short answer: the chunk sentence it was copied from (the reader's input).
    sentence: str = ""

    def __post_init__(self) -> None:
        if not self.pair_id:
            key = f"{self.chunk_id}\0{' '.join(self.question.lower().split())}"
            self.pair_id = hashlib.sha1(key.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def chunk_hash(chunk: Chunk) -> str:
    """What "changed" means for a chunk: its text, title and heading, not its row or file."""
    key = f"{chunk.title}\0{chunk.heading}\0{' '.join(chunk.text.split())}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def pair_from_chunk(chunk: Chunk, question: str, answer: str, teacher: str, run: str = "") -> Pair:
    return Pair(
        question=" ".join(question.split()),
        answer=_LIST_MARK.sub("", " ".join(strip_citations(answer).split())),
        chunk_id=chunk.chunk_id,
        collection=chunk.collection,
        document=chunk.source,
        title=chunk.title,
        chunk_hash=chunk_hash(chunk),
        teacher=teacher,
        run=run,
    )


# ----------------------------------------------------------------------------- chunks
def iter_chunks(reader: Any, collections: Sequence[str] | None) -> Iterator[Chunk]:
    """Every chunk of the index in ``collections`` (None = all), in row order.

    Only the collections' own row ranges are read, so a restricted collection's text
    never enters this process's pair pipeline at all.
    """
    yield from reader.iter_chunks(list(collections) if collections is not None else None)


def trainable_collections(settings: Settings, available: Iterable[str]) -> list[str]:
    """The collections allowed to feed a shared adapter (see training.collections)."""
    wanted = settings.training.collections
    if wanted is None:
        wanted = settings.slack.default_collections
    available = sorted(available)
    if wanted is None:
        return available
    return [c for c in available if c in set(wanted)]


# ----------------------------------------------------------------------------- teachers
class Teacher(Protocol):
    """Writes text for chat messages; ``name`` goes into every pair's provenance."""

    name: str

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str: ...

    def count_tokens(self, text: str) -> int: ...


class GeneratorTeacher:
    """A :class:`slm.serving.generator.Generator` (the local GGUF model, or a fake) as teacher."""

    def __init__(self, generator: Any, name: str) -> None:
        self.generator = generator
        self.name = name

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        return self.generator.generate(messages, max_tokens=max_tokens).text

    def count_tokens(self, text: str) -> int:
        return self.generator.count_tokens(text)

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if callable(close):
            close()


class OpenAITeacher:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, TGI...)."""

    def __init__(
        self, base_url: str, model: str | None, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model or "default"
        self.name = f"openai:{self.model}@{self.base_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        import httpx

        # A trailing assistant message is a prefix to continue; most servers do not
        # support that, so it is sent as an instruction and prepended to the reply.
        prefix = ""
        if messages and messages[-1]["role"] == "assistant":
            prefix = messages[-1]["content"]
            messages = messages[:-1]
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        try:
            resp = self._client.post(f"{self.base_url}/chat/completions", json=body)
            resp.raise_for_status()
            text = resp.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise TeacherError(
                f"teacher {self.base_url} failed: {exc}",
                fix="check training.teacher / training.teacher_model, or use teacher = 'local'",
            ) from None
        text = text.strip()
        if prefix and not text.lower().startswith(prefix.strip().lower()):
            text = f"{prefix} {text}"
        return text

    def count_tokens(self, text: str) -> int:
        # No tokenizer for a remote model: ~0.75 words per token for English.
        return int(len(text.split()) * 1.35) + 1

    def close(self) -> None:
        self._client.close()


def make_teacher(settings: Settings, generator: Any | None = None) -> Any:
    """The teacher the settings name: the answer model, another GGUF, or an HTTP endpoint."""
    from lorebot import assets

    spec = settings.training.teacher.strip()
    if spec.startswith(("http://", "https://")):
        key = settings.training.teacher_api_key
        return OpenAITeacher(
            spec,
            settings.training.teacher_model,
            key.get_secret_value() if key else None,
            settings.training.teacher_timeout_s,
        )
    if spec == "local":
        path = assets.answer_model_path(settings.model.path)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"training.teacher {spec} is not a file",
                fix="set it to 'local', a GGUF path or an http(s) URL",
            )
    if generator is None:
        from slm.serving.generator import LlamaGenerator

        # Always the base weights: a teacher that learnt from its own pairs would drift.
        generator = LlamaGenerator.from_settings(settings, model_path=path, temperature=0.0)
    return GeneratorTeacher(generator, f"gguf:{path.name}")


# ----------------------------------------------------------------------------- generation
def _parse_question(text: str) -> str | None:
    text = re.sub(r"^\s*(question|q)\s*[:.)-]\s*", "", text.strip(), flags=re.IGNORECASE)
    text = re.split(r"\n|\b(?:answer|a)\s*:", text, maxsplit=1, flags=re.IGNORECASE)[0].strip()
    if "?" in text:
        text = text[: text.index("?") + 1]
    return text or None


def teacher_pairs(
    chunk: Chunk, teacher: Any, *, n: int = 1, context_tokens: int = 600, run: str = ""
) -> list[Pair]:
    """Questions the teacher writes about ``chunk``, answered by it from the serving prompt.

    The answer is written with exactly the prompt the bot serves with (the chunk as
    passage [1]), so what is learnt is the serving task.
    """
    pairs: list[Pair] = []
    passage = " ".join(chunk.text.split())
    where = (
        f"{chunk.title} > {chunk.heading}"
        if chunk.heading and chunk.heading != chunk.title
        else chunk.title
    )
    asked: list[str] = []
    for _ in range(n):
        user = f"Passage ({where}):\n{passage}"
        if asked:
            user += "\n\nAlready asked (write a different question):\n" + "\n".join(asked)
        msgs = [
            {"role": "system", "content": QUESTION_SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": "Question:"},
        ]
        question = _parse_question(teacher.complete(msgs, max_tokens=48))
        if not question or question in asked:
            continue
        asked.append(question)
        hit = SearchHit(chunk=chunk, score=1.0, dense_score=1.0)
        messages, _ = build_messages(
            question, [hit], [], context_tokens=context_tokens, count_tokens=teacher.count_tokens
        )
        answer = teacher.complete(messages, max_tokens=80)
        pairs.append(pair_from_chunk(chunk, question, answer, teacher.name, run))
    return pairs


_DEFINITION = re.compile(r"^(?P<subj>[A-Z][\w'’ -]{2,60}?) (?P<verb>is|are|means) (?P<rest>.{8,})$")
_MODAL = re.compile(
    r"^(?P<subj>[A-Z][\w'’ -]{2,40}?) (?P<verb>must|should|can|may|will) (?P<rest>.{8,})$"
)


#: Answer-first pairs extracted per chunk besides the heading/definition ones.
ANSWER_FIRST_PER_CHUNK = 6


def extract_pairs(
    chunk: Chunk, *, limit: int = 2, run: str = "", answer_first: int = ANSWER_FIRST_PER_CHUNK
) -> list[Pair]:
    """Questions without a model: from the chunk's structure (its heading, definitions and
    rules, at most ``limit``), then up to ``answer_first`` answer-first short-answer pairs
    (:func:`answer_first_pairs`)."""
    out = _structure_pairs(chunk, limit=limit, run=run)
    if answer_first:
        out += answer_first_pairs(chunk, limit=answer_first, run=run)
    return out


#: A list item's marker or a numbered step's number at the start of a sentence.
_LIST_MARKER = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+")
#: Where a chunk's text starts a new block: a blank line, a list item, a table row's start or end.
_BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*•+]\s|\d{1,3}[.)]\s|\|))|(?<=\|)[ \t]*\n")
#: Markdown emphasis left in parsed text (``**bold**``, ``__bold__``).
_EMPHASIS = re.compile(r"\*\*|__")


def _prose_sentences(text: str) -> list[str]:
    """The chunk's sentences as a person would quote them: without list markers, emphasis
    marks or HTML entities, and without table rows (cells joined by ``|``), which read as
    one run-on sentence and make questions nobody would ask."""
    out = []
    blocks = _BLOCK_BREAK.split(text)
    for sentence in (s for block in blocks for s in split_sentences(block)):
        if sentence.count("|") >= 2:
            continue
        clean = _EMPHASIS.sub("", _LIST_MARKER.sub("", html.unescape(sentence)))
        clean = " ".join(clean.split())
        if clean:
            out.append(clean)
    return out


def _structure_pairs(chunk: Chunk, *, limit: int, run: str) -> list[Pair]:
    sentences = [s for s in _prose_sentences(chunk.text) if 6 <= len(s.split()) <= 45]
    out: list[Pair] = []
    heading = chunk.heading.split(" > ")[-1].strip() if chunk.heading else ""
    if heading and 1 <= len(heading.split()) <= 8 and sentences:
        wanted = content_words(heading)
        best = max(sentences, key=lambda s: (len(content_words(s) & wanted), -sentences.index(s)))
        topic = heading[0].lower() + heading[1:] if not heading[:2].isupper() else heading
        title = html.unescape(chunk.title).strip()
        if not title or title.lower() == heading.lower():
            q = f"What should I know about {topic}?"
        elif title.lower().endswith(("policy", "policies", "guide", "handbook", "rules")):
            q = f"What does the {title} say about {topic}?"
        else:
            q = f"What does the {title} policy say about {topic}?"
        out.append(pair_from_chunk(chunk, q, best, "extract:heading", run))
    for s in sentences:
        if len(out) >= limit:
            break
        m = _DEFINITION.match(s) or _MODAL.match(s)
        if not m:
            continue
        subj = m.group("subj").strip()
        if _PRONOUN_START.match(subj) or len(subj.split()) > 6:
            continue
        first = subj.split()[0]
        subj_l = (
            subj if len(first) > 1 and first.isupper() else subj[0].lower() + subj[1:]
        )  # keep acronyms
        verb = m.group("verb")
        if verb in ("is", "are", "means"):
            q = f"What {verb} {subj_l}?" if verb != "means" else f"What does {subj_l} mean?"
            kind = "extract:definition"
        else:
            q = f"What {verb} {subj_l} do?"
            kind = "extract:rule"
        out.append(pair_from_chunk(chunk, q, s, kind, run))
    return out[:limit]


# Answer-first spans: (kind, pattern). Quantities before bare numbers, so "thirty days"
# is one span; names are runs of capitalised words.
_MONTHS = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December)"
)
_NUM = (
    r"(?:\d[\d,.]*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"fifteen|twenty|thirty|forty|fifty|sixty|hundred|thousand)"
)
_SPAN_PATTERNS = (
    (
        "date",
        re.compile(
            rf"\b(?:(?i:in|on|by|since|until) )?(?:(?:\d{{1,2}} )?{_MONTHS}(?: \d{{1,2}})?,? )?"
            r"(?:1[0-9]{3}|20[0-9]{2})s?\b"
        ),
    ),
    (
        "money",
        re.compile(
            rf"(?:[$€£]\s?\d[\d,.]*(?: (?:million|billion))?|{_NUM} (?:euros?|"
            r"dollars?|pounds?|cents?)\b)"
        ),
    ),
    ("percent", re.compile(r"\b\d[\d,.]*\s?(?:%|percent\b)")),
    (
        "quantity",
        # The unit is a plural ("days", not "business"), maybe after one modifier: "five
        # business days" is one span, asked as "how many business days".
        re.compile(
            rf"\b{_NUM}(?:[ -](?:{_NUM}|and))*[ -](?:(?P<mod>[a-z]{{3,}}) )?"
            r"(?P<unit>[a-z]{2,}[a-rt-z]s)\b",
            re.IGNORECASE,
        ),
    ),
    ("name", re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s(?:of\s|de\s)?[A-Z][a-z]+)+\b")),
)
_TIME_PREPOSITION = re.compile(r"^(?:in|on|by|since|until) ", re.IGNORECASE)
_GLUED = re.compile(r"[\w\-–/.]$")


def _wh_phrase(kind: str, span: str, match: re.Match[str], at_start: bool) -> str:
    if kind == "date":
        return "when" if _TIME_PREPOSITION.match(span) else "what year"
    if kind == "money":
        return "how much"
    if kind == "percent":
        return "what percentage"
    if kind == "quantity":
        unit = " ".join(w for w in (match.group("mod"), match.group("unit")) if w)
        return f"how many {unit.lower()}"
    return "who" if at_start else "what"


def answer_first_pairs(chunk: Chunk, *, limit: int = 6, run: str = "") -> list[Pair]:
    """Answer spans first (dates, amounts, quantities, names), then a question for each.

    The span is cut out of its sentence and replaced by the question phrase it answers
    ("... is forty cents per kilometre." → "... is how much per kilometre?"), so the
    question asks exactly for the span, the span is copied from the chunk, and the pair
    carries the sentence: the reader's input when serving. No model call: a night of a
    thousand chunks yields thousands of candidates in seconds.
    """
    out: list[Pair] = []
    used: set[str] = set()
    for sentence in _prose_sentences(chunk.text):
        words = sentence.split()
        if not 6 <= len(words) <= 40 or "?" in sentence:
            continue
        per_sentence = 0
        for kind, rx in _SPAN_PATTERNS:
            for m in rx.finditer(sentence):
                span = m.group().strip(" ,")
                key = span.lower()
                if not span or key in used or len(span.split()) > 8:
                    continue
                if kind == "quantity" and re.match(r"(?:1\d{3}|20\d\d)\b", span):
                    continue
                at_start = m.start() == 0
                wh = _wh_phrase(kind, span, m, at_start)
                before, after = sentence[: m.start()], sentence[m.end() :]
                if _GLUED.search(before) or re.match(r"[\w\-–/]", after):
                    continue  # part of a longer token ("PDP-11", "27-30%")
                after = after.strip().rstrip(" .!;:")
                if wh.startswith("how "):  # "between the two processes": no "the how many"
                    before = re.sub(r"\b(?:the|a|an)\s*$", "", before, flags=re.IGNORECASE)
                if after.startswith(("'s", "’s")) and wh in ("who", "what"):
                    wh, after = "whose", after[2:].strip()
                question = " ".join(x for x in (before.strip(), wh, after) if x)
                question = re.sub(r"\s+([,;:)])", r"\1", question).replace("( ", "(")
                question = question[0].upper() + question[1:] + "?"
                if len(question.split()) > 30 or len(question.split()) < 4:
                    continue
                used.add(key)
                pair = pair_from_chunk(chunk, question, span, f"answer-first:{kind}", run)
                pair.sentence = " ".join(sentence.split())
                out.append(pair)
                per_sentence += 1
                if per_sentence >= 2 or len(out) >= limit:
                    break
            if per_sentence >= 2 or len(out) >= limit:
                break
        if len(out) >= limit:
            break
    return out


# ----------------------------------------------------------------------------- filters
def format_problem(pair: Pair) -> str | None:
    """Why the pair is not a usable question/answer, or None."""
    q, a = pair.question, pair.answer
    qw, aw = len(q.split()), len(a.split())
    if not q.endswith("?"):
        return "question does not end with ?"
    if not 3 <= qw <= 30:
        return f"question has {qw} words"
    if _BAD_QUESTION.search(q):
        return "question refers to the passage or is malformed"
    if not 1 <= aw <= 60:
        return f"answer has {aw} words"
    if is_not_found(a) or a.lower().startswith(
        ("i could not", "i don't know", "i do not know", "question")
    ):
        return "answer is a refusal"
    if " ".join(q.lower().split()) == " ".join(a.lower().split()):
        return "answer repeats the question"
    if "\n" in a or a.count("?") > 1:
        return "answer is malformed"
    return None


def support_score(answer: str, chunk: Chunk) -> tuple[float, list[str]]:
    """(share of the answer's content words found in the chunk, invented numbers/names)."""
    source = [chunk.title, chunk.heading, chunk.text]
    words = content_words(answer)
    have = content_words(" ".join(source))
    share = len(words & have) / len(words) if words else 0.0
    return share, GroundingCheck(source)(answer)


def round_trip_rank(reader: Any, pair: Pair, collections: Sequence[str], k: int) -> int | None:
    """1-based rank of the pair's own chunk when its question is searched, or None."""
    hits = reader.search(pair.question, k=k, collections=list(collections), candidates=max(20, k))
    for i, hit in enumerate(hits, start=1):
        if hit.chunk.chunk_id == pair.chunk_id:
            return i
    return None


@dataclass
class FilterStats:
    """How many pairs each filter saw and dropped, by teacher kind."""

    generated: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {f: 0 for f in FILTERS})
    kept: int = 0
    by_teacher: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def count(self, pair: Pair, outcome: str) -> None:
        kind = pair.teacher.split(":", 1)[0]
        row = self.by_teacher.setdefault(kind, {"generated": 0, "kept": 0})
        if outcome == "generated":
            self.generated += 1
            row["generated"] += 1
        elif outcome == "kept":
            self.kept += 1
            row["kept"] += 1
        else:
            self.dropped[outcome] += 1
            sample = self.examples.setdefault(outcome, [])
            if len(sample) < 3:
                sample.append(pair.question)

    def pass_rates(self) -> dict[str, float | None]:
        """Share of the pairs reaching each filter that passed it."""
        rates: dict[str, float | None] = {}
        left = self.generated
        for f in FILTERS:
            rates[f] = (left - self.dropped[f]) / left if left else None
            left -= self.dropped[f]
        return rates

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "dropped": dict(self.dropped),
            "kept": self.kept,
            "pass_rates": {
                k: (round(v, 3) if v is not None else None) for k, v in self.pass_rates().items()
            },
            "by_teacher": self.by_teacher,
            "dropped_examples": self.examples,
        }


def filter_pairs(
    candidates: Sequence[Pair],
    chunks: dict[str, Chunk],
    *,
    reader: Any,
    embedder: Any,
    collections: Sequence[str],
    min_support: float,
    round_trip_k: int,
    dedupe_similarity: float,
    existing_questions: Sequence[str] = (),
    stats: FilterStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Pair], FilterStats]:
    """Run every filter in order; the survivors carry their scores."""
    import numpy as np

    stats = stats or FilterStats()
    survivors: list[Pair] = []
    for pair in candidates:
        stats.count(pair, "generated")
        problem = format_problem(pair)
        if problem:
            pair.scores["format"] = problem
            stats.count(pair, "format")
            continue
        share, invented = support_score(pair.answer, chunks[pair.chunk_id])
        pair.scores["support"] = round(share, 3)
        if share < min_support or invented:
            if invented:
                pair.scores["invented"] = invented[:5]
            stats.count(pair, "supported")
            continue
        survivors.append(pair)
    # Near duplicates: greedy, first come first kept (earlier runs' questions count as kept).
    kept: list[Pair] = []
    if survivors:
        vecs = embedder.encode([p.question for p in survivors])
        old = (
            embedder.encode(list(existing_questions))
            if existing_questions
            else np.zeros((0, vecs.shape[1]), dtype=np.float32)
        )
        bank = [v for v in old]
        for pair, vec in zip(survivors, vecs):
            best = float(max((float(vec @ b) for b in bank), default=0.0))
            pair.scores["max_similarity"] = round(best, 3)
            if best >= dedupe_similarity:
                stats.count(pair, "duplicate")
                continue
            bank.append(vec)
            kept.append(pair)
    final: list[Pair] = []
    for i, pair in enumerate(kept):
        rank = round_trip_rank(reader, pair, collections, round_trip_k)
        pair.scores["round_trip_rank"] = rank
        if progress:
            progress(i + 1, len(kept))
        if rank is None:
            stats.count(pair, "round_trip")
            continue
        stats.count(pair, "kept")
        final.append(pair)
    return final, stats


# ----------------------------------------------------------------------------- storage
def pairs_dir(settings: Settings) -> Path:
    return settings.data_dir / "refresh" / "pairs"


def write_pairs(path: Path, pairs: Iterable[Pair]) -> Path:
    """JSONL, written under a temporary name and renamed when complete."""
    from slm.training.registry import atomic_write_text

    atomic_write_text(path, "".join(p.to_json() + "\n" for p in pairs))
    return path


def read_pairs(path: Path) -> list[Pair]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Pair.from_dict(json.loads(line)))
    return out


def load_pool(settings: Settings) -> list[Pair]:
    """Every stored pair of every run, oldest run first (later duplicates of an id dropped)."""
    root = pairs_dir(settings)
    if not root.is_dir():
        return []
    seen: set[str] = set()
    pool: list[Pair] = []
    for path in sorted(root.glob("*.jsonl")):
        try:
            for pair in read_pairs(path):
                if pair.pair_id not in seen:
                    seen.add(pair.pair_id)
                    pool.append(pair)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("refresh: skipping unreadable pairs file %s: %s", path, exc)
    return pool


def feedback_pairs(settings: Settings, limit: int = 200) -> list[dict[str, str]]:
    """Questions with a right answer from users: admin-accepted corrections and 👍 answers
    first (``lorebot feedback review``), then unreviewed 👍 answers (the gate's feedback
    suite)."""
    try:
        rows = [(r["question"], r["answer"]) for r in feedback.accepted_answers(settings, limit)]
        rows += feedback.liked_answers(settings, limit)
    except feedback.FeedbackReadError as exc:
        log.warning("refresh: %s", exc.message)
        return []
    out, seen = [], set()
    for question, answer in rows:
        key = " ".join(question.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append({"question": question, "answer": strip_citations(answer)})
    return out[:limit]


def correction_pairs(
    settings: Settings, reader: Any, collections: Sequence[str], *, run: str = ""
) -> list[Pair]:
    """Training pairs from admin-accepted answers (corrections and 👍), anchored on the
    passage among the question's first five hits in ``collections`` that holds most of the
    answer's words. They skip the other filters (a person wrote or approved them) but a
    correction must be stated by those passages (one or two of them holding most of its
    words and all its numbers and names, :func:`slm.serving.reviewed.stating_passages`):
    one they do not state would teach the model to answer beyond its passage, so it is
    left out of training (logged); the answer path still shows it, cited as a reviewed
    answer (:mod:`slm.serving.reviewed`). A liked answer was read from the passages
    already. Provenance: teacher ``feedback:correction`` / ``feedback:liked`` and the
    vote's ids, the reviewer and the date in ``scores``."""
    from slm.serving.reviewed import stating_passages

    try:
        accepted = feedback.accepted_answers(settings)
    except feedback.FeedbackReadError as exc:
        log.warning("refresh: %s", exc.message)
        return []
    out: list[Pair] = []
    for row in accepted:
        hits = reader.search(row["question"], k=5, collections=list(collections), candidates=20)
        if not hits:
            continue
        answer = strip_citations(row["answer"])
        stating = stating_passages(answer, hits)
        if stating:
            chunk = stating[0].chunk
        elif row["kind"] == "liked":  # the bot's own answer, read from these passages
            chunk = max(hits, key=lambda h: support_score(answer, h.chunk)[0]).chunk
        else:
            log.info(
                "refresh: the correction to %r is not trained on: no passage states it",
                row["question"][:80],
            )
            continue
        pair = pair_from_chunk(chunk, row["question"], answer, f"feedback:{row['kind']}", run)
        pair.scores.update(
            {
                "question_id": row["question_id"],
                "user": row["user"],
                "reviewer": row["reviewer"],
                "reviewed_at": row.get("reviewed_at"),
                "support": round(support_score(answer, chunk)[0], 3),
                "stated_by": [h.chunk.chunk_id for h in stating] or None,
            }
        )
        out.append(pair)
    return out
