"""The answer model held to copying a span (issue 15, item 2) beside today's reader.

    LOREBOT_MODEL__N_THREADS=1 python bench/copy_span.py --sets xquad sample staff \\
        --index-dir /tmp/staff-index -n 40
    python bench/copy_span.py --sets sample --variants today trie:words:3 grammar:words:1

Every question goes through slm.serving.answer.answer_question (read mode, the worker's
function) with the real model. Where the reader is called, each variant reads the *same*
re-ranked sentences: ``today`` is slm.serving.reader.read (the model scores phrases of the
best sentence), ``METHOD:LANGUAGE:K`` is slm.serving.copy_span.read_copy (the model
generates greedily, constrained by a llama.cpp grammar or a token trie to a span of the
best K sentences: any run of up to 8 words, or one of spans.candidates' phrases). A
question refused before reading is refused by every variant; a reading below
``retrieval.min_confidence`` is refused too. The whole-answer latency of a variant is the
answer's own total with today's reading time replaced by the variant's; every reader
starts from an empty KV cache (so none reuses another's prompt). "none refused" columns
score the readings as if none fell below ``min_confidence``.

Sets (tuning data only): ``xquad``: XQuAD-en questions outside the reported seed-0 200 and
off any passage hidden with seeds 0-2 (the draw of ``bench/reader_features.py sentences``),
from ``--offset`` (default 400: past the 400 that draw's tuning and check used);
``sample``: the sample handbook's 27 answerable questions; ``staff``: the staff questions'
tune half (both handbooks, ``--index-dir`` holding their index). Prints, per set, short
answer F1 / EM / gold contained (XQuAD) or key fact in the short answer / in the answer /
right document (handbooks), the answering sentence chosen, refusals and p50 latency, each
with its ratio to today's reader. Writes bench/results/copy-span.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, SAMPLE_QA, XQUAD, console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

STAFF_QA = REPO / "tests" / "fixtures" / "staff_questions.json"
DEFAULT_VARIANTS = ["today", "grammar:words:3", "trie:words:3", "grammar:words:1", "trie:phrases:3"]


def _xquad(args: argparse.Namespace):
    """(retriever, settings, questions, closer) for XQuAD-en tuning questions."""
    from reader_features import _xquad_setup

    from slm.evals import evalset, squad

    settings, passages, items, reported, reported_hidden, embedder = _xquad_setup(
        str(args.qa), "lorebot-bench-copy-"
    )
    es = evalset.prepare_eval(
        settings, args.qa, seed=1, abstain=40, embedder=embedder, progress=False
    )
    hidden = reported_hidden | {
        q.pid for seed in (1, 2) for q in squad.choose_heldout(passages, items, 40, seed)
    }
    pool = [q for q in items if q.qid not in reported and q.pid not in hidden]
    draw = random.Random(42).sample(pool, min(args.offset + args.n, len(pool)))
    questions = [
        {"question": q.question, "golds": list(q.answers), "document": None}
        for q in draw[args.offset :]
    ]
    return es.retriever, settings, questions, es.close


def _handbook(args: argparse.Namespace, which: str, tmp: Path):
    from answer_quality import STAFF_CORPORA, staff_index
    from common import build_sample_index

    if which == "sample":
        settings, index = build_sample_index(tmp / "sample", threads=1)
        qa = json.loads(SAMPLE_QA.read_text(encoding="utf-8"))
        items = [{**q, "document": q["source"]} for q in qa["answerable"]]
    else:
        settings, index = staff_index(args.index_dir, threads=1, corpora=STAFF_CORPORA)
        qa = json.loads(STAFF_QA.read_text(encoding="utf-8"))
        items = [q for q in qa["answerable"] if q["split"] == "tune"]
    questions = [
        {
            "question": q["question"],
            "golds": q["key_facts"],
            "document": q["document"],
            "yes_no": bool(q.get("yes_no")),
        }
        for q in items
    ]
    return index, settings, questions, index.close


def _right_doc(source: str, document: str | None) -> bool:
    return document is not None and (
        source == document or source.endswith("/" + document) or Path(source).name == document
    )


def _parse(variant: str) -> tuple[str, str, int] | None:
    if variant == "today":
        return None
    try:
        method, language, k = variant.split(":")
        if method not in ("grammar", "trie") or language not in ("words", "phrases"):
            raise ValueError
        return method, language, int(k)
    except ValueError:
        raise SystemExit(
            f"error: bad variant {variant!r} (fix: today or METHOD:LANGUAGE:K, e.g. trie:words:3)"
        ) from None


def run_set(name: str, retriever, settings, questions, generator, variants) -> dict:
    import slm.serving.answer as answer_path
    from lorebot.errors import LorebotError
    from lorebot.types import Question
    from slm.evals import metrics
    from slm.serving.copy_span import read_copy

    specs = {v: _parse(v) for v in variants}
    seen: dict = {}
    original_read, original_passages = answer_path.read, answer_path.reading_passages

    def passages_spy(*a, **kw):
        seen["passages"] = original_passages(*a, **kw)
        return seen["passages"]

    def cold(scorer) -> None:
        # Each reader starts from an empty KV cache, or a copy over the top sentence would
        # find today's identical prompt already evaluated (a worker keeps only the previous
        # question's prompt, whose system prompt is all a new question shares).
        llama = getattr(scorer, "llama", None)
        if llama is not None:
            llama.reset()

    def read_spy(question, ranked, scorer, **kw):
        cold(scorer)
        t0 = time.perf_counter()
        today = original_read(question, ranked, scorer, **kw)
        seen["today"] = (today, (time.perf_counter() - t0) * 1000)
        for v, spec in specs.items():
            if spec is None:
                continue
            method, language, k = spec
            cold(scorer)
            t0 = time.perf_counter()
            try:
                r = read_copy(
                    question, ranked, scorer, method=method, language=language, sentences_read=k
                )
            except (ValueError, LorebotError) as exc:  # counted, and refused, not fatal
                console.print(f"{v}: {question!r}: {exc}")
                seen.setdefault("errors", []).append(v)
                r = None
            seen[v] = (r, (time.perf_counter() - t0) * 1000)
        return today

    answer_path.read, answer_path.reading_passages = read_spy, passages_spy
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    t_set = time.perf_counter()
    try:
        for item in questions:
            seen.clear()
            a = answer_path.answer_question(
                Question(text=item["question"]),
                retriever,
                generator,
                retrieval=settings.retrieval,
                model=settings.model.model_copy(update={"answer_mode": "read"}),
            )
            total = a.timings_ms.get("total", 0.0)
            passages = seen.get("passages", ([], []))[0]
            today_ms = seen["today"][1] if "today" in seen else 0.0
            for v in variants:
                reading, ms = seen.get(v, (None, today_ms))
                refused = reading is None or reading.confidence < settings.retrieval.min_confidence
                read_short = reading.short if reading is not None else ""
                short = "" if refused else reading.short
                quote = "" if refused else reading.evidence.text
                src = (
                    passages[reading.evidence.passage - 1].chunk.source
                    if not refused and 0 < reading.evidence.passage <= len(passages)
                    else ""
                )
                golds = item["golds"]
                facts = [g.lower() for g in golds]
                rows[v].append(
                    {
                        "question": item["question"],
                        "short": short,
                        "refused": refused,
                        "f1": metrics.token_f1(short, golds) if short else 0.0,
                        "em": metrics.exact_match(short, golds) if short else 0.0,
                        "contains": bool(short)
                        and metrics.contains_answer(f"{short} {quote}", golds),
                        "sentence": bool(quote) and any(f in quote.lower() for f in facts),
                        "fact_short": bool(short) and any(f in short.lower() for f in facts),
                        "fact_answer": bool(short)
                        and any(f in f"{short} {quote}".lower() for f in facts),
                        "right_doc": _right_doc(src, item["document"]),
                        # as if no reading were refused (a copy from a lower-ranked
                        # sentence has that sentence's lower confidence)
                        "f1_any": metrics.token_f1(read_short, golds) if read_short else 0.0,
                        "fact_short_any": bool(read_short)
                        and any(f in read_short.lower() for f in facts),
                        "error": v in seen.get("errors", []),
                        "read_ms": ms,
                        "ms": total - today_ms + ms,
                    }
                )
    finally:
        answer_path.read, answer_path.reading_passages = original_read, original_passages
    console.print(f"{name}: {len(questions)} questions in {time.perf_counter() - t_set:.0f} s")
    return rows


def summarise(rows: list[dict]) -> dict:
    import numpy as np

    out = {
        k: float(np.mean([r[k] for r in rows]))
        for k in (
            "f1",
            "em",
            "contains",
            "sentence",
            "fact_short",
            "fact_answer",
            "right_doc",
            "f1_any",
            "fact_short_any",
        )
    }
    out["refused"] = float(np.mean([r["refused"] for r in rows]))
    out["errors"] = sum(r["error"] for r in rows)
    out["p50_ms"] = float(np.median([r["ms"] for r in rows]))
    out["p50_read_ms"] = float(np.median([r["read_ms"] for r in rows]))
    return out


def table(name: str, n: int, summary: dict[str, dict], xquad: bool) -> Table:
    keys = (
        ("f1", "short F1"),
        ("em", "EM"),
        ("contains", "gold contained"),
        ("sentence", "answering sentence"),
        ("f1_any", "F1, none refused"),
    )
    if not xquad:
        keys = (
            ("fact_short", "key fact, short"),
            ("fact_answer", "key fact, answer"),
            ("sentence", "answering sentence"),
            ("right_doc", "right doc"),
            ("fact_short_any", "key fact, short, none refused"),
        )
    keys += (("refused", "refused"), ("p50_ms", "p50 answer ms"), ("p50_read_ms", "p50 read ms"))
    t = Table(title=f"{name}: {n} answerable tuning questions (÷ today's reader)")
    t.add_column("variant", no_wrap=True)
    for _, label in keys:
        t.add_column(label, justify="right")
    base = summary.get("today")
    for v, s in summary.items():
        cells = []
        for k, _ in keys:
            value = s[k]
            text = f"{value:.0f}" if k.endswith("ms") else f"{value:.3f}"
            if base is not None and v != "today" and base[k]:
                text += f" ({value / base[k]:.2f}×)"
            cells.append(text)
        t.add_row(v, *cells)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=("xquad", "sample", "staff"), default=["sample"])
    ap.add_argument("--qa", type=Path, default=XQUAD, help="XQuAD-en (SQuAD v1.1) file")
    ap.add_argument("-n", type=int, default=40, help="XQuAD-en tuning questions (at most 80)")
    ap.add_argument("--offset", type=int, default=400, help="where in the tuning draw to start")
    ap.add_argument("--index-dir", type=Path, default=None, help="the two handbooks' index")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    for v in args.variants:
        _parse(v)
    if args.n > 80:
        console.print("error: -n is at most 80 (fix: a smaller tuning sample)")
        return 2
    if "xquad" in args.sets and not args.qa.is_file():
        console.print(f"error: {args.qa} not found (fix: pass --qa or drop xquad from --sets)")
        return 2
    if "staff" in args.sets and (args.index_dir is None or not (args.index_dir / "built").exists()):
        console.print("error: --sets staff needs --index-dir with a built handbooks index")
        return 2
    started = loadavg()

    from lorebot import assets
    from slm.serving.generator import LlamaGenerator

    tmp = Path(tempfile.mkdtemp(prefix="lorebot-bench-copy-"))
    results: dict[str, dict] = {}
    generator = None
    try:
        for name in args.sets:
            if name == "xquad":
                retriever, settings, questions, close = _xquad(args)
            else:
                retriever, settings, questions, close = _handbook(args, name, tmp)
            if generator is None:
                generator = LlamaGenerator(
                    assets.answer_model_path(settings.model.path),
                    n_threads=args.threads,
                    n_ctx=settings.model.n_ctx,
                    seed=0,
                    temperature=0.0,
                )
            try:
                rows = run_set(name, retriever, settings, questions, generator, args.variants)
            finally:
                close()
            summary = {v: summarise(r) for v, r in rows.items()}
            results[name] = {"summary": summary, "rows": rows, "load_after": loadavg()}
            console.print(table(name, len(questions), summary, name == "xquad"))
            errors = {v: s["errors"] for v, s in summary.items() if s["errors"]}
            if errors:
                console.print(f"errors (counted as refused): {errors}")
            console.print(f"load average {loadavg()}")
    finally:
        if generator is not None:
            generator.close()
        shutil.rmtree(tmp, ignore_errors=True)
    out = save("copy-span", {"sets": results, "variants": args.variants}, started_load=started)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
