"""``lorebot demo --learn``: the nightly loop on the sample handbook, in a few minutes.

One small refresh (:func:`slm.training.refresh.run_refresh`, the nightly code unchanged)
runs on the index ``lorebot demo`` builds, under a demo budget (:func:`learn_settings`):
pairs from extraction only (no teacher-model calls), a short LoRA run, the real export,
parity check, gate and registry. The same questions are answered through the answer path
before (by what serves now) and after (by the new candidate adapter, whatever the gate
decided), so the output shows what the loop changed and whether the gate let it serve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorebot.settings import Settings
from lorebot.types import Answer, Question

#: The training budget of the demo's refresh (seconds of optimiser steps).
DEFAULT_BUDGET_S = 60
#: Held-out questions the demo's gate asks each model (the nightly default is 40).
EVAL_LIMIT = 8


def learn_settings(settings: Settings, budget_s: float = DEFAULT_BUDGET_S) -> Settings:
    """The demo's refresh settings: the nightly ones under a small budget.

    Extraction-only pairs (the teacher model would take minutes), at most ``budget_s`` of
    optimiser steps (and at least 2 of them), a few gate questions, no XQuAD guard and no
    injection check (both need minutes on two cores; the nightly run keeps them).
    """
    t = settings.training.model_copy(
        update={
            "collections": ["handbook"],
            "questions_per_chunk": 0,
            "extract_pairs": True,
            "time_budget_s": max(1, int(budget_s)),
            "min_steps": 2,
            "max_steps": max(2, min(settings.training.max_steps, 60)),
            "max_seq_len": min(settings.training.max_seq_len, 384),
            "eval_limit": EVAL_LIMIT,
            "xquad_path": None,
            "injection_check": False,
        }
    )
    return settings.model_copy(update={"training": t})


@dataclass
class LearnResult:
    questions: list[str]
    before: list[Answer]
    after: list[Answer]
    #: The refresh's report (``RefreshReport``): status promoted / rejected / skipped.
    report: Any
    before_adapter: str | None
    after_adapter: str | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.report.status == "promoted"


def answer_all(
    settings: Settings,
    questions: Sequence[str],
    *,
    lora_path: Any = None,
    adapter: str | None = None,
    embedder: Any = None,
) -> list[Answer]:
    """Each question through the answer path (the index and one model, loaded once)."""
    from ingest.store import open_index
    from slm.serving.answer import answer_question
    from slm.serving.generator import LlamaGenerator

    reader = open_index(settings, embedder=embedder)
    gen = LlamaGenerator.from_settings(settings, lora_path=lora_path, adapter=adapter)
    try:
        return [
            answer_question(
                Question(text=q, collections=["handbook"]),
                reader,
                gen,
                retrieval=settings.retrieval,
                model=settings.model,
            )
            for q in questions
        ]
    finally:
        gen.close()
        reader.close()


def run_learn_demo(
    settings: Settings,
    questions: Sequence[str],
    *,
    budget_s: float = DEFAULT_BUDGET_S,
    progress: Callable[[str, str, bool], None] | None = None,
    embedder: Any = None,
    refresh: Callable[..., Any] | None = None,
) -> LearnResult:
    """Before answers, one demo refresh, after answers (the index must exist: the demo's
    ingest step builds it). ``progress(step, message, detail)`` follows every step."""
    from slm.training import registry
    from slm.training.refresh import run_refresh

    s = learn_settings(settings, budget_s)
    say = progress or (lambda step, message, detail: None)
    seconds: dict[str, float] = {}
    if embedder is None:
        from ingest.embed import Embedder

        embedder = Embedder.from_settings(s)

    serving = registry.current_adapter(s)
    t0 = time.perf_counter()
    say("before", f"answering {len(questions)} questions with {_name(serving)}", False)
    before = answer_all(
        s,
        questions,
        lora_path=serving.path if serving else None,
        adapter=serving.version if serving else None,
        embedder=embedder,
    )
    seconds["before"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = (refresh or run_refresh)(s, progress=say, embedder=embedder)
    seconds["refresh"] = time.perf_counter() - t0

    after_path, after_version = None, None
    if report.status in ("promoted", "rejected") and report.version:
        after_version = report.version
        after_path = registry.version_dir(s, report.version) / registry.ADAPTER_FILE
    elif serving is not None:
        after_path, after_version = serving.path, serving.version
    t0 = time.perf_counter()
    say("after", f"answering the same questions with adapter {after_version or 'none'}", False)
    after = answer_all(s, questions, lora_path=after_path, adapter=after_version, embedder=embedder)
    seconds["after"] = time.perf_counter() - t0
    return LearnResult(
        questions=list(questions),
        before=before,
        after=after,
        report=report,
        before_adapter=serving.version if serving else None,
        after_adapter=after_version,
        seconds=seconds,
    )


def _name(ref: Any) -> str:
    return f"adapter {ref.version}" if ref is not None else "the base model"
