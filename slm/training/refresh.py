"""The nightly refresh, start to finish: pairs → RAFT examples → LoRA → GGUF → parity → gate →
registry, one function per step (see :data:`STEPS`) under a small driver.

:func:`run_refresh` is the pure middle; the Celery task and ``lorebot refresh`` wrap it
(lock, Slack, Redis summary). Every step is timed and reported. Crash safety comes from
the order of writes: pairs and examples are written whole and renamed; the candidate is
built in ``adapters/tmp/`` and renamed into ``versions/`` only when complete; ``CURRENT``
flips last. A run killed anywhere leaves the serving adapter untouched and at most some
temporary litter, which the next run removes first.

One run trains one adapter per access scope that :func:`slm.training.scopes.plan` gives
(one, the intersection of every channel's collections, by default), each into its own
registry. Only a scope's own collections' chunks are read while it trains (their row
ranges), and the pair pool is re-filtered against them on every run, so a narrower
mapping or ``training.collections`` takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorebot import assets, contracts
from lorebot.errors import LorebotError
from lorebot.files import sha256_file as _sha256
from lorebot.settings import Settings
from lorebot.types import SearchHit
from slm.training import registry
from slm.training.pairs import (
    FilterStats,
    Pair,
    chunk_hash,
    correction_pairs,
    extract_pairs,
    filter_pairs,
    iter_chunks,
    load_pool,
    make_teacher,
    pairs_dir,
    teacher_pairs,
    write_pairs,
)
from slm.training.scopes import Scope, TrainingPlan

log = logging.getLogger(__name__)

STEPS = ("prepare", "pairs", "examples", "train", "export", "parity", "gate", "commit")
#: progress(step, message, detail): ``detail`` marks a status line within a step (shown in
#: the terminal, not posted to Slack) rather than a step starting.
Progress = Callable[[str, str, bool], None]
#: Room left after training for export, parity and the gate before the task's hard limit.
AFTER_TRAINING_S = 3600
#: Greedy tokens that llama.cpp + adapter and torch + peft must agree on (see the parity step).
PARITY_GREEDY_TOKENS = 8
#: Training examples per reviewed answer (a user's correction, an accepted 👍): each with
#: its passages in another order.
REVIEWED_REPEATS = 4


class RefreshAborted(LorebotError):
    """The run stopped on purpose (lost its lock, or was asked to stop)."""


def refresh_dir(settings: Settings) -> Path:
    return settings.data_dir / "refresh"


def new_run_id() -> str:
    import secrets

    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass
class RefreshReport:
    """What one run did; saved under data_dir/refresh/runs/<run>.json and summarised to Redis."""

    run: str
    status: str = "running"  # promoted | rejected | skipped | failed
    reason: str = ""
    version: str | None = None
    previous: str | None = None
    collections: list[str] = field(default_factory=list)
    #: The registry this adapter went into (None = the root one) and the channels it serves.
    scope: str | None = None
    channels: list[str] = field(default_factory=list)
    #: The other scopes this run trained (their reports as dicts), when there are several.
    scopes: list[dict[str, Any]] = field(default_factory=list)
    durations_s: dict[str, float] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, Any] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    #: Accepted corrections published for the answer path (lorebot.feedback.publish_reviewed):
    #: {"published": n, "unscoped": n}, or {"error": ...} when they could not be.
    reviewed: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_s(self) -> float:
        return sum(self.durations_s.values())

    def summary(self) -> dict[str, Any]:
        """Flat scalars for /lorebot status (lorebot:refresh:last)."""
        out: dict[str, Any] = {
            "run": self.run,
            "status": self.status,
            "version": self.version or "-",
            "reason": self.reason,
            "pairs_kept": self.pairs.get("kept", 0),
            "pairs_generated": self.pairs.get("generated", 0),
            "train_examples": self.examples.get("train", 0),
            "duration_s": round(self.total_s, 1),
            "at": self.started_at,
            "collections": ",".join(self.collections),
            "reviewed_published": self.reviewed.get("published", 0),
        }
        for other in self.scopes:
            status, version = other.get("status"), other.get("version") or ""
            out[f"scope {other.get('scope')}"] = f"{status} {version}".strip()
        for label in ("candidate", "current", "base"):
            score = self.metrics.get(label, {}).get("score")
            if score is not None:
                out[f"{label}_score"] = round(score, 4)
        return out

    def one_line(self) -> str:
        s = self.summary()
        scores = ", ".join(
            f"{k[:-6]} {s[k]:.3f}"
            for k in ("candidate_score", "current_score", "base_score")
            if k in s
        )
        return (
            f"refresh {self.run}: {self.status}"
            + (f" {self.version}" if self.version else "")
            + (f" [scope {self.scope}]" if self.scope else "")
            + f" — {self.reason}"
            + (f" ({scores})" if scores else "")
        )

    def table(self) -> Any:
        """Metrics per model, then decision and step durations (a rich renderable)."""
        from rich.console import Group
        from rich.table import Table

        labels = [label for label in ("base", "current", "candidate") if label in self.metrics]
        keys: list[str] = []
        for label in labels:
            for k in self.metrics[label]:
                if k not in keys and k != "adapter":
                    keys.append(k)
        t = Table("metric", *labels, title=f"refresh {self.run}: {self.status.upper()}")
        for k in keys:
            row = []
            for label in labels:
                v = self.metrics[label].get(k)
                row.append(f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v)))
            t.add_row(k, *row)
        d = Table("step", "seconds", title="durations")
        for step, secs in self.durations_s.items():
            d.add_row(step, f"{secs:.1f}")
            if step == "train" and "load_s" in self.training:
                d.add_row("  loading the model", f"{self.training['load_s']:.1f}")
                d.add_row("  optimiser steps", f"{self.training['train_s']:.1f}")
        d.add_row("total", f"{self.total_s:.1f}")
        p = Table("pairs", "count", title="pairs and filters")
        p.add_row(
            "new/changed chunks",
            str(self.chunks.get("new", 0)) + f" of {self.chunks.get('trainable', 0)}",
        )
        p.add_row("generated", str(self.pairs.get("generated", 0)))
        for name, n in (self.pairs.get("dropped") or {}).items():
            rate = (self.pairs.get("pass_rates") or {}).get(name)
            p.add_row(
                f"dropped: {name}", f"{n}" + (f" (pass {rate:.0%})" if rate is not None else "")
            )
        p.add_row("kept this run", str(self.pairs.get("kept", 0)))
        p.add_row(
            "pool train / held out",
            f"{self.split.get('train', 0)} / {self.split.get('heldout', 0)}",
        )
        p.add_row(
            "examples gold / no-gold",
            f"{self.examples.get('gold', 0)} / {self.examples.get('no_gold', 0)}",
        )
        if self.reviewed:
            p.add_row("reviewed answers published", str(self.reviewed.get("published", "-")))
        return Group(
            t, p, d, f"decision: [bold]{self.status}[/] {self.version or ''} — {self.reason}"
        )


def _held_out(pair: Pair, share: float, seed: int) -> bool:
    h = int(hashlib.sha1(f"{seed}:{pair.pair_id}".encode()).hexdigest()[:8], 16)
    return (h % 10_000) < share * 10_000


class _Steps:
    """Times each step and tells the caller when one starts."""

    def __init__(
        self,
        report: RefreshReport,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ):
        self.report = report
        self.progress = progress
        self.should_stop = should_stop

    def start(self, step: str, message: str) -> float:
        if self.should_stop and self.should_stop():
            raise RefreshAborted(
                f"refresh {self.report.run} stopped before {step}",
                fix="see the worker log; the lock was lost or the run cancelled",
            )
        log.info("refresh %s: %s — %s", self.report.run, step, message)
        if self.progress:
            self.progress(step, message, False)
        return time.perf_counter()

    def done(self, step: str, t0: float) -> None:
        self.report.durations_s[step] = round(
            self.report.durations_s.get(step, 0.0) + time.perf_counter() - t0, 2
        )

    def note(self, step: str, message: str) -> None:
        """A detail within a step (shown on a status line, not posted to Slack)."""
        if self.progress:
            self.progress(step, message, True)


def _load_seen(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")).get("hashes", []))
    except (FileNotFoundError, ValueError):
        return set()


def _clean_stale(settings: Settings, scope: str | None = None) -> None:
    registry.clean_tmp(settings, scope)
    root = refresh_dir(settings)
    if root.is_dir():
        for tmp in root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def lora_config(settings: Settings) -> Any:
    from slm.training.lora import LoraConfig

    t = settings.training
    return LoraConfig(
        seed=t.seed,
        rank=t.lora_rank,
        alpha=t.lora_alpha,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        max_seq_len=t.max_seq_len,
        max_steps=t.max_steps,
        min_steps=t.min_steps,
        time_budget_s=float(t.time_budget_s),
        device=t.device,
        threads=settings.model.n_threads,
    )


def _generator_factory(
    settings: Settings, lora_path: Path | None, adapter: str | None
) -> Callable[[], Any]:
    def make() -> Any:
        from slm.serving.generator import LlamaGenerator

        return LlamaGenerator.from_settings(
            settings, lora_path=lora_path, adapter=adapter, exclusive=True
        )

    return make


def run_refresh(
    settings: Settings,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    teacher: Any | None = None,
    embedder: Any | None = None,
    run_id: str | None = None,
    overrides: Mapping[str, Sequence[str] | None] | None = None,
    plan: TrainingPlan | None = None,
) -> RefreshReport:
    """One refresh: an adapter for every scope of the plan (see slm.training.scopes).

    Returns the first scope's report (status promoted / rejected / skipped) with the
    others' in ``report.scopes``; raises LorebotError (ParityError included) when a step of
    the first scope fails, after recording it (a later scope's failure is recorded in its
    report and the run goes on).

    ``overrides`` are the run-time channel mappings (``/lorebot channel set``); ``plan``
    replaces the computed one. ``teacher`` and ``embedder`` may be handed in (tests, or a
    process that has them).
    """
    run_id = run_id or new_run_id()
    # Accepted corrections are shown from tonight on whatever the adapter learns (or the
    # gate decides): first, so a failing step cannot hold them back.
    reviewed = publish_reviewed(settings)
    # The task's hard limit (workers.tasks.refresh) less room for the steps after training.
    deadline = (
        time.monotonic()
        + settings.training.time_budget_s
        + contracts.REFRESH_SLACK_S
        - AFTER_TRAINING_S
    )
    if plan is None:
        plan = plan_scopes(settings, overrides=overrides, embedder=embedder)
    if len(plan.scopes) > 1:
        log.info("refresh %s: %d adapter scopes (%s)", run_id, len(plan.scopes), plan.note)
    reports: list[RefreshReport] = []
    for i, scope in enumerate(plan.scopes or [None]):
        sub_id = run_id if i == 0 else f"{run_id}-{i}"
        try:
            reports.append(
                _run_scope(
                    settings,
                    plan,
                    scope,
                    run_id=sub_id,
                    progress=progress,
                    should_stop=should_stop,
                    teacher=teacher,
                    embedder=embedder,
                    deadline=deadline,
                )
            )
        except Exception:
            if i == 0:
                raise
            log.exception("refresh %s: scope %s failed", sub_id, scope and scope.key)
            reports.append(_failed_report(settings, sub_id))
    first = reports[0]
    first.reviewed = reviewed
    if len(reports) > 1:
        first.scopes = [r.to_dict() for r in reports[1:]]
    _save_report(settings, first)
    return first


def publish_reviewed(settings: Settings) -> dict[str, Any]:
    """Publish the accepted corrections for the answer path (slm.serving.reviewed); a
    failure is logged and recorded, never a failed refresh (training goes on without).

    Corrections given in a collection an answer-as-the-asker source feeds are withheld
    (the corrected answer may have quoted a document only its asker could read)."""
    from ingest.connectors.sync import all_sources
    from lorebot import feedback

    try:
        withheld: set[str] = set()
        for cfg, _ in all_sources(settings).values():
            if cfg.permission_mode == "asker":
                withheld |= {cfg.collection, *cfg.collections.values()}
        return feedback.publish_reviewed(settings, withheld=withheld)
    except (LorebotError, OSError) as exc:
        message = exc.one_line() if isinstance(exc, LorebotError) else str(exc)
        log.warning("refresh: reviewed answers not published: %s", message)
        return {"error": message}


def plan_scopes(
    settings: Settings,
    *,
    overrides: Mapping[str, Sequence[str] | None] | None = None,
    embedder: Any | None = None,
    available: Sequence[str] | None = None,
) -> TrainingPlan:
    """The scopes this refresh trains, from the channel mapping and the index's collections."""
    from slm.training.scopes import plan

    if available is None:
        from ingest.store import open_index

        if embedder is None:
            from ingest.embed import Embedder

            embedder = Embedder.from_settings(settings, exclusive=True)
        reader = open_index(settings, embedder=embedder)
        try:
            available = list(reader.collections())
        finally:
            reader.close()
    return plan(settings, available, overrides)


def _failed_report(settings: Settings, run_id: str) -> RefreshReport:
    runs = refresh_dir(settings) / "runs" / f"{run_id}.json"
    try:
        return RefreshReport(**json.loads(runs.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return RefreshReport(run=run_id, status="failed", reason="see the worker log")


def _run_scope(
    settings: Settings,
    plan: TrainingPlan,
    scope: Scope | None,
    *,
    run_id: str,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    teacher: Any | None,
    embedder: Any | None,
    deadline: float | None = None,
) -> RefreshReport:
    """One scope's refresh (None: nothing to train on, the run is skipped)."""
    report = RefreshReport(run=run_id)
    if scope is not None:
        report.collections = list(scope.collections)
        report.scope = plan.registry_of(scope)
        report.channels = list(scope.channels)
    steps = _Steps(report, progress, should_stop)
    closing: list[Callable[[], None]] = []
    try:
        _run(
            settings,
            report,
            steps,
            teacher=teacher,
            embedder=embedder,
            closing=closing,
            scope=scope,
            deadline=deadline,
        )
    except LorebotError as exc:
        report.status = "failed"
        report.reason = exc.one_line()
        _save_report(settings, report)
        raise
    except Exception as exc:
        report.status = "failed"
        report.reason = f"{type(exc).__name__}: {exc}"
        _save_report(settings, report)
        raise
    finally:
        for close in closing:
            close()
    _save_report(settings, report)
    return report


def _save_report(settings: Settings, report: RefreshReport) -> None:
    path = refresh_dir(settings) / "runs" / f"{report.run}.json"
    report.files["report"] = str(path)
    registry.write_json(path, report.to_dict())


@dataclass
class _Run:
    """What one run's steps hand on to each other."""

    settings: Settings
    report: RefreshReport
    steps: _Steps
    teacher: Any
    embedder: Any
    #: Closers run when the run ends, whatever happens (the index reader, a teacher).
    closing: list[Callable[[], None]]
    #: The registry this run writes to (None = the root one).
    scope: str | None = None
    reader: Any = None
    collections: list[str] = field(default_factory=list)
    chunks: dict[str, Any] = field(default_factory=dict)
    examples: list[Any] = field(default_factory=list)
    inputs: Any = None
    base: Path | None = None
    version: str | None = None
    build: Path | None = None
    config: Any = None
    adapter: Path | None = None
    #: time.monotonic() past which training takes no further step (None: no limit).
    deadline: float | None = None


def _run(
    settings: Settings,
    report: RefreshReport,
    steps: _Steps,
    *,
    teacher: Any,
    embedder: Any,
    closing: list,
    scope: Scope | None = None,
    deadline: float | None = None,
) -> None:
    """The steps in order; prepare and examples end the run early (skipped) when there is
    nothing to train on."""
    run = _Run(
        settings,
        report,
        steps,
        teacher=teacher,
        embedder=embedder,
        closing=closing,
        scope=report.scope,
        deadline=deadline,
    )
    run.collections = list(scope.collections) if scope is not None else []
    if not _prepare(run):
        return
    _pairs(run)
    if not _examples(run):
        return
    from slm.training.lora import ParityError, reuse_base_model

    _start_version(run)
    # De-quantizing the GGUF into torch costs ~20 s: do it once for training and parity.
    with reuse_base_model():
        result = _train(run)
        _export(run, result)
        parity = _parity(run, result)
    if not parity.passed:
        raise ParityError(
            f"adapter {run.version} failed the parity check (correlation "
            f"{parity.correlation_min:.4f}, greedy match {parity.greedy_match})",
            fix="nothing was promoted; check slm/training/lora.py's export against this "
            "llama.cpp version",
        )
    promote, reason = _gate(run)
    _commit(run, promote, reason)


def _prepare(run: _Run) -> bool:
    """Clean up after earlier runs, open the index, read the scope's collections' chunks.

    False (the run skipped) when the scope's collections have no chunks.
    """
    from ingest.store import open_index

    settings, report, steps = run.settings, run.report, run.steps
    t0 = steps.start("prepare", "cleaning up after earlier runs, opening the index")
    _clean_stale(settings, run.scope)
    if run.embedder is None:
        from ingest.embed import Embedder

        run.embedder = Embedder.from_settings(settings, exclusive=True)
    from ingest.permissions import AskerRetriever, Permissions

    base = open_index(settings, embedder=run.embedder)
    run.closing.append(base.close)
    # An adapter answers everyone in its scope: documents of answer-as-the-asker sources
    # that not everyone may read never enter its pairs, nor its retrieval.
    mask = Permissions(settings).for_index(base).mask(None)
    reader = run.reader = base if mask is None else AskerRetriever(base, mask)
    available = set(reader.collections())
    collections = [c for c in run.collections if c in available]
    report.collections = run.collections = collections
    # Only these collections' row ranges are read: another scope's text never enters.
    run.chunks = {c.chunk_id: c for c in iter_chunks(reader, collections)} if collections else {}
    report.chunks = {"index": reader.n, "trainable": len(run.chunks)}
    steps.done("prepare", t0)
    if not run.chunks:
        report.status, report.reason = (
            "skipped",
            "no collection of this scope has chunks (see slack.channel_collections "
            "and training.collections)",
        )
        return False
    return True


def _pairs(run: _Run) -> None:
    """Question-answer pairs from the new or changed chunks, filtered, written to the pool."""
    settings, report, steps, chunks = run.settings, run.report, run.steps, run.chunks
    t = settings.training
    seen_path = refresh_dir(settings) / "seen.json"
    seen = _load_seen(seen_path)
    fresh = [c for c in chunks.values() if chunk_hash(c) not in seen]
    report.chunks["new"] = len(fresh)
    todo = fresh[: t.max_new_chunks]
    t0 = steps.start(
        "pairs", f"writing questions for {len(todo)} new or changed chunk(s) of {len(chunks)}"
    )
    pool_before = load_pool(settings)
    candidates: list[Pair] = []
    teacher = run.teacher
    own_teacher = None
    if todo:
        if t.questions_per_chunk and teacher is None:
            own_teacher = teacher = make_teacher(settings)
            run.closing.append(own_teacher.close)
        for i, chunk in enumerate(todo, start=1):
            if t.extract_pairs:
                candidates += extract_pairs(chunk, run=report.run)
            if t.questions_per_chunk and teacher is not None:
                candidates += teacher_pairs(
                    chunk,
                    teacher,
                    n=t.questions_per_chunk,
                    context_tokens=settings.retrieval.context_tokens,
                    run=report.run,
                )
            steps.note("pairs", f"{i}/{len(todo)} chunks read, {len(candidates)} candidate pairs")
    if own_teacher is not None:
        own_teacher.close()
    kept, stats = filter_pairs(
        candidates,
        chunks,
        reader=run.reader,
        embedder=run.embedder,
        collections=run.collections,
        min_support=t.min_support,
        round_trip_k=t.round_trip_k,
        dedupe_similarity=t.dedupe_similarity,
        existing_questions=[p.question for p in pool_before],
        stats=FilterStats(),
    )
    # Reviewed by an admin (lorebot feedback review): no filter, whatever the chunks' age.
    kept += correction_pairs(settings, run.reader, run.collections, run=report.run)
    for pair in kept:
        pair.scores["teacher"] = pair.teacher
    pairs_path = pairs_dir(settings) / f"{report.run}.jsonl"
    write_pairs(pairs_path, kept)
    kept_ids = {id(p) for p in kept}
    dropped = [p for p in candidates if id(p) not in kept_ids]
    write_pairs(refresh_dir(settings) / "rejected" / f"{report.run}.jsonl", dropped)
    report.files["pairs"] = str(pairs_path)
    registry.write_json(seen_path, {"hashes": sorted(seen | {chunk_hash(c) for c in todo})})
    report.pairs = stats.to_dict()
    steps.done("pairs", t0)


def _examples(run: _Run) -> bool:
    """Split the pool (train / held out), write the RAFT examples, gather the gate's questions.

    False (the run skipped) when there are too few training or no held-out pairs.
    """
    settings, report, steps, chunks = run.settings, run.report, run.steps, run.chunks
    t = settings.training
    t0 = steps.start("examples", "splitting the pair pool and building RAFT examples")
    pool = [
        p
        for p in load_pool(settings)
        if p.chunk_id in chunks
        and chunks[p.chunk_id].collection in run.collections
        and p.chunk_hash == chunk_hash(chunks[p.chunk_id])
    ]
    # Answers a person reviewed (feedback corrections, accepted 👍) are never held out: the
    # gate's feedback suite asks them already, and one not trained on is not learned.
    heldout = [p for p in pool if not _reviewed(p) and _held_out(p, t.heldout_share, t.seed)]
    held = {p.pair_id for p in heldout}
    train = [p for p in pool if p.pair_id not in held]
    report.split = {"pool": len(pool), "train": len(train), "heldout": len(heldout)}
    if len(train) < t.min_train_pairs or not heldout:
        steps.done("examples", t0)
        report.status = "skipped"
        report.reason = (
            f"only {len(train)} training and {len(heldout)} held-out pairs "
            f"(need {t.min_train_pairs} and 1)"
        )
        return False
    from slm.training.raft import build_examples

    count_tokens = _token_counter(settings)

    def build(pairs: list[Pair], no_gold_share: float, seed: int) -> list[Any]:
        return build_examples(
            pairs,
            chunks,
            run.reader,
            run.collections,
            distractors=t.raft_distractors,
            no_gold_share=no_gold_share,
            seed=seed,
            context_tokens=settings.retrieval.context_tokens,
            count_tokens=count_tokens,
            min_support=t.min_support,
        )

    examples = build([p for p in train if not _reviewed(p)], t.raft_no_gold_share, t.seed)
    # A reviewed answer is always shown with its passage (a person asked it and the
    # documents hold it; a not-found target would teach the opposite of the correction),
    # REVIEWED_REPEATS times, its passages in another order each time: one example among
    # hundreds, seen once in a short run, barely moves the model.
    reviewed = [p for p in train if _reviewed(p)]
    n_regular = len(examples)
    for k in range(REVIEWED_REPEATS if reviewed else 0):
        examples += build(reviewed, 0.0, t.seed + 1 + k)
    run.examples = examples
    report.examples = {
        "train": len(examples),
        "gold": sum(1 for e in examples if e.kind == "gold"),
        "no_gold": sum(1 for e in examples if e.kind == "no_gold"),
        "reviewed": len(examples) - n_regular,
    }
    ex_path = refresh_dir(settings) / "examples" / f"{report.run}.jsonl"
    registry.atomic_write_text(
        ex_path,
        "".join(
            json.dumps(
                {"pair_id": e.pair_id, "kind": e.kind, "messages": e.messages}, ensure_ascii=False
            )
            + "\n"
            for e in examples
        ),
    )
    report.files["examples"] = str(ex_path)
    run.inputs = _gate_inputs(run, heldout)
    steps.done("examples", t0)
    return True


def _reviewed(pair: Pair) -> bool:
    """A pair from an answer an admin accepted (slm.training.pairs.correction_pairs)."""
    return pair.teacher.startswith("feedback:")


def _gate_inputs(run: _Run, heldout: list[Pair]) -> Any:
    """The gate's questions: held-out pairs, and the same questions with distractors only
    (plus the golden set and rated answers when configured)."""
    from slm.training.gate import AbstentionProbe, GateInputs, load_golden, probes_from_pairs
    from slm.training.raft import distractors_for

    settings = run.settings
    t = settings.training
    # The held-out pairs first in a fixed pseudo-random order (by seed and pair id): a new
    # pair displaces one only where it sorts in, so the questions stay the same from night
    # to night and the gate's answer cache still holds the base and serving models' replies.
    order = sorted(
        heldout, key=lambda p: hashlib.sha1(f"{t.seed}:gate:{p.pair_id}".encode()).hexdigest()
    )
    gate_pairs = order[: t.eval_limit]
    no_gold = []
    for p in gate_pairs:
        others = distractors_for(
            p, run.reader, run.collections, max(t.raft_distractors, 1), min_support=t.min_support
        )
        if others:
            no_gold.append(
                AbstentionProbe(
                    p.question, [SearchHit(chunk=c, score=0.9, dense_score=0.9) for c in others]
                )
            )
    inputs = GateInputs(
        heldout=probes_from_pairs(gate_pairs), no_gold=no_gold, injection=t.injection_check
    )
    if t.golden_set:
        inputs.golden = load_golden(t.golden_set)
    if t.use_feedback:
        from slm.training.gate import Probe
        from slm.training.pairs import feedback_pairs

        inputs.feedback = [
            Probe(f["question"], f["answer"]) for f in feedback_pairs(settings, t.eval_limit)
        ]
    return inputs


def _start_version(run: _Run) -> None:
    """A new adapter version, built in the registry's temporary folder until commit."""
    run.base = assets.answer_model_path(run.settings.model.path)
    run.version, run.build = registry.start_version(run.settings, scope=run.scope)
    run.report.version = run.version
    run.config = lora_config(run.settings)


def _train(run: _Run) -> Any:
    """LoRA on the RAFT examples; the result is recorded in the report."""
    from slm.training.lora import TrainExample, train_lora

    config, steps = run.config, run.steps
    t0 = steps.start(
        "train",
        f"LoRA rank {config.rank} on {len(run.examples)} examples, at most "
        f"{config.max_steps} steps / {config.time_budget_s:.0f} s of training "
        f"(at least {min(config.min_steps, config.max_steps)} steps)",
    )
    last_note = [0.0]

    def on_step(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - last_note[0] > 15 or step == total:
            last_note[0] = now
            steps.note("train", f"step {step}/{total} loss {loss:.3f}")

    result = train_lora(
        run.base,
        [TrainExample(messages=e.messages) for e in run.examples],
        run.build / "peft",
        config,
        progress=on_step,
        deadline=run.deadline,
    )
    run.report.training = {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 1),
        # Loading (tokenising, de-quantizing the model) apart from the optimiser steps,
        # which alone the time budget bounds.
        "load_s": round(result.load_seconds, 1),
        "train_s": round(result.train_seconds, 1),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "final_loss": round(result.final_loss, 4),
        "first_loss": round(result.losses[0], 4) if result.losses else None,
        "stopped_by": result.stopped_by,
        "device": result.device,
        "thread_steps": {str(k): v for k, v in sorted(result.thread_steps.items())},
    }
    steps.done("train", t0)
    return result


def _export(run: _Run, result: Any) -> None:
    """The trained adapter as a GGUF LoRA file that llama.cpp loads."""
    from slm.training.lora import export_gguf_adapter

    t0 = run.steps.start("export", "writing the GGUF adapter")
    run.adapter = export_gguf_adapter(result.peft_dir, run.base, run.build / registry.ADAPTER_FILE)
    run.steps.done("export", t0)


def _parity(run: _Run, result: Any) -> Any:
    """llama.cpp + adapter against torch + peft on the first examples' prompts (recorded)."""
    from slm.training.lora import check_parity

    t0 = run.steps.start("parity", "llama.cpp + adapter vs torch + peft on probe prompts")
    # 8 greedy tokens, not 16: measured here, Q4_1 llama.cpp and fp32 torch already split
    # near-tied tokens after 8-11 tokens with a faithful adapter (correlation 0.9992, the
    # same as the base model's own 0.9992), which is rounding, not a wrong export.
    # The base model alone is compared on the first prompt (the floor the report shows)
    # and wherever the rule needs it: the same verdict as on every prompt, at half the cost.
    # Threads follow the one thread policy (model.n_threads when set): on a busy machine
    # two threads that keep losing their core spin at every barrier, so an operator's
    # n_threads=1 must reach this step too (it used min(cpu_count, 4) whatever was set).
    parity = check_parity(
        run.base,
        result.peft_dir,
        run.adapter,
        [e.messages[:-1] for e in run.examples[:3]],
        greedy_tokens=PARITY_GREEDY_TOKENS,
        threads=run.settings.threads_per_process(exclusive=True),
        base_prompts=1,
    )
    run.report.parity = {
        "passed": parity.passed,
        "correlation_min": round(parity.correlation_min, 5),
        "greedy_match": parity.greedy_match,
        "prompts": parity.prompts,
        "base_correlation_min": round(parity.base_correlation_min, 5),
        "base_prompts": parity.base_prompts,
        "seconds": round(parity.seconds, 1),
    }
    run.steps.done("parity", t0)
    return parity


def _gate(run: _Run) -> tuple[bool, str]:
    """Base, current and candidate asked the gate's questions; whether to promote, and why."""
    settings, report, steps, inputs = run.settings, run.report, run.steps, run.inputs
    t = settings.training
    t0 = steps.start("gate", f"asking {len(inputs.heldout)} held-out questions to each model")
    from slm.training.gate import AnswerCache, decide, run_gate

    if t.xquad_path:
        from slm.evals.evalset import prepare_eval

        inputs.xquad_set = prepare_eval(
            settings,
            t.xquad_path,
            limit=t.xquad_limit,
            seed=t.seed,
            abstain=0,
            embedder=run.embedder,
            progress=False,
        )
    current = registry.current_adapter(settings, run.scope)
    report.previous = current.version if current else None
    models = [("base", _generator_factory(settings, None, None))]
    if current is not None:
        models.append(("current", _generator_factory(settings, current.path, current.version)))
    models.append(("candidate", _generator_factory(settings, run.adapter, run.version)))
    try:
        scores = run_gate(
            settings,
            inputs,
            models,
            retriever=run.reader,
            embedder=run.embedder,
            collections=run.collections,
            progress=lambda label: steps.note("gate", f"evaluating {label}"),
            cache=AnswerCache(refresh_dir(settings) / "gate-cache" / (run.scope or "root")),
        )
    finally:
        if inputs.xquad_set is not None:
            inputs.xquad_set.close()
    report.metrics = {label: s.flat() for label, s in scores.items()}
    report.samples = [dict(s, model=label) for label, sc in scores.items() for s in sc.samples[:3]]
    against = "current" if "current" in scores else "base"
    promote, reason = decide(
        report.metrics["candidate"],
        report.metrics[against],
        margin=t.margin,
        abstention_tolerance=t.abstention_tolerance,
        current_label=against,
    )
    steps.done("gate", t0)
    return promote, reason


def _commit(run: _Run, promote: bool, reason: str) -> None:
    """Record the candidate in the registry (promoting it when the gate said so), prune."""
    settings, report, steps = run.settings, run.report, run.steps
    build, version = run.build, run.version
    t0 = steps.start("commit", "recording the candidate" + (" and promoting it" if promote else ""))
    registry.write_json(
        build / registry.CONFIG_FILE,
        {
            "lora": asdict(run.config),
            "base_model": run.base.name,
            "base_sha256": _sha256(run.base),
            "adapter_sha256": _sha256(run.adapter),
            "run": report.run,
        },
    )
    card = {
        "status": "promoted" if promote else "rejected",
        "reason": reason,
        "run": report.run,
        "metrics": report.metrics,
        "durations_s": report.durations_s,
        "pairs": {"kept": report.pairs.get("kept"), "pool": report.split},
        "training": report.training,
        "parity": report.parity,
        "collections": run.collections,
        "scope": run.scope,
        "channels": report.channels,
    }
    if promote:
        card["status"] = "candidate"  # promoted below, once it is in versions/
    registry.commit_version(settings, version, build, card, scope=run.scope)
    if promote:
        registry.promote(
            settings,
            version,
            reason=reason,
            metrics=report.metrics.get("candidate"),
            scope=run.scope,
        )
    registry.prune(settings, settings.training.keep_adapters, scope=run.scope)
    report.status = "promoted" if promote else "rejected"
    report.reason = reason
    steps.done("commit", t0)
    try:
        report.files["chart"] = str(plot_history(settings, refresh_dir(settings) / "history.png"))
    except Exception as exc:  # a chart is a nicety
        log.warning("refresh %s: no chart: %s", report.run, exc)


def _token_counter(settings: Settings) -> Callable[[str], int]:
    """llama.cpp's own token count (vocab only: cheap), so passages are cut as when serving."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(assets.answer_model_path(settings.model.path)), vocab_only=True, verbose=False
    )

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


def score_history(settings: Settings) -> list[dict[str, Any]]:
    """Every candidate's scores, oldest first: from the registry cards (+ rejected ones)."""
    rows = []
    for card in registry.list_adapters(settings):
        m = card.get("metrics") or {}
        rows.append(
            {
                "version": card["version"],
                "status": card.get("status"),
                "candidate": (m.get("candidate") or {}).get("score"),
                "current": (m.get("current") or m.get("base") or {}).get("score"),
                "base": (m.get("base") or {}).get("score"),
            }
        )
    return rows


def plot_history(settings: Settings, png: Path) -> Path:
    """Score of each candidate against what served at the time; promoted ones marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = score_history(settings)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    xs = list(range(1, len(rows) + 1))
    ax.plot(xs, [r["base"] for r in rows], "--", color="grey", label="base model")
    ax.plot(xs, [r["current"] for r in rows], "-", color="tab:blue", label="serving before")
    ax.plot(xs, [r["candidate"] for r in rows], "o-", color="tab:orange", label="candidate")
    for x, r in zip(xs, rows):
        if r["status"] in ("promoted", "retired") and r["candidate"] is not None:
            ax.plot([x], [r["candidate"]], "*", color="tab:green", markersize=14)
    ax.set_xticks(xs, [r["version"][1:9] + "\n" + r["version"][10:14] for r in rows], fontsize=7)
    ax.set_ylabel("score (mean token F1)")
    ax.set_title("lorebot nightly refresh: candidates (★ promoted)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)
    return png
