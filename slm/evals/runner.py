"""Running an evaluation: every sampled question through the bot's answer path, then scored.

Each question goes through :func:`slm.serving.answer.answer_question`, the function the bot's
worker calls, so the figures are the bot's. Answerable questions are also searched apart
from (and before) the answer path, for recall@k of the gold passage.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lorebot.errors import LorebotError
from lorebot.settings import Settings, cpu_count
from lorebot.types import Answer, Question
from slm.evals import metrics
from slm.evals.evalset import DEFAULT_ABSTAIN, EVAL_COLLECTION, EvalSet, prepare_eval
from slm.evals.history import save_report
from slm.evals.report import TIMING_KEYS, EvalItem, EvalReport
from slm.evals.squad import QAItem

if TYPE_CHECKING:  # pragma: no cover
    from ingest.embed import Embedder
    from slm.serving.answer import Retriever
    from slm.serving.generator import Generator

log = logging.getLogger(__name__)

#: Ranks looked at for recall@k.
RECALL_KS = (1, 5)


def _default_generator(settings: Settings) -> Generator:
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator.from_settings(settings)
    gen.load()
    return gen


def _default_embedder(settings: Settings) -> Embedder:
    from ingest.embed import Embedder

    return Embedder.from_settings(settings)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}", style="cyan"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _ask(
    eval_set: EvalSet,
    item: QAItem,
    kind: str,
    retriever: Retriever,
    generator: Generator,
    settings: Settings,
) -> tuple[EvalItem, Answer | None]:
    from slm.serving.answer import answer_question

    collections = [EVAL_COLLECTION] if kind == "heldout" else None
    row = EvalItem(qid=item.qid, kind=kind, question=item.question, golds=list(item.answers))
    if kind == "answerable":
        # Ranking for recall, searched apart from (and before) the answer path so the bot's
        # own search and its timings stay exactly as in production.
        k = max(max(RECALL_KS), settings.retrieval.top_k)
        hits = retriever.search(
            item.question, k=k, collections=None, candidates=settings.retrieval.candidates
        )
        row.gold_rank = metrics.first_relevant_rank(
            [eval_set.relevant(item, h.chunk) for h in hits]
        )
    question = Question(
        question_id=f"eval-{item.qid}"[:40], text=item.question, collections=collections
    )
    try:
        answer = answer_question(
            question, retriever, generator, retrieval=settings.retrieval, model=settings.model
        )
    except LorebotError as exc:
        row.error = exc.one_line()
        log.warning("eval: question %s failed: %s", item.qid, row.error)
        return row, None
    row.abstained = answer.abstained
    row.timings_ms = {k: round(v, 2) for k, v in answer.timings_ms.items()}
    row.prompt_tokens = answer.prompt_tokens
    row.completion_tokens = answer.completion_tokens
    if not answer.abstained:
        row.answer = metrics.strip_citations(answer.answer)
        row.short_answer = answer.short_answer
        # EM and F1 judge the short answer (the phrase users read first) when there is one;
        # "contains" and the similarity judge the whole answer text.
        scored = row.short_answer if row.short_answer else row.answer
        row.em = metrics.exact_match(scored, item.answers)
        row.f1 = metrics.token_f1(scored, item.answers)
        row.f1_whole = metrics.token_f1(row.answer, item.answers)
        row.contains = metrics.contains_answer(row.answer, item.answers)
        if eval_set.mode == "temp":
            row.cited_gold = any(
                c.cited and eval_set.source_to_pid.get(c.source) == item.pid
                for c in answer.citations
            )
    return row, answer


def _score_similarity(rows: list[EvalItem], embedder: Embedder) -> None:
    """Cosine of each answer to its closest gold answer; abstentions and errors stay at 0."""
    answered = [r for r in rows if r.answer and not r.abstained]
    if not answered:
        return
    golds = sorted({g for r in answered for g in r.golds})
    gold_vecs = dict(zip(golds, embedder.encode(golds)))
    answer_vecs = embedder.encode([r.answer for r in answered])
    for row, vec in zip(answered, answer_vecs):
        row.cosine = max(float(vec @ gold_vecs[g]) for g in row.golds)
    for row in rows:
        row.bucket = metrics.similarity_bucket(row.cosine)


def _summarise(
    eval_set: EvalSet,
    rows: list[EvalItem],
    settings: Settings,
    generator: Generator,
    *,
    started_at: str,
    duration_s: float,
    load_start: tuple[float, float, float] | None,
    label: str | None,
) -> EvalReport:
    answerable = [r for r in rows if r.kind == "answerable"]
    heldout = [r for r in rows if r.kind == "heldout"]
    n = len(answerable)
    ranks = [r.gold_rank for r in answerable]
    retrieval = {
        f"recall@{k}": (
            sum(1 for rank in ranks if rank is not None and rank <= k) / n if n else None
        )
        for k in RECALL_KS
    }
    retrieval["relevance"] = (
        "gold passage" if eval_set.mode == "temp" else "chunk contains a gold answer"
    )
    answered = [r for r in answerable if not r.abstained and r.error is None]
    cited = [r.cited_gold for r in answered if r.cited_gold is not None]
    answers = {
        "n": n,
        "em": metrics.mean(r.em for r in answerable),
        "f1": metrics.mean(r.f1 for r in answerable),
        "contains": metrics.mean(float(r.contains) for r in answerable),
        "f1_answered": metrics.mean(r.f1 for r in answered),
        "f1_whole": metrics.mean(r.f1_whole for r in answerable),
        "cited_gold": metrics.mean(float(c) for c in cited),
        "abstained": metrics.mean(float(r.abstained) for r in answerable),
        "errors": sum(1 for r in rows if r.error),
    }
    similarity = metrics.bucket_shares([r.cosine for r in answerable])
    if heldout:
        abstention = {
            "n": len(heldout),
            "correct": metrics.mean(float(r.abstained) for r in heldout),
            "before_model": metrics.mean(
                float(r.abstained and not r.model_called) for r in heldout
            ),
        }
    else:
        abstention = {
            "n": 0,
            "correct": None,
            "note": "not run" if eval_set.mode == "temp" else "not with --index current",
        }
    asked = [r for r in answerable if r.error is None]
    latency = {
        key: metrics.latency_summary(r.timings_ms[key] for r in asked if key in r.timings_ms)
        for key in TIMING_KEYS
    }
    called = [r for r in rows if r.model_called]
    tokens = {
        "mean_prompt": metrics.mean(r.prompt_tokens for r in called),
        "p95_prompt": metrics.percentile((r.prompt_tokens for r in called), 95),
        "mean_completion": metrics.mean(r.completion_tokens for r in called),
        "model_calls": len(called),
    }
    gen_path = getattr(generator, "model_path", None)
    # The mode the answers were made in: a generator that cannot score answers generates.
    mode = settings.model.answer_mode
    if not hasattr(generator, "score_answers"):
        mode = "generate"
    config = {
        "model": Path(gen_path).name if gen_path else type(generator).__name__,
        "adapter": getattr(generator, "adapter", None),
        "threads": getattr(generator, "n_threads", None),
        "top_k": settings.retrieval.top_k,
        "candidates": settings.retrieval.candidates,
        "context_tokens": settings.retrieval.context_tokens,
        "min_score": settings.retrieval.min_score,
        "answer_mode": mode,
        "min_confidence": settings.retrieval.min_confidence,
        "max_tokens": settings.model.max_tokens,
        "temperature": settings.model.temperature,
        "index_build_s": round(eval_set.index_build_s, 1),
    }
    load_end = _loadavg()
    machine = {
        "cpus": cpu_count(),
        "loadavg_start": [round(v, 2) for v in load_start] if load_start else None,
        "loadavg_end": [round(v, 2) for v in load_end] if load_end else None,
    }
    return EvalReport(
        qa_file=str(eval_set.qa_path),
        index_mode=eval_set.mode,
        index_version=eval_set.index_version,
        questions_in_file=eval_set.total_questions,
        seed=eval_set.seed,
        limit=eval_set.limit,
        config=config,
        retrieval=retrieval,
        answers=answers,
        similarity=similarity,
        abstention=abstention,
        latency_ms=latency,
        tokens=tokens,
        items=rows,
        started_at=started_at,
        duration_s=duration_s,
        machine=machine,
        label=label,
    )


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platforms without it
        return None


def run_eval(
    settings: Settings,
    qa_path: Path,
    *,
    index: str = "temp",
    limit: int | None = None,
    seed: int = 0,
    generator: Generator | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
    abstain: int = DEFAULT_ABSTAIN,
    eval_set: EvalSet | None = None,
    history: bool = True,
    label: str | None = None,
) -> EvalReport:
    """Ask every sampled question through the bot's answer path and score the answers.

    ``generator`` defaults to the configured GGUF model (pass one carrying a LoRA adapter
    to evaluate it); ``embedder`` to MiniLM. ``eval_set`` reuses a prepared set and its
    index (``index``/``limit``/``seed``/``abstain`` are then ignored) and is left open.
    ``history`` appends the summary to ``<data_dir>/eval/history.jsonl`` and keeps the
    full report under ``<data_dir>/eval/runs/``. Raises EvalDataError for an unusable QA
    file and IndexMissingError for ``index="current"`` without an index.
    """
    started = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    load_start = _loadavg()
    embedder = embedder or _default_embedder(settings)
    own_set = eval_set is None
    if eval_set is None:
        eval_set = prepare_eval(
            settings,
            qa_path,
            index=index,
            limit=limit,
            seed=seed,
            abstain=abstain,
            embedder=embedder,
            progress=progress,
        )
    own_generator = generator is None
    try:
        generator = generator or _default_generator(settings)
        plan = [(q, "answerable") for q in eval_set.questions] + [
            (q, "heldout") for q in eval_set.heldout
        ]
        rows: list[EvalItem] = []
        with _progress(progress) as bar:
            task = bar.add_task("asking", total=len(plan), status="")
            for item, kind in plan:
                row, _ = _ask(eval_set, item, kind, eval_set.retriever, generator, settings)
                rows.append(row)
                done = [r for r in rows if r.kind == "answerable"]
                f1 = metrics.mean(r.f1 for r in done)
                bar.update(task, advance=1, status=f"F1 {f1:.3f}" if f1 is not None else "")
                if len(rows) % max(1, len(plan) // 10) == 0:  # a trace for logs, where no bar shows
                    log.info("eval: %d/%d asked, F1 so far %.3f", len(rows), len(plan), f1 or 0.0)
        _score_similarity(rows, embedder)
    finally:
        if own_set:
            eval_set.close()
        if own_generator and generator is not None and hasattr(generator, "close"):
            generator.close()
    report = _summarise(
        eval_set,
        rows,
        settings,
        generator,
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        load_start=load_start,
        label=label,
    )
    if history:
        save_report(settings, report)
    log.info(
        "eval: %d questions recall@5=%.3f f1=%.3f em=%.3f acceptable=%.3f in %.0f s",
        report.answers["n"],
        report.retrieval.get("recall@5") or 0.0,
        report.answers.get("f1") or 0.0,
        report.answers.get("em") or 0.0,
        report.similarity.get("acceptable", 0.0),
        report.duration_s,
    )
    return report
