"""The evaluation gate: does the candidate adapter answer better than what serves now?

Each model (the base, the current adapter, the candidate) is asked the same questions
through :func:`slm.serving.answer.answer_question`, the function the workers run, so the gate
measures the bot, not a side pipeline:

* ``heldout``: pairs from this corpus that no training run used (the split is by pair id
  and fixed by the seed), searched in the real index over the trainable collections;
* ``abstention``: the same questions shown only their distractor passages: the right
  reply is an abstention (the answer path's own decision, grounding check included);
* ``golden``: the admin's golden set (JSONL, optional; ``answerable: false`` lines are
  abstention checks);
* ``feedback``: questions users rated 👍, with the rated answer as reference;
* ``xquad``: a SQuAD-format file through :mod:`slm.evals.runner` (optional): a guard that
  the adapter has not forgotten general reading comprehension.

Each model is loaded once and asked every suite. A greedy model's replies depend only on
its files and the prompt, so :class:`AnswerCache` keeps them between runs: the base model
and the serving adapter (last night's candidate) are asked again only what changed. The
answer path itself (retrieval, prompt, grounding, the quote) still runs for every probe.

The score is the mean token F1 over the document suites (heldout, golden, feedback).
The candidate is promoted only when its score beats the current one by ``margin``,
its abstention accuracy does not fall by more than ``abstention_tolerance``, and its
XQuAD F1 (when measured) does not fall by more than the same tolerance plus 0.02.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorebot.errors import LorebotError
from lorebot.settings import Settings
from lorebot.types import Question
from slm.evals import metrics
from slm.training.pairs import Pair

log = logging.getLogger(__name__)

DOC_SUITES = ("heldout", "golden", "feedback")
XQUAD_SLACK = 0.02


class GateDataError(LorebotError):
    """An evaluation input (golden set) cannot be read."""


@dataclass
class Probe:
    question: str
    reference: str | None  # None: the right reply is an abstention
    collections: list[str] | None = None


def load_golden(path: Path) -> list[Probe]:
    """The admin golden set: JSONL of {question, answer | answers, answerable?, collections?}."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GateDataError(
            f"golden set {path} cannot be read ({exc})", fix="fix training.golden_set or unset it"
        ) from None
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            question = str(d["question"]).strip()
        except (ValueError, KeyError, TypeError):
            raise GateDataError(
                f"golden set {path} line {i} is not a {{question, answer}} object",
                fix="one JSON object per line",
            ) from None
        answer = d.get("answer") or (d.get("answers") or [None])[0]
        answerable = bool(d.get("answerable", answer is not None))
        out.append(
            Probe(question, str(answer) if answerable and answer else None, d.get("collections"))
        )
    return out


@dataclass
class AbstentionProbe:
    """A question shown only passages that do not answer it (dense scores above min_score)."""

    question: str
    hits: list[Any]


@dataclass
class SuiteResult:
    n: int = 0
    f1: float | None = None
    similarity: float | None = None
    abstained: float | None = None  # share of answerable questions the model refused
    abstention: float | None = None  # share of unanswerable questions correctly refused

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class ModelScores:
    label: str
    adapter: str | None
    suites: dict[str, SuiteResult] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Share of answers to slm.evals.injection's questions that carried the injected payload.
    injection_obey: float | None = None
    #: Model calls answered from the :class:`AnswerCache` / made (not a metric).
    cached_calls: int = 0
    model_calls: int = 0

    @property
    def score(self) -> float | None:
        vals = [
            self.suites[s].f1
            for s in DOC_SUITES
            if s in self.suites and self.suites[s].f1 is not None
        ]
        return sum(vals) / len(vals) if vals else None

    @property
    def abstention(self) -> float | None:
        vals = [
            (r.abstention, r.n) for r in self.suites.values() if r.abstention is not None and r.n
        ]
        total = sum(n for _, n in vals)
        return sum(a * n for a, n in vals) / total if total else None

    def flat(self) -> dict[str, Any]:
        """One level of metrics (for the card, the table and the chart)."""
        out: dict[str, Any] = {"score": self.score, "abstention": self.abstention}
        if self.injection_obey is not None:
            out["injection_obey"] = self.injection_obey
        if self.cached_calls:  # how many of its replies the answer cache held
            out["replies_cached"] = self.cached_calls
        for name, r in self.suites.items():
            if r.f1 is not None:
                out[f"{name}_f1"] = r.f1
            if r.similarity is not None:
                out[f"{name}_similarity"] = r.similarity
            if name != "abstention" and r.abstained is not None:
                out[f"{name}_abstained"] = r.abstained
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _ask_all(
    probes: Sequence[Probe],
    retriever: Any,
    generator: Any,
    settings: Settings,
    embedder: Any,
    default_collections: list[str] | None,
    samples: list[dict[str, Any]] | None = None,
) -> SuiteResult:
    from slm.serving.answer import answer_question

    f1s, sims, refused, abst = [], [], [], []
    pairs_for_sim: list[tuple[str, str]] = []
    for i, p in enumerate(probes):
        q = Question(
            question_id=f"gate-{i}",
            text=p.question,
            collections=p.collections or default_collections,
        )
        try:
            ans = answer_question(
                q, retriever, generator, retrieval=settings.retrieval, model=settings.model
            )
        except LorebotError as exc:
            log.warning("gate: question failed: %s", exc.one_line())
            if p.reference is not None:
                f1s.append(0.0)
                refused.append(1.0)
            continue
        if p.reference is None:
            abst.append(float(ans.abstained))
            continue
        # A read-mode answer is scored on its short answer, as lorebot eval scores it.
        text = "" if ans.abstained else metrics.strip_citations(ans.short_answer or ans.answer)
        f1s.append(metrics.token_f1(text, p.reference))
        refused.append(float(ans.abstained))
        if text:
            pairs_for_sim.append((text, p.reference))
        else:
            sims.append(0.0)
        if samples is not None and len(samples) < 5:
            samples.append(
                {"question": p.question, "reference": p.reference, "answer": text or "(abstained)"}
            )
    if pairs_for_sim and embedder is not None:
        a = embedder.encode([x for x, _ in pairs_for_sim])
        b = embedder.encode([y for _, y in pairs_for_sim])
        sims.extend(float(u @ v) for u, v in zip(a, b))
    return SuiteResult(
        n=len(probes),
        f1=metrics.mean(f1s),
        similarity=metrics.mean(sims),
        abstained=metrics.mean(refused),
        abstention=metrics.mean(abst),
    )


def abstention_suite(
    examples: Sequence[AbstentionProbe], generator: Any, settings: Settings
) -> SuiteResult:
    """Distractor-only prompts through the answer path (a retriever that returns just them)."""
    from slm.serving.answer import answer_question
    from slm.serving.retrievers import StaticRetriever

    right = []
    for i, ex in enumerate(examples):
        retriever = StaticRetriever(list(ex.hits), version="gate")
        q = Question(question_id=f"gate-abst-{i}", text=ex.question)
        try:
            ans = answer_question(
                q, retriever, generator, retrieval=settings.retrieval, model=settings.model
            )
        except LorebotError:
            right.append(0.0)
            continue
        right.append(float(ans.abstained))
    return SuiteResult(n=len(examples), abstention=metrics.mean(right))


@dataclass
class GateInputs:
    """Everything the gate asks, prepared once and reused for each model."""

    heldout: list[Probe]
    no_gold: list[AbstentionProbe]
    golden: list[Probe] = field(default_factory=list)
    feedback: list[Probe] = field(default_factory=list)
    xquad_set: Any = None
    injection: bool = False  # also measure how often answers obey injected documents


def evaluate_model(
    label: str,
    generator: Any,
    inputs: GateInputs,
    *,
    retriever: Any,
    settings: Settings,
    embedder: Any,
    collections: list[str],
) -> ModelScores:
    scores = ModelScores(label=label, adapter=getattr(generator, "adapter", None))
    scores.suites["heldout"] = _ask_all(
        inputs.heldout, retriever, generator, settings, embedder, collections, scores.samples
    )
    if inputs.no_gold:
        scores.suites["abstention"] = abstention_suite(inputs.no_gold, generator, settings)
    if inputs.golden:
        scores.suites["golden"] = _ask_all(
            inputs.golden, retriever, generator, settings, embedder, collections
        )
    if inputs.feedback:
        scores.suites["feedback"] = _ask_all(
            inputs.feedback, retriever, generator, settings, embedder, collections
        )
    if inputs.xquad_set is not None:
        from slm.evals.runner import run_eval

        report = run_eval(
            settings,
            inputs.xquad_set.qa_path,
            generator=generator,
            embedder=embedder,
            progress=False,
            eval_set=inputs.xquad_set,
            history=False,
            label=f"refresh-{label}",
        )
        scores.suites["xquad"] = SuiteResult(
            n=report.answers["n"],
            f1=report.answers.get("f1"),
            similarity=None,
            abstained=report.answers.get("abstained"),
            abstention=report.abstention.get("correct"),
        )
    if inputs.injection:
        from slm.evals.injection import InjectedDocuments, injection_obey_rate

        scores.injection_obey = injection_obey_rate(
            generator, InjectedDocuments(), retrieval=settings.retrieval, model=settings.model
        ).obey_rate
    log.info(
        "gate: %s adapter=%s score=%s abstention=%s injection_obey=%s",
        label,
        scores.adapter,
        scores.score,
        scores.abstention,
        scores.injection_obey,
    )
    return scores


def decide(
    candidate: dict[str, Any],
    current: dict[str, Any],
    *,
    margin: float,
    abstention_tolerance: float,
    current_label: str = "current",
) -> tuple[bool, str]:
    """(promote?, the reason in one line) from two ``ModelScores.flat()`` dicts."""
    cand, cur = candidate.get("score"), current.get("score")
    if cand is None:
        return False, "the candidate could not be scored (no held-out questions)"
    if cur is not None and cand < cur + margin:
        return (
            False,
            f"score {cand:.3f} does not beat {current_label} {cur:.3f} by the margin {margin:+.3f}",
        )
    ca, cu = candidate.get("abstention"), current.get("abstention")
    if ca is not None and cu is not None and ca < cu - abstention_tolerance:
        return False, f"abstention accuracy regressed: {ca:.3f} < {current_label} {cu:.3f}"
    ci, ui = candidate.get("injection_obey"), current.get("injection_obey")
    if ci is not None and ui is not None and ci > ui:
        return False, f"obeys injected instructions more often: {ci:.2f} > {current_label} {ui:.2f}"
    cx, ux = candidate.get("xquad_f1"), current.get("xquad_f1")
    if cx is not None and ux is not None and cx < ux - abstention_tolerance - XQUAD_SLACK:
        return False, f"XQuAD F1 regressed: {cx:.3f} < {current_label} {ux:.3f}"
    if cur is None:
        return True, f"score {cand:.3f} ({current_label} not scored)"
    return (
        True,
        f"score {cand:.3f} beats {current_label} {cur:.3f} by {cand - cur:+.3f}"
        f" (margin {margin:+.3f})",
    )


def run_gate(
    settings: Settings,
    inputs: GateInputs,
    models: Sequence[tuple[str, Callable[[], Any]]],
    *,
    retriever: Any,
    embedder: Any,
    collections: list[str],
    progress: Callable[[str], None] | None = None,
    cache: AnswerCache | None = None,
) -> dict[str, ModelScores]:
    """Evaluate each (label, generator factory) in turn, loading one model at a time; with
    ``cache``, replies a greedy model gave to the same request before are reused."""
    out: dict[str, ModelScores] = {}
    for label, make in models:
        if progress:
            progress(label)
        gen = make()
        asked = cache.wrap(gen) if cache is not None else gen
        try:
            out[label] = evaluate_model(
                label,
                asked,
                inputs,
                retriever=retriever,
                settings=settings,
                embedder=embedder,
                collections=collections,
            )
            if isinstance(asked, _Cached):
                out[label].cached_calls = asked.hits
                out[label].model_calls = asked.misses
                log.info("gate: %s: %d replies from the cache, %d asked", label, asked.hits,
                         asked.misses)  # fmt: skip
        finally:
            close = getattr(gen, "close", None)
            if callable(close):
                close()
    if cache is not None:
        cache.save()
    return out


# ----------------------------------------------------------------------------- answer cache
class _Cached:
    """A generator whose replies come from the cache when it has them (see AnswerCache)."""

    def __init__(self, inner: Any, cache: AnswerCache, identity: str) -> None:
        self.inner = inner
        self.cache = cache
        self.identity = identity
        self.hits = 0
        self.misses = 0

    @property
    def adapter(self) -> str | None:
        return getattr(self.inner, "adapter", None)

    def __getattr__(self, name: str) -> Any:
        if name == "score_answers" and hasattr(self.inner, name):  # read mode
            return self._score_answers
        return getattr(self.inner, name)  # count_tokens, close, model_path, ...

    def _lookup(self, key: str) -> Any:
        found = self.cache.get(self.identity, key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def generate(
        self, messages: Any, *, max_tokens: int, on_token: Callable[[str], None] | None = None
    ) -> Any:
        from slm.serving.generator import Generation

        key = _key("generate", messages, max_tokens)
        found = self._lookup(key)
        if found is not None:
            if on_token is not None and found["text"]:
                on_token(found["text"])
            return Generation(**found)
        gen = self.inner.generate(messages, max_tokens=max_tokens, on_token=on_token)
        self.cache.put(
            self.identity,
            key,
            {
                "text": gen.text,
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "finish_reason": gen.finish_reason,
            },
        )
        return gen

    def _score_answers(self, messages: Any, answers: Sequence[str]) -> list[float]:
        key = _key("score", messages, list(answers))
        found = self._lookup(key)
        if found is not None:
            return list(found)
        scores = [float(x) for x in self.inner.score_answers(messages, answers)]
        self.cache.put(self.identity, key, scores)
        return scores


def _key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class AnswerCache:
    """Replies of greedy models, by model file, adapter file and exact request.

    With temperature 0 llama.cpp's reply to a prompt is fixed by the GGUF files, the
    runtime's version and the generation settings; those make the identity, the rendered
    chat messages and ``max_tokens`` the key. Only what a run asked is kept for the next
    (one JSON file per model identity in ``directory``; other identities' files are
    removed by :meth:`save`), so the cache holds a night's questions, not every night's.
    A model that samples (temperature > 0) or cannot be identified is never cached.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._loaded: dict[str, dict[str, Any]] = {}
        self._used: dict[str, dict[str, Any]] = {}

    def wrap(self, generator: Any) -> Any:
        identity = self.identity(generator)
        if identity is None:
            return generator
        if identity not in self._loaded:
            self._loaded[identity] = self._read(identity)
            self._used.setdefault(identity, {})
        return _Cached(generator, self, identity)

    @staticmethod
    def identity(generator: Any) -> str | None:
        from lorebot.files import sha256_file

        model = getattr(generator, "model_path", None)
        if model is None or getattr(generator, "temperature", None) != 0:
            return None
        lora = getattr(generator, "lora_path", None)
        try:
            import llama_cpp

            runtime = getattr(llama_cpp, "__version__", "?")
        except ImportError:
            runtime = "?"
        try:
            files = [sha256_file(Path(model)), sha256_file(Path(lora)) if lora else None]
        except OSError:
            return None
        settings = [getattr(generator, "n_ctx", None), list(getattr(generator, "stop", ()))]
        return _key(files, runtime, settings)

    def get(self, identity: str, key: str) -> Any:
        found = self._used[identity].get(key)
        if found is None:
            found = self._loaded[identity].get(key)
            if found is not None:
                self._used[identity][key] = found
        return found

    def put(self, identity: str, key: str, value: Any) -> None:
        self._used[identity][key] = value

    def _read(self, identity: str) -> dict[str, Any]:
        try:
            data = json.loads((self.directory / f"{identity}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self) -> None:
        """Keep what this run asked, each model's in its file; drop every other file."""
        from lorebot.files import atomic_write_text

        self.directory.mkdir(parents=True, exist_ok=True)
        for identity, entries in self._used.items():
            atomic_write_text(
                self.directory / f"{identity}.json", json.dumps(entries, ensure_ascii=False)
            )
        for path in self.directory.glob("*.json"):
            if path.stem not in self._used:
                path.unlink(missing_ok=True)


def probes_from_pairs(pairs: Sequence[Pair]) -> list[Probe]:
    return [Probe(p.question, p.answer) for p in pairs]
