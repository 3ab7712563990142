"""The prepared set: sampled questions and an open index to ask them against.

Two ways to get an index:

* ``index="temp"`` (default): every passage of the file becomes one Markdown document
  (title = the article's title) in a temporary index, so "the gold passage" is a
  document and recall@k of it is well defined even when a long passage is split into
  several chunks. A few questions (``abstain``, default 20) have their passage moved to a
  second collection that those questions may not search: the right reply is then an
  abstention, and the share of correct abstentions is reported. Only questions whose
  answer text occurs in no other passage are used for that check.
* ``index="current"``: the settings' serving index. There are no passage ids to match,
  so a retrieved chunk counts as relevant when it contains a gold answer; no abstention
  check (the harness cannot hide passages of someone else's index).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from lorebot.settings import Settings
from slm.evals import metrics
from slm.evals.squad import (
    EvalDataError,
    Passage,
    QAItem,
    choose_heldout,
    load_squad,
    sample_questions,
)

if TYPE_CHECKING:  # pragma: no cover
    from ingest.embed import Embedder

log = logging.getLogger(__name__)

INDEX_MODES = ("temp", "current")
#: Collection of the passages every question may search (temporary index).
EVAL_COLLECTION = "eval"
#: Collection of the passages hidden from the abstention-check questions.
HELDOUT_COLLECTION = "heldout"
DEFAULT_ABSTAIN = 20


@dataclass
class EvalSet:
    """Sampled questions and an open index to ask them against; reusable across runs.

    Build it with :func:`prepare_eval`, close it (or use ``with``) to delete a temporary
    index. The context-budget benchmark asks the same set with several settings.
    """

    qa_path: Path
    mode: str
    questions: list[QAItem]
    heldout: list[QAItem]
    retriever: Any
    passages: dict[str, Passage]
    total_questions: int
    seed: int
    limit: int | None
    source_to_pid: dict[str, str] = field(default_factory=dict)
    index_build_s: float = 0.0
    workdir: Path | None = None

    @property
    def index_version(self) -> str | None:
        return getattr(self.retriever, "version", None)

    def relevant(self, item: QAItem, chunk: Any) -> bool:
        """Whether a retrieved chunk is the question's gold passage (or holds its answer)."""
        if self.mode == "temp":
            return self.source_to_pid.get(chunk.source) == item.pid
        return metrics.contains_answer(chunk.text, item.answers)

    def close(self) -> None:
        close = getattr(self.retriever, "close", None)
        if callable(close):
            close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_passage(path: Path, passage: Passage) -> None:
    # JSON strings are valid YAML double-quoted scalars: any title survives front matter.
    path.write_text(
        f"---\ntitle: {json.dumps(passage.title)}\n---\n\n{passage.text}\n", encoding="utf-8"
    )


def prepare_eval(
    settings: Settings,
    qa_path: Path,
    *,
    index: str = "temp",
    limit: int | None = None,
    seed: int = 0,
    abstain: int = DEFAULT_ABSTAIN,
    embedder: Embedder | None = None,
    progress: bool = True,
) -> EvalSet:
    """Load and sample the questions and open (or build) the index they are asked against."""
    if index not in INDEX_MODES:
        raise EvalDataError(
            f"unknown index mode {index!r}", fix="use --index temp or --index current"
        )
    qa_path = Path(qa_path)
    passages, items = load_squad(qa_path)
    questions = sample_questions(items, limit, seed)
    by_pid = {p.pid: p for p in passages}

    if index == "current":
        from ingest import open_index

        if abstain:
            log.info(
                "eval: no abstention check with --index current (its passages cannot be hidden)"
            )
        reader = open_index(settings, embedder=embedder)
        return EvalSet(qa_path, "current", questions, [], reader, by_pid, len(items), seed, limit)

    from ingest import Source, build_index, open_index

    # Hide at most a third of the passages, so the index stays the file's index.
    heldout = choose_heldout(passages, items, min(abstain, max(1, len(passages) // 3)), seed)
    if abstain and len(heldout) < abstain:
        log.warning("eval: only %d of %d abstention questions qualify", len(heldout), abstain)
    hidden = {q.pid for q in heldout}
    workdir = Path(tempfile.mkdtemp(prefix="lorebot-eval-"))
    try:
        started = time.perf_counter()
        roots = {
            EVAL_COLLECTION: workdir / "docs" / EVAL_COLLECTION,
            HELDOUT_COLLECTION: workdir / "docs" / HELDOUT_COLLECTION,
        }
        for root in roots.values():
            root.mkdir(parents=True)
        source_to_pid: dict[str, str] = {}
        for p in passages:
            name = f"{p.pid}.md"
            _write_passage(
                roots[HELDOUT_COLLECTION if p.pid in hidden else EVAL_COLLECTION] / name, p
            )
            source_to_pid[name] = p.pid
        temp_settings = settings.model_copy(update={"data_dir": workdir / "data"})
        sources = [Source(roots[EVAL_COLLECTION], EVAL_COLLECTION)]
        if hidden:
            sources.append(Source(roots[HELDOUT_COLLECTION], HELDOUT_COLLECTION))
        report = build_index(temp_settings, sources, progress=progress, embedder=embedder)
        if report.failed:
            log.warning("eval: %d of %d passages failed to index", report.failed, len(passages))
        reader = open_index(temp_settings, embedder=embedder)
        build_s = time.perf_counter() - started
        log.info(
            "eval: temporary index %s of %d passages (%d chunks, %d held out) in %.1f s",
            reader.version,
            len(passages),
            report.chunks_total,
            len(hidden),
            build_s,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return EvalSet(
        qa_path,
        "temp",
        questions,
        heldout,
        reader,
        by_pid,
        len(items),
        seed,
        limit,
        source_to_pid=source_to_pid,
        index_build_s=build_s,
        workdir=workdir,
    )
