"""Follow-up questions in a thread: which text should retrieval search? Four strategies, measured.

    python bench/follow_ups.py                  # 50 threads of tests/fixtures/follow_ups.json
    python bench/follow_ups.py --answers all    # answer with every strategy, not just two
    python bench/follow_ups.py --limit 10 --answers none   # quick retrieval-only look

Builds a temporary index of the packaged sample handbook and loads the answer model
(SmolLM2 through slm.serving.generator.LlamaGenerator, greedy). For each two-turn thread of
tests/fixtures/follow_ups.json it searches for the second question with each strategy:

  alone        the second question as asked;
  current      slm.serving.answer.retrieval_query: the previous user question is put in front
               when slm.serving.answer.is_follow_up() says the question leans on it;
  always       the previous user question is always put in front;
  rewrite      the answer model rewrites the question as a standalone one, given the
               previous user question (a short prompt with one worked example, greedy).

Retrieval is scored by the right document first (recall@1) and among the passages the
model reads (recall@top_k, 4 by default), and by how often the best passage is below
retrieval.min_score, where the bot refuses before the model runs. Then the second
question is answered through slm.serving.answer.answer_question with the thread as
Question.history and the strategy in place of retrieval_query, for the current strategy
and the best other one (``--answers all``: every strategy), scoring the key fact in the
answer as bench/answer_quality.py does. Dependent follow-ups and fresh questions in an
old thread (which must not be hurt by the history) are scored separately; the fresh ones
are also asked in a new thread, as the reference they should match. Latency: the
time each strategy spends making the search text (the rewrite's model call included),
and the whole answer. Writes bench/results/follow-ups.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, build_sample_index, console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

from lorebot import assets
from lorebot.settings import Settings, cpu_count
from lorebot.types import Question, Turn

FIXTURE = REPO / "tests" / "fixtures" / "follow_ups.json"
DEPENDENT = ("same_document", "other_document")
GROUPS = {
    "dependent": DEPENDENT,
    "same document": ("same_document",),
    "other document": ("other_document",),
    "fresh": ("fresh",),
}

Strategy = Callable[[str, Sequence[Turn]], str]

#: The rewrite prompt: an instruction and one worked example, on a topic the handbook does
#: not have. A first, zero-shot prompt that also showed the earlier answer did worse:
#: SmolLM2 mostly described the task ("You're asked to write a sentence that...") or went
#: on with the earlier answer; the right document was in the top 4 for 18 of 40 follow-ups.
REWRITE_SYSTEM = (
    "Rewrite the new question so it makes sense on its own, using the topic of the earlier "
    "question. Reply with the question only."
)
REWRITE_EXAMPLE = (
    "Earlier question: When is the quarterly sales report due?\nNew question: and the yearly one?",
    "When is the yearly sales report due?",
)
REWRITE_MAX_TOKENS = 40


def load_conversations(limit: int | None) -> list[dict[str, Any]]:
    convs = json.loads(FIXTURE.read_text(encoding="utf-8"))["conversations"]
    if limit is not None:  # keep the mix: the first `limit` of each kind
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for c in convs:
            by_kind.setdefault(c["kind"], []).append(c)
        convs = [c for kind in by_kind.values() for c in kind[:limit]]
    return convs


def history_of(conv: dict[str, Any]) -> list[Turn]:
    return [
        Turn(role="user", text=conv["first_question"]),
        Turn(role="assistant", text=conv["first_answer"]),
    ]


def previous_user(history: Sequence[Turn]) -> str | None:
    return next((t.text for t in reversed(history) if t.role == "user" and t.text.strip()), None)


def always_concatenate(question: str, history: Sequence[Turn]) -> str:
    previous = previous_user(history)
    if previous is None:
        return question
    return f"{' '.join(previous.split())} {' '.join(question.split())}"


class Rewriter:
    """Strategy (d): the answer model rewrites the question as a standalone one."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.log: list[dict[str, Any]] = []

    @staticmethod
    def messages(question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
        previous = " ".join((previous_user(history) or "").split())
        return [
            {"role": "system", "content": REWRITE_SYSTEM},
            {"role": "user", "content": REWRITE_EXAMPLE[0]},
            {"role": "assistant", "content": REWRITE_EXAMPLE[1]},
            {
                "role": "user",
                "content": f"Earlier question: {previous}\nNew question: "
                f"{' '.join(question.split())}",
            },
        ]

    @staticmethod
    def clean(text: str) -> str:
        line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
        for prefix in ("standalone question:", "rewritten question:", "new question:", "question:"):
            if line.lower().startswith(prefix):
                line = line[len(prefix) :].strip()
        return line.strip(" \"'`")

    def __call__(self, question: str, history: Sequence[Turn]) -> str:
        if previous_user(history) is None:
            return question
        started = time.perf_counter()
        generation = self.generator.generate(
            self.messages(question, history), max_tokens=REWRITE_MAX_TOKENS
        )
        rewritten = self.clean(generation.text)
        ms = (time.perf_counter() - started) * 1000
        self.log.append(
            {
                "question": question,
                "raw": generation.text,
                "query": rewritten or question,
                "ms": round(ms, 1),
            }
        )
        return rewritten or question


def doc_rank(hits: Sequence[Any], source: str) -> int | None:
    """1-based rank of the first passage from ``source``, or None."""
    for i, hit in enumerate(hits, 1):
        if Path(hit.chunk.source).name == source:
            return i
    return None


def p50(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def retrieval_run(
    name: str, strategy: Strategy, convs: list[dict[str, Any]], index: Any, settings: Settings
) -> list[dict[str, Any]]:
    rows = []
    for conv in convs:
        history = history_of(conv)
        t0 = time.perf_counter()
        query = strategy(conv["follow_up"], history)
        t1 = time.perf_counter()
        hits = index.search(
            query, k=settings.retrieval.top_k, candidates=settings.retrieval.candidates
        )
        t2 = time.perf_counter()
        dense = [h.dense_score for h in hits if h.dense_score is not None]
        rank = doc_rank(hits, conv["source"])
        rows.append(
            {
                "id": conv["id"],
                "kind": conv["kind"],
                "query": query,
                "rank": rank,
                "top_sources": [Path(h.chunk.source).name for h in hits],
                "best_dense": round(max(dense), 3) if dense else None,
                "refused_before_model": (not dense) or max(dense) < settings.retrieval.min_score,
                "query_ms": round((t1 - t0) * 1000, 2),
                "search_ms": round((t2 - t1) * 1000, 2),
            }
        )
    console.print(f"  retrieval, {name}: done")
    return rows


def answer_run(
    name: str,
    strategy: Strategy,
    convs: list[dict[str, Any]],
    index: Any,
    generator: Any,
    settings: Settings,
    *,
    thread: bool = True,
    ask_search_text: bool = False,
) -> list[dict[str, Any]]:
    """Each second question answered by answer_question with ``strategy`` as its search text.

    ``thread=False`` asks it in a new thread (no history), the reference for fresh
    questions. ``ask_search_text`` (a diagnostic, not a search strategy) makes the search
    text the question itself, so the passages' focus sentences and the evidence quote are
    chosen for it too, not for the bare follow-up.
    """
    import slm.serving.answer
    from slm.serving.answer import answer_question

    rows = []
    searched: list[str] = []

    def recorded(question: str, history: Sequence[Turn]) -> str:
        searched.append(strategy(question, history))
        return searched[-1]

    def as_asked(
        question: str, history: Sequence[Turn]
    ) -> str:  # the question is the search text already
        searched.append(question)
        return question

    with mock.patch.object(
        slm.serving.answer, "retrieval_query", as_asked if ask_search_text else recorded
    ):
        for conv in convs:
            history = history_of(conv) if thread else []
            text = strategy(conv["follow_up"], history) if ask_search_text else conv["follow_up"]
            question = Question(text=text, history=history)
            a = answer_question(
                question, index, generator, retrieval=settings.retrieval, model=settings.model
            )
            facts = conv["key_facts"]
            cited = [c for c in a.citations if c.cited] or a.citations
            rows.append(
                {
                    "id": conv["id"],
                    "kind": conv["kind"],
                    "query": searched[-1],
                    "answer": a.answer,
                    "abstained": a.abstained,
                    "key_fact": (not a.abstained)
                    and any(f.lower() in a.answer.lower() for f in facts),
                    "right_doc_cited_first": bool(cited)
                    and Path(cited[0].source).name == conv["source"],
                    "total_ms": round(a.timings_ms.get("total", 0.0), 1),
                    "retrieve_ms": round(a.timings_ms.get("retrieve", 0.0), 1),
                    "first_token_ms": round(a.timings_ms["first_token"], 1)
                    if "first_token" in a.timings_ms
                    else None,
                }
            )
    console.print(f"  answers, {name}: done")
    return rows


def summarise(rows: list[dict[str, Any]], kinds: Sequence[str]) -> dict[str, Any]:
    sel = [r for r in rows if r["kind"] in kinds]
    n = len(sel)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    if "rank" in sel[0]:
        out["recall_at_1"] = sum(r["rank"] == 1 for r in sel)
        out["recall_at_k"] = sum(r["rank"] is not None for r in sel)
        out["refused_before_model"] = sum(r["refused_before_model"] for r in sel)
        out["p50_query_ms"] = p50([r["query_ms"] for r in sel])
        out["p50_search_ms"] = p50([r["search_ms"] for r in sel])
        out["p50_lookup_ms"] = p50([r["query_ms"] + r["search_ms"] for r in sel])
    if "key_fact" in sel[0]:
        out["key_fact"] = sum(r["key_fact"] for r in sel)
        out["abstained"] = sum(r["abstained"] for r in sel)
        out["right_doc_cited_first"] = sum(r["right_doc_cited_first"] for r in sel)
        out["p50_total_ms"] = p50([r["total_ms"] for r in sel])
        out["p50_first_token_ms"] = p50(
            [r["first_token_ms"] for r in sel if r["first_token_ms"] is not None]
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=min(2, cpu_count()))
    ap.add_argument("--limit", type=int, default=None, help="first N threads of each kind")
    ap.add_argument(
        "--answers",
        choices=("best", "all", "none"),
        default="best",
        help=(
            "answer with the current strategy and the best other one (default), every one, or none"
        ),
    )
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="also answer with the current strategy's search text as the model's question",
    )
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    from slm.serving.answer import retrieval_query
    from slm.serving.generator import LlamaGenerator

    convs = load_conversations(args.limit)
    tmp = Path(tempfile.mkdtemp(prefix="lorebot-bench-follow-ups-"))
    try:
        settings, index = build_sample_index(tmp, threads=args.threads)
        console.print(f"{len(convs)} threads")
        generator = LlamaGenerator(
            assets.answer_model_path(settings.model.path),
            n_threads=args.threads,
            n_ctx=settings.model.n_ctx,
            seed=0,
            temperature=0.0,
        )
        generator.load()
        index.search("warm up the query embedder", k=1)
        rewriter = Rewriter(generator)
        strategies: dict[str, Strategy] = {
            "alone": lambda q, h: q,
            "current": retrieval_query,
            "always": always_concatenate,
            "rewrite": rewriter,
        }
        labels = {
            "alone": "(a) follow-up alone",
            "current": "(b) current: concatenate if is_follow_up()",
            "always": "(c) always concatenate previous question",
            "rewrite": "(d) SmolLM2 rewrite",
        }
        short = {
            "alone": "(a) alone",
            "current": "(b) current",
            "always": "(c) always",
            "rewrite": "(d) rewrite",
        }

        retrieval = {
            name: retrieval_run(name, fn, convs, index, settings) for name, fn in strategies.items()
        }
        rewrites = list(rewriter.log)
        summary = {
            name: {g: summarise(rows, kinds) for g, kinds in GROUPS.items()}
            for name, rows in retrieval.items()
        }

        def merit(name: str) -> tuple:
            dep, fresh = summary[name]["dependent"], summary[name]["fresh"]
            return (
                dep["recall_at_k"] + fresh["recall_at_k"],
                dep["recall_at_1"] + fresh["recall_at_1"],
                -(dep["p50_query_ms"] or 0),
            )

        best_other = max((n for n in strategies if n != "current"), key=merit)
        to_answer = {"best": ["current", best_other], "all": list(strategies), "none": []}[
            args.answers
        ]
        answers: dict[str, list[dict[str, Any]]] = {}
        if to_answer:
            # Warm the answer prompt's KV cache, as a worker that has answered before has it.
            from slm.serving.answer import answer_question

            answer_question(
                Question(text="How many days of annual leave do I get?"),
                index,
                generator,
                retrieval=settings.retrieval,
                model=settings.model,
            )
        for name in to_answer:
            rewriter.log.clear()
            answers[name] = answer_run(name, strategies[name], convs, index, generator, settings)
            for g, kinds in GROUPS.items():
                summary[name][g].update(summarise(answers[name], kinds))
        fresh = [c for c in convs if c["kind"] == "fresh"]
        if to_answer and fresh:
            answers["fresh_new_thread"] = answer_run(
                "fresh questions in a new thread",
                strategies["alone"],
                fresh,
                index,
                generator,
                settings,
                thread=False,
            )
            summary["fresh_new_thread"] = {
                "fresh": summarise(answers["fresh_new_thread"], ("fresh",))
            }
        if args.diagnose:
            answers["current_asked_as_searched"] = answer_run(
                "current, search text asked",
                retrieval_query,
                convs,
                index,
                generator,
                settings,
                ask_search_text=True,
            )
            summary["current_asked_as_searched"] = {
                g: summarise(answers["current_asked_as_searched"], kinds)
                for g, kinds in GROUPS.items()
            }
        index.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    k = settings.retrieval.top_k
    table = Table(
        title=f"Follow-ups: {len(convs)} two-turn threads over the sample handbook "
        f"(recall: the right document first / in the top {k}; key fact: in the answer text)"
    )
    for col in (
        "strategy",
        "questions",
        "recall@1",
        f"recall@{k}",
        "refused before model",
        "key fact in answer",
        "answers refused",
        "search text ms p50",
        "added ms p50",
        "answer ms p50",
    ):
        table.add_column(col, justify="left" if col in ("strategy", "questions") else "right")
    base = {g: summary["alone"][g].get("p50_lookup_ms") or 0.0 for g in GROUPS}
    for name in strategies:
        for i, g in enumerate(("dependent", "same document", "other document", "fresh")):
            s = summary[name][g]
            n = s["n"]
            if not n:
                continue
            table.add_row(
                short[name] if i == 0 else "",
                f"{g} ({n})",
                f"{s['recall_at_1']}/{n}",
                f"{s['recall_at_k']}/{n}",
                f"{s['refused_before_model']}/{n}",
                f"{s['key_fact']}/{n}" if "key_fact" in s else "–",
                f"{s['abstained']}/{n}" if "abstained" in s else "–",
                f"{s['p50_query_ms']:.1f}",
                f"{s['p50_lookup_ms'] - base[g]:+.1f}",
                "–" if s.get("p50_total_ms") is None else f"{s['p50_total_ms']:.0f}",
                end_section=(g == "fresh"),
            )
    if "fresh_new_thread" in summary:
        s = summary["fresh_new_thread"]["fresh"]
        n = s["n"]
        table.add_row(
            "(ref) new thread",
            f"fresh ({n})",
            "–",
            "–",
            "–",
            f"{s['key_fact']}/{n}",
            f"{s['abstained']}/{n}",
            "–",
            "–",
            f"{s['p50_total_ms']:.0f}",
            end_section=True,
        )
    if "current_asked_as_searched" in summary:
        for i, g in enumerate(("dependent", "same document", "other document", "fresh")):
            s = summary["current_asked_as_searched"][g]
            n = s["n"]
            table.add_row(
                "(diag) (b), asked as searched" if i == 0 else "",
                f"{g} ({n})",
                "–",
                "–",
                "–",
                f"{s['key_fact']}/{n}",
                f"{s['abstained']}/{n}",
                "–",
                "–",
                f"{s['p50_total_ms']:.0f}",
            )
    console.print(table)
    for name in strategies:
        console.print(f"  {short[name]}: {labels[name]}")
    console.print(
        "  (ref): the fresh questions asked without the thread; "
        "(diag): (b)'s search text given to the model as the question (focus sentences and quote "
        "chosen for it)"
    )
    console.print(
        "added ms: p50 of (making the search text + the search) minus the same for (a); "
        "answer ms: answer_question's total, the rewrite's model call included"
    )
    console.print(f"best strategy other than the current one, by retrieval: {labels[best_other]}")

    save(
        "follow-ups",
        {
            "fixture": str(FIXTURE.relative_to(REPO)),
            "threads": len(convs),
            "top_k": settings.retrieval.top_k,
            "min_score": settings.retrieval.min_score,
            "labels": labels,
            "best_other": best_other,
            "summary": summary,
            "rewrite_prompt": {
                "system": REWRITE_SYSTEM,
                "example": REWRITE_EXAMPLE,
                "max_tokens": REWRITE_MAX_TOKENS,
            },
            "rewrites": rewrites,
            "retrieval": retrieval,
            "answers": answers,
        },
        started_load=started_load,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
