"""The reader's copy candidates: the answer model *generates* the short answer, held to a copy.

Today's reader (:mod:`slm.serving.reader`) proposes phrases of the best sentence without a
model (:mod:`slm.serving.spans`) and lets the model score each. Issue 15 asked for the other
way round to be measured: let the model write the answer, but constrain its decoding so
that it can only write a run of words copied from one of the best few shortlisted
sentences. Shown several sentences at once, the model then also chooses the sentence,
which is where the reader loses most (its sentence is the answering one for ~0.7 of
XQuAD-en questions).

Two ways to hold the model to a copy, with the same language of answers (a run of one to
``max_words`` words of one sentence, or one of :func:`spans.candidates`' phrases):

- ``grammar``: a llama.cpp GBNF grammar (``llama_cpp.LlamaGrammar``) whose strings are
  exactly those spans; llama.cpp masks every token that would leave the language, so any
  tokenisation of a span is allowed;
- ``trie``: a trie of the spans' token sequences (each tokenised as the reply on its own,
  as :meth:`LlamaGenerator.score_answers` does) and a greedy decoding loop that keeps only
  the trie's next tokens (and the end of turn where a span is complete): no grammar to
  compile, one token sequence per span.

Both decode greedily with the serving reader's prompt (:func:`prompt.reader_messages`, the
shortlisted sentences given as its one "sentence", in their ranked order), so the nightly
adapter's training prompt is unchanged. Yes/no questions are not copies: they go to the
reader as today. Figures and why this is not the default: README, "### Answers"
(``bench/copy_span.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from slm.serving import spans
from slm.serving.evidence import Evidence
from slm.serving.prompt import reader_messages
from slm.serving.reader import AnswerScorer, Reading, read

Method = Literal["grammar", "trie"]
Language = Literal["words", "phrases"]

#: Shortlisted sentences the model may copy from (best first by the re-ranking).
SENTENCES = 3
#: Most words in a copied span (as many as the reader's candidate phrases may have).
MAX_WORDS = spans.MAX_WORDS
#: Phrases per sentence in the ``phrases`` language (spans.candidates, best prior first).
PHRASES = 30
#: Most tokens generated: a span of MAX_WORDS words is far shorter.
MAX_TOKENS = 48
#: Words of a sentence that may start a span (a very long "sentence" is a list or a table).
MAX_SENTENCE_WORDS = 120

_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Span:
    """A copyable answer: its text and the (ranked) sentence it is copied from."""

    text: str
    sentence: int  # index into the shortlisted sentences, 0 = best ranked


def _normal(text: str) -> str:
    """Whitespace as the reader's prompt writes the sentence."""
    return " ".join(text.split())


def word_spans(sentence: str, max_words: int = MAX_WORDS) -> list[str]:
    """Every run of one to ``max_words`` whitespace-separated words of ``sentence``, with
    the punctuation that ends the sentence (or a clause) left off its last word."""
    words = [(m.start(), m.end()) for m in _TOKEN.finditer(_normal(sentence))]
    text = _normal(sentence)
    out: list[str] = []
    seen: set[str] = set()
    for i in range(min(len(words), MAX_SENTENCE_WORDS)):
        for j in range(i, min(len(words), i + max_words)):
            piece = text[words[i][0] : words[j][1]].rstrip(".,;:!?\"')”’").lstrip("(\"'“‘")
            if piece and any(c.isalnum() for c in piece) and piece not in seen:
                seen.add(piece)
                out.append(piece)
    return out


def spans_of(
    question: str,
    sentences: Sequence[str],
    language: Language = "words",
    max_words: int = MAX_WORDS,
) -> list[Span]:
    """The copyable answers of the shortlisted ``sentences``, each once, from its best-ranked
    sentence."""
    out: list[Span] = []
    seen: set[str] = set()
    for n, sentence in enumerate(sentences):
        if language == "words":
            texts = word_spans(sentence, max_words)
        else:
            texts = [c.text for c in spans.candidates(question, _normal(sentence), PHRASES)]
        for text in texts:
            if text not in seen:
                seen.add(text)
                out.append(Span(text, n))
    return out


def copy_messages(question: str, sentences: Sequence[str]) -> list[dict[str, str]]:
    """The serving reader's prompt with the shortlisted sentences as its sentence."""
    return reader_messages(question, " ".join(_normal(s) for s in sentences))


# -- the grammar ------------------------------------------------------------------------


def _literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def gbnf(spans_: Sequence[Span]) -> str:
    """A GBNF grammar whose language is exactly the texts of ``spans_``.

    The spans are written as a trie of characters' words (shared prefixes once), which
    keeps llama.cpp's grammar stacks few: one alternative per distinct first word.
    """
    if not spans_:
        raise ValueError("no span to copy")
    trie: dict[str, Any] = {}
    for s in spans_:
        node = trie
        for piece in re.findall(r"\s*\S+", s.text):
            node = node.setdefault(piece, {})
        node[""] = {}  # the span may end here

    rules: list[str] = []

    def alternatives(node: dict[str, Any]) -> str:
        options = []
        for piece, child in node.items():
            if piece == "":
                continue
            rest = alternatives(child) if any(k != "" for k in child) else ""
            if rest:
                tail = f"({rest})" + ("?" if "" in child else "")
                options.append(f"{_literal(piece)} {tail}")
            else:
                options.append(_literal(piece))
        return " | ".join(options)

    rules.append(f"root ::= {alternatives(trie)}")
    return "\n".join(rules) + "\n"


# -- the token trie ---------------------------------------------------------------------


@dataclass
class _Node:
    next: dict[int, _Node] = field(default_factory=dict)
    ends: Span | None = None  # a span is complete here (its first, best-ranked, copy)


def token_trie(spans_: Sequence[Span], tokenize: Any) -> _Node:
    """A trie of the spans' token sequences (``tokenize``: text -> token ids, as a reply)."""
    root = _Node()
    for s in spans_:
        node = root
        for tok in tokenize(s.text):
            node = node.next.setdefault(tok, _Node())
        if node is not root and node.ends is None:
            node.ends = s
    return root


# -- decoding ---------------------------------------------------------------------------


def _grammar_decode(generator: Any, tokens: list[int], grammar_text: str) -> tuple[str, float]:
    import llama_cpp

    llm = generator.llama
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    # llama-cpp-python adds a grammar sampler without checking it parsed (a NULL sampler
    # would crash the process at the first token): parse it once here and refuse it.
    check = llama_cpp.llama_sampler_init_grammar(vocab, grammar_text.encode("utf-8"), b"root")
    if not check:
        raise ValueError("the copy grammar did not parse")
    llama_cpp.llama_sampler_free(check)
    grammar = llama_cpp.LlamaGrammar.from_string(grammar_text, verbose=False)
    out: list[int] = []
    stream = llm.generate(tokens, temp=0.0, repeat_penalty=1.0, reset=True, grammar=grammar)
    try:
        for tok in stream:
            if llama_cpp.llama_vocab_is_eog(vocab, tok) or len(out) >= MAX_TOKENS:
                break
            out.append(tok)
    finally:
        stream.close()
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    return text, math.nan  # the sampler keeps no logits: no model score


def _trie_decode(generator: Any, tokens: list[int], root: _Node) -> tuple[Span | None, float]:
    import llama_cpp
    import numpy as np

    llm = generator.llama
    end = llm.token_eos()
    # Reuse the cached prefix (the system prompt, often the whole prompt), as score_answers does.
    keep = 0
    cached = llm.input_ids[: llm.n_tokens]
    while keep < min(len(cached), len(tokens) - 1) and cached[keep] == tokens[keep]:
        keep += 1
    llm.n_tokens = keep
    llm.eval(tokens[keep:])
    n_vocab = llm.n_vocab()
    node, logprobs = root, []
    for _ in range(MAX_TOKENS):
        allowed = list(node.next) + ([end] if node.ends is not None else [])
        if not allowed:
            break
        if allowed == [end]:
            break  # nothing can follow: the span is complete without another decode
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
        )
        top = float(logits.max())
        logz = top + math.log(float(np.exp(logits - top).sum()))
        choice = allowed[int(np.argmax(logits[allowed]))]
        logprobs.append(float(logits[choice]) - logz)
        if choice == end:
            break
        node = node.next[choice]
        llm.eval([choice])
    score = sum(logprobs) / len(logprobs) if logprobs else math.nan
    return node.ends, score


def read_copy(
    question: str,
    sentences: Sequence[Evidence],
    generator: Any,
    *,
    method: Method = "grammar",
    language: Language = "words",
    sentences_read: int = SENTENCES,
    max_words: int = MAX_WORDS,
) -> Reading | None:
    """The short answer the model copies out of the best ``sentences_read`` of ``sentences``.

    ``generator`` is a :class:`LlamaGenerator` (its llama.cpp model is decoded directly).
    Yes/no questions, and shortlists with no copyable word, are read as today
    (:func:`slm.serving.reader.read`).
    """
    if method not in ("grammar", "trie"):
        raise ValueError(f"unknown copy method {method!r} (use grammar or trie)")
    if language not in ("words", "phrases"):
        raise ValueError(f"unknown copy language {language!r} (use words or phrases)")
    if sentences_read < 1 or max_words < 1:
        raise ValueError("sentences_read and max_words must be at least 1")
    shortlist = list(sentences[:sentences_read])
    if not shortlist:
        return None
    scorer: AnswerScorer = generator
    if spans.is_yes_no(question):
        return read(question, sentences, scorer)
    texts = [e.text for e in shortlist]
    copyable = spans_of(question, texts, language, max_words)
    if not copyable:
        return read(question, sentences, scorer)
    with getattr(generator, "_lock", None) or nullcontext():
        tokens = generator.tokenize(generator.render(copy_messages(question, texts)))
        if method == "grammar":
            text, score = _grammar_decode(generator, tokens, gbnf(copyable))
            text = text.strip()
            chosen = next((s for s in copyable if s.text == text), None)
            if chosen is None:  # a copy the grammar allowed but the detokeniser spelt otherwise
                chosen = next((s for s in copyable if text and text in s.text), None)
        else:
            chosen, score = _trie_decode(
                generator,
                tokens,
                token_trie(
                    copyable,
                    lambda t: generator.llama.tokenize(
                        t.encode("utf-8"), add_bos=False, special=False
                    ),
                ),
            )
    if chosen is None:
        return read(question, sentences, scorer)
    evidence = shortlist[chosen.sentence]
    return Reading(
        short=chosen.text,
        evidence=evidence,
        confidence=evidence.score,
        model_score=0.0 if math.isnan(score) else score,
    )
