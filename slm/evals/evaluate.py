"""The evaluation harness: a SQuAD v1.1 file in, retrieval and answer quality and latency out.

Every question goes through :func:`slm.serving.answer.answer_question`, the function the bot's
worker calls, with the real index and generator (or injected ones: the nightly job hands
in a generator that carries a new LoRA adapter, the context-budget benchmark hands in
different retrieval settings over one prepared index). So the figures are the bot's, not
those of a separate evaluation pipeline that could drift from it.

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

Each run appends one summary line to ``<data_dir>/eval/history.jsonl`` (and redraws
``history.png`` once there are two or more) and writes the full report, with every
question's answer and scores, to ``<data_dir>/eval/runs/``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from lorebot.errors import LorebotError
from lorebot.settings import Settings, cpu_count
from lorebot.types import Answer, Question
from slm.evals import metrics

if TYPE_CHECKING:  # pragma: no cover
    from ingest.embed import Embedder
    from slm.serving.answer import Retriever
    from slm.serving.generator import Generator

log = logging.getLogger(__name__)

INDEX_MODES = ("temp", "current")
#: Collection of the passages every question may search (temporary index).
EVAL_COLLECTION = "eval"
#: Collection of the passages hidden from the abstention-check questions.
HELDOUT_COLLECTION = "heldout"
#: Ranks looked at for recall@k.
RECALL_KS = (1, 5)
DEFAULT_ABSTAIN = 20
HISTORY_FILE = "history.jsonl"
HISTORY_CHART = "history.png"
#: The timings from Answer.timings_ms that the report summarises, in pipeline order.
TIMING_KEYS = (
    "total",
    "retrieve",
    "prompt_build",
    "generate",
    "first_token",
    "prompt_eval",
    "decode",
)


class EvalDataError(LorebotError):
    """The QA file cannot be used for an evaluation."""


# ----------------------------------------------------------------------------- the QA file
@dataclass(frozen=True)
class Passage:
    """One context paragraph of the QA file."""

    pid: str
    title: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """One question with its gold answers and the passage they come from."""

    qid: str
    question: str
    answers: tuple[str, ...]
    pid: str


def load_squad(path: Path) -> tuple[list[Passage], list[QAItem]]:
    """Passages and questions of a SQuAD v1.1-format file, in file order.

    Raises EvalDataError (with the fix) for a missing file, bad JSON or another layout.
    """
    path = Path(path)
    fix = "pass a SQuAD v1.1 JSON file: {data: [{title, paragraphs: [{context, qas: [{question, answers: [{text}]}]}]}]}"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalDataError(f"QA file {path} does not exist", fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(
            f"QA file {path} cannot be read ({exc})",
            fix="check the file's permissions and encoding",
        ) from None
    except json.JSONDecodeError as exc:
        raise EvalDataError(
            f"QA file {path} is not valid JSON (line {exc.lineno})", fix=fix
        ) from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise EvalDataError(f"QA file {path} has no 'data' list", fix=fix)
    passages: list[Passage] = []
    items: list[QAItem] = []
    try:
        for a, article in enumerate(data):
            title = " ".join(
                str(article.get("title") or f"Article {a + 1}").replace("_", " ").split()
            )
            for paragraph in article["paragraphs"]:
                context = str(paragraph["context"]).strip()
                if not context:
                    continue
                pid = f"p{len(passages):05d}"
                passages.append(Passage(pid, title, context))
                for q in paragraph.get("qas", []):
                    answers = tuple(
                        dict.fromkeys(
                            str(x["text"]).strip()
                            for x in q.get("answers", [])
                            if str(x["text"]).strip()
                        )
                    )
                    text = " ".join(str(q["question"]).split())
                    if not answers or not text:
                        continue  # SQuAD v2 "impossible" questions have no answers
                    items.append(
                        QAItem(str(q.get("id") or f"q{len(items):05d}"), text, answers, pid)
                    )
    except (KeyError, TypeError, AttributeError) as exc:
        raise EvalDataError(
            f"QA file {path} is not in SQuAD v1.1 format (missing {exc})", fix=fix
        ) from None
    if not items:
        raise EvalDataError(f"QA file {path} holds no answerable question", fix=fix)
    return passages, items


def sample_questions(items: Sequence[QAItem], limit: int | None, seed: int) -> list[QAItem]:
    """``limit`` questions drawn without replacement with ``seed`` (all, in order, when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise EvalDataError(
            f"--limit must be at least 1 (got {limit})", fix="pass a positive --limit"
        )
    return random.Random(seed).sample(list(items), limit)


def choose_heldout(
    passages: Sequence[Passage], items: Sequence[QAItem], n: int, seed: int
) -> list[QAItem]:
    """``n`` questions (on distinct passages) whose passage will be hidden from them.

    Only questions whose gold answers occur in no other passage qualify: otherwise a
    sibling paragraph could legitimately answer them and abstaining would be wrong.
    """
    if n <= 0:
        return []
    texts = {p.pid: p.text for p in passages}
    order = list(items)
    random.Random(seed + 1_000_003).shuffle(order)
    chosen: list[QAItem] = []
    used: set[str] = set()
    for item in order:
        if item.pid in used:
            continue
        if any(
            metrics.contains_answer(t, item.answers) for pid, t in texts.items() if pid != item.pid
        ):
            continue
        chosen.append(item)
        used.add(item.pid)
        if len(chosen) == n:
            break
    return chosen


# ----------------------------------------------------------------------------- the prepared set
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


# ----------------------------------------------------------------------------- the report
@dataclass
class EvalItem:
    """One question as asked, answered and scored."""

    qid: str
    kind: str  # "answerable" or "heldout" (its passage hidden: abstaining is right)
    question: str
    golds: list[str]
    answer: str = ""
    abstained: bool = False
    error: str | None = None
    em: float = 0.0
    f1: float = 0.0
    contains: bool = False
    cosine: float = 0.0
    bucket: str = "unacceptable"
    gold_rank: int | None = None
    cited_gold: bool | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def model_called(self) -> bool:
        return "generate" in self.timings_ms


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


@dataclass
class EvalReport:
    """The outcome of one evaluation run: summary figures plus every item."""

    qa_file: str
    index_mode: str
    index_version: str | None
    questions_in_file: int
    seed: int
    limit: int | None
    config: dict[str, Any]
    retrieval: dict[str, Any]
    answers: dict[str, Any]
    similarity: dict[str, float]
    abstention: dict[str, Any]
    latency_ms: dict[str, dict[str, Any]]
    tokens: dict[str, Any]
    items: list[EvalItem]
    started_at: str
    duration_s: float
    machine: dict[str, Any]
    label: str | None = None

    # -- machine-readable
    def summary(self) -> dict[str, Any]:
        """The flat figures one history line keeps."""
        return _round(
            {
                "at": self.started_at,
                "label": self.label,
                "qa_file": Path(self.qa_file).name,
                "index": self.index_mode,
                "adapter": self.config.get("adapter"),
                "n": self.answers.get("n"),
                "recall@1": self.retrieval.get("recall@1"),
                "recall@5": self.retrieval.get("recall@5"),
                "em": self.answers.get("em"),
                "f1": self.answers.get("f1"),
                "contains": self.answers.get("contains"),
                "acceptable": self.similarity.get("acceptable"),
                "somewhat": self.similarity.get("somewhat"),
                "unacceptable": self.similarity.get("unacceptable"),
                "abstained": self.answers.get("abstained"),
                "correct_abstention": self.abstention.get("correct"),
                "p50_total_ms": self.latency_ms.get("total", {}).get("p50"),
                "p95_total_ms": self.latency_ms.get("total", {}).get("p95"),
                "p50_first_token_ms": self.latency_ms.get("first_token", {}).get("p50"),
                "mean_prompt_tokens": self.tokens.get("mean_prompt"),
                "context_tokens": self.config.get("context_tokens"),
                "top_k": self.config.get("top_k"),
            }
        )

    def to_dict(self, *, items: bool = True) -> dict[str, Any]:
        """JSON-ready report (``lorebot eval --json``); ``items=False`` leaves out per-question rows."""
        out: dict[str, Any] = {
            "qa_file": self.qa_file,
            "label": self.label,
            "index": {"mode": self.index_mode, "version": self.index_version},
            "questions_in_file": self.questions_in_file,
            "seed": self.seed,
            "limit": self.limit,
            "config": self.config,
            "retrieval": _round(self.retrieval),
            "answers": _round(self.answers),
            "similarity": _round(self.similarity),
            "abstention": _round(self.abstention),
            "latency_ms": {k: _round(v, 1) for k, v in self.latency_ms.items()},
            "tokens": _round(self.tokens, 1),
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 1),
            "machine": self.machine,
        }
        if items:
            out["items"] = [_round(asdict(i)) for i in self.items]
        return out

    # -- for people
    def table(self):
        """A rich Table of every summary figure."""
        from rich.table import Table

        def pct(v: Any) -> str:
            return "–" if v is None else f"{100 * v:.1f}%"

        def num(v: Any, fmt: str = "{:.3f}") -> str:
            return "–" if v is None else fmt.format(v)

        def ms(v: Any) -> str:
            return "–" if v is None else f"{v:,.0f} ms"

        title = (
            f"lorebot eval · {Path(self.qa_file).name} · {self.answers.get('n', 0)} questions · "
            f"index {self.index_mode} · adapter {self.config.get('adapter') or 'base'}"
        )
        table = Table("metric", "value", "note", title=title, title_justify="left")
        r, a, s, ab = self.retrieval, self.answers, self.similarity, self.abstention
        table.add_row("[bold]retrieval", "", "")
        table.add_row("recall@1", pct(r.get("recall@1")), r.get("relevance", ""))
        table.add_row("recall@5", pct(r.get("recall@5")), "target ≥ 95%")
        table.add_row("[bold]answers", "", "")
        table.add_row("exact match", pct(a.get("em")), "SQuAD normalisation, citations removed")
        table.add_row("token F1", num(a.get("f1")), "best over gold answers")
        table.add_row("gold answer contained", pct(a.get("contains")), "")
        table.add_row("F1 of answered", num(a.get("f1_answered")), "abstentions left out")
        table.add_row("cites the gold passage", pct(a.get("cited_gold")), "of answered questions")
        table.add_row("abstained (answerable)", pct(a.get("abstained")), "should be low")
        table.add_row("errors", str(a.get("errors", 0)), "")
        table.add_row(
            "[bold]similarity to gold", "", "MiniLM cosine; abstentions count as unacceptable"
        )
        table.add_row("acceptable (≥ 0.5)", pct(s.get("acceptable")), "")
        table.add_row("somewhat (0.4–0.5)", pct(s.get("somewhat")), "")
        table.add_row("unacceptable (< 0.4)", pct(s.get("unacceptable")), "")
        table.add_row("[bold]abstention check", "", "")
        if ab.get("n"):
            table.add_row(
                "correct abstentions",
                pct(ab.get("correct")),
                f"{ab['n']} questions, passage hidden",
            )
        else:
            table.add_row("correct abstentions", "–", ab.get("note", "not run"))
        table.add_row("[bold]latency", "", "p50 / p95")
        for key in TIMING_KEYS:
            lat = self.latency_ms.get(key) or {}
            if lat.get("n"):
                table.add_row(key, f"{ms(lat.get('p50'))} / {ms(lat.get('p95'))}", f"n={lat['n']}")
        table.add_row("[bold]tokens", "", "")
        table.add_row(
            "prompt tokens (mean)",
            num(self.tokens.get("mean_prompt"), "{:.0f}"),
            f"budget {self.config.get('context_tokens')} passage tokens",
        )
        table.add_row("answer tokens (mean)", num(self.tokens.get("mean_completion"), "{:.1f}"), "")
        table.add_row(
            "duration", f"{self.duration_s:.0f} s", f"load {self.machine.get('loadavg_start')}"
        )
        return table

    def write_chart(self, path: Path) -> Path:
        """A PNG: the similarity buckets and the main rates side by side."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(11, 4.2), dpi=110)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})

        shares = [self.similarity.get(b, 0.0) for b in metrics.BUCKETS]
        bars = left.bar(
            ["≥ 0.5\nacceptable", "0.4–0.5\nsomewhat", "< 0.4\nunacceptable"],
            shares,
            color=["#2e7d32", "#f9a825", "#c62828"],
        )
        left.bar_label(bars, labels=[f"{100 * v:.0f}%" for v in shares])
        left.set_ylim(0, 1.12)
        left.set_title("answer vs gold: cosine similarity")
        left.set_ylabel("share of questions")

        rates = {
            "recall@1": self.retrieval.get("recall@1"),
            "recall@5": self.retrieval.get("recall@5"),
            "EM": self.answers.get("em"),
            "F1": self.answers.get("f1"),
            "contains\ngold": self.answers.get("contains"),
            "abstained\n(answerable)": self.answers.get("abstained"),
            "correct\nabstention": self.abstention.get("correct"),
        }
        names = [k for k, v in rates.items() if v is not None]
        values = [rates[k] for k in names]
        bars = right.bar(names, values, color="#1565c0")
        right.bar_label(bars, labels=[f"{v:.2f}" for v in values])
        right.set_ylim(0, 1.12)
        lat = self.latency_ms.get("total", {})
        p50 = lat.get("p50")
        right.set_title(
            f"{self.answers.get('n', 0)} questions · p50 {p50 / 1000:.2f} s/question"
            if p50
            else "rates"
        )
        fig.suptitle(
            f"lorebot eval · {Path(self.qa_file).name} · adapter {self.config.get('adapter') or 'base'} · "
            f"context {self.config.get('context_tokens')} tokens · {self.started_at}",
            fontsize=10,
        )
        fig.tight_layout()
        fig.savefig(path)
        return path


# ----------------------------------------------------------------------------- history
def history_path(settings: Settings) -> Path:
    return settings.data_dir / "eval" / HISTORY_FILE


def append_history(settings: Settings, report: EvalReport) -> Path:
    """Append the report's summary as one JSON line; redraw the chart when there are 2+ runs."""
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(report.summary(), ensure_ascii=False) + "\n")
    runs = read_history(path)
    if len(runs) >= 2:
        try:
            plot_history(runs, path.parent / HISTORY_CHART)
        except Exception:  # a chart must never fail an evaluation
            log.warning("could not draw the evaluation history chart", exc_info=True)
    return path


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history lines that parse (a torn last line is skipped)."""
    runs: list[dict[str, Any]] = []
    if not Path(path).is_file():
        return runs
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def plot_history(runs: Sequence[dict[str, Any]], png: Path) -> Path:
    """Quality rates and p50 latency over the runs, oldest left (labels: adapter or date)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    png = Path(png)
    fig = Figure(figsize=(10, 5), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x = list(range(len(runs)))
    for key in ("recall@5", "f1", "contains", "acceptable", "correct_abstention"):
        ys = [r.get(key) for r in runs]
        if any(v is not None for v in ys):
            top.plot(x, [float("nan") if v is None else v for v in ys], marker="o", label=key)
    top.set_ylim(0, 1.05)
    top.set_ylabel("share")
    top.legend(loc="upper left", fontsize=8, ncols=5)
    top.set_title("lorebot evaluation history")
    lat = [r.get("p50_total_ms") for r in runs]
    bottom.plot(
        x, [float("nan") if v is None else v / 1000 for v in lat], marker="s", color="#6d4c41"
    )
    bottom.set_ylabel("p50 s/question")
    labels = [r.get("label") or r.get("adapter") or str(r.get("at", ""))[5:16] for r in runs]
    bottom.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    return png


# ----------------------------------------------------------------------------- running
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
        row.em = metrics.exact_match(row.answer, item.answers)
        row.f1 = metrics.token_f1(row.answer, item.answers)
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
    config = {
        "model": Path(gen_path).name if gen_path else type(generator).__name__,
        "adapter": getattr(generator, "adapter", None),
        "threads": getattr(generator, "n_threads", None),
        "top_k": settings.retrieval.top_k,
        "candidates": settings.retrieval.candidates,
        "context_tokens": settings.retrieval.context_tokens,
        "min_score": settings.retrieval.min_score,
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


def save_report(settings: Settings, report: EvalReport) -> Path:
    """Write the full report under ``<data_dir>/eval/runs/`` and append the history line."""
    runs = settings.data_dir / "eval" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = report.started_at.replace(":", "").replace("-", "")
    path = runs / f"eval-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = runs / f"eval-{stamp}-{n}.json"
    path.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    append_history(settings, report)
    return path


def eval_command(
    settings: Settings,
    qa_path: Path,
    *,
    index: str = "temp",
    limit: int | None = None,
    as_json: bool = False,
    chart: Path | None = None,
    generator: Generator | None = None,
    embedder: Embedder | None = None,
) -> EvalReport:
    """`lorebot eval`: run, then print the table (or JSON on stdout) and write the chart.

    Progress goes to stderr, so ``--json`` output stays clean for pipes. ``generator`` and
    ``embedder`` are for tests and the nightly job; the CLI leaves them to the settings.
    """
    from rich.console import Console

    out = Console()
    err = Console(stderr=True)
    if not as_json:
        err.print(
            f"[bold]lorebot eval[/] {qa_path} (index {index}, limit {limit or 'all'})",
            soft_wrap=True,
        )
    report = run_eval(
        settings,
        qa_path,
        index=index,
        limit=limit,
        progress=True,
        generator=generator,
        embedder=embedder,
    )
    if chart is not None:
        report.write_chart(chart)
    if as_json:
        print(json.dumps(report.to_dict(items=False), indent=2, ensure_ascii=False))
    else:
        out.print(report.table())
        if chart is not None:
            out.print(f"chart: {chart}")
        out.print(f"history: {history_path(settings)}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slm.evals.evaluate QA.json``: the same as ``lorebot eval`` until the CLI wires it."""
    import argparse
    import sys

    from lorebot.settings import load_settings

    ap = argparse.ArgumentParser(
        prog="python -m slm.evals.evaluate",
        description="Evaluate the answer path on a SQuAD v1.1 file.",
    )
    ap.add_argument("qa", type=Path)
    ap.add_argument("--index", choices=INDEX_MODES, default="temp")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", dest="as_json", action="store_true")
    ap.add_argument("--chart", type=Path, default=None)
    args = ap.parse_args(argv)
    import signal

    # SIGTERM -> SystemExit, so the temporary index is deleted on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.logging.level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        for noisy in (
            "httpx",
            "urllib3",
            "sentence_transformers",
            "faiss",
            "bm25s",
            "filelock",
            "unstructured",
        ):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        eval_command(
            settings,
            args.qa,
            index=args.index,
            limit=args.limit,
            as_json=args.as_json,
            chart=args.chart,
        )
    except LorebotError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
