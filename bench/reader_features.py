"""What the reader sees, recorded once, so its weights can be chosen without the model.

    python bench/reader_features.py dump --qa ../shared/data/qa/xquad-en/xquad.en.json
    python bench/reader_features.py grid                    # weights, on the dump only

``dump`` asks XQuAD-en tuning questions (NOT in the reported seed-0 sample of 200, nor on
a passage that sample's abstention check hides) through the real retrieval of the answer
path; for each it records the best ``--sentences`` passage sentences (rank_evidence over
the hits and the top hit's neighbours), every candidate phrase of each with its prior,
and the answer model's score of each phrase (score_answers). Hidden-passage questions for
calibrating abstention are drawn with seed 1 (their passages hidden from them, as the
eval harness does), so the reported abstention check (seed 0) is never tuned on.

``grid`` replays the reader's choice for every weight combination on the dump: short
answer token F1 / EM, gold sentence chosen, gold answer contained in the quoted sentence,
and for each confidence feature the hidden-passage refusal at the threshold that refuses
at most 5 % of answerable questions. The baseline (the reader's weights before tuning) is
printed beside each row. Writes bench/results/reader-features.json (the grid, not the dump).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import XQUAD, console, exit_cleanly_on_sigterm, save

DUMP = Path(tempfile.gettempdir()) / "lorebot-reader-features.json"


def dump(args: argparse.Namespace) -> int:
    from lorebot.settings import Settings
    from lorebot.types import Question
    from slm.evals import evalset, metrics, runner, squad
    from slm.serving import spans
    from slm.serving.answer import _sentence_scoring, _with_neighbours
    from slm.serving.evidence import rank_evidence
    from slm.serving.prompt import reader_messages

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="lorebot-bench-features-")))
    _, items = squad.load_squad(args.qa)
    passages, _ = squad.load_squad(args.qa)
    reported = {q.qid for q in squad.sample_questions(items, 200, 0)}
    reported_hidden = {q.pid for q in squad.choose_heldout(passages, items, 40, 0)}
    embedder = runner._default_embedder(settings)
    # seed 1: a different set of hidden passages from the reported check's (seed 0)
    es = evalset.prepare_eval(
        settings, args.qa, seed=1, abstain=args.heldout, embedder=embedder, progress=False
    )
    hidden_tune = [q for q in es.heldout if q.pid not in reported_hidden]
    hidden = {q.pid for q in es.heldout} | reported_hidden
    pool = [q for q in items if q.qid not in reported and q.pid not in hidden]
    tune = random.Random(42).sample(pool, min(args.n, len(pool)))
    generator = runner._default_generator(settings)
    retriever = es.retriever
    r = settings.retrieval
    out = []
    t0 = time.perf_counter()
    # interleaved, and written after every question, so a stopped dump is still usable
    order = [("answerable", q) for q in tune]
    step = max(1, len(tune) // max(1, len(hidden_tune)))
    for i, item in enumerate(hidden_tune):
        order.insert(min(len(order), (i + 1) * (step + 1) - 1), ("heldout", item))
    for kind, item in order:
        collections = [evalset.EVAL_COLLECTION] if kind == "heldout" else None
        hits = retriever.search(
            item.question, k=r.top_k, collections=collections, candidates=r.candidates
        )
        if not hits:
            continue
        passages_read = _with_neighbours(hits, retriever, r.neighbours)
        q = Question(question_id="f", text=item.question, collections=collections)
        ranked = rank_evidence(
            item.question,
            passages_read,
            passages=len(passages_read),
            keep=args.sentences,
            **_sentence_scoring(q, retriever, None),
        )
        sentences = []
        for ev in ranked:
            cands = spans.candidates(item.question, ev.text, args.candidates)
            texts = [c.text for c in cands]
            if spans.is_yes_no(item.question):
                texts += ["Yes", "No"]
            model = generator.score_answers(reader_messages(item.question, ev.text), texts)
            sentences.append(
                {
                    "passage": ev.passage,
                    "text": ev.text,
                    "score": ev.score,
                    "gold": metrics.contains_answer(ev.text, item.answers),
                    "cands": [
                        {"text": t, "prior": c.prior if c else 0.0, "model": m}
                        for t, c, m in itertools.zip_longest(texts, cands, model)
                    ],
                }
            )
        out.append(
            {
                "kind": kind,
                "qid": item.qid,
                "question": item.question,
                "golds": list(item.answers),
                "top_dense": max(
                    (h.dense_score for h in hits if h.dense_score is not None), default=None
                ),
                "sentences": sentences,
            }
        )
        args.out.write_text(json.dumps(out), encoding="utf-8")
        if args.verbose or len(out) % 10 == 0:
            console.print(f"{len(out)} questions, {time.perf_counter() - t0:.0f} s")
    es.close()
    console.print(f"wrote {args.out}: {len(out)} questions")
    return 0


def choose(q: dict, read: int, sentence_w: float, model_w: float, prior_w: float, cands: int = 16):
    """The reader's choice on recorded features: (short, sentence, total, model score).

    Only the first ``cands`` phrases of a sentence (best first by prior, as recorded) compete;
    "Yes"/"No", recorded after them for a yes/no question, always do.
    """
    best = None
    for s in q["sentences"][:read]:
        phrases = [c for c in s["cands"] if c["text"] not in ("Yes", "No")][:cands]
        phrases += [c for c in s["cands"] if c["text"] in ("Yes", "No")]
        for c in phrases:
            total = prior_w * c["prior"] + model_w * c["model"] + sentence_w * s["score"]
            if best is None or total > best[2]:
                best = (c["text"], s, total, c["model"])
    return best


def evaluate(
    data: list[dict],
    read: int,
    sentence_w: float,
    model_w: float,
    prior_w: float,
    cands: int = 16,
):
    import math

    import numpy as np

    from slm.evals import metrics

    f1, em, gold_sentence, feats = [], [], [], {"answerable": [], "heldout": []}
    for q in data:
        pick = choose(q, read, sentence_w, model_w, prior_w, cands)
        if q["kind"] == "answerable":
            if pick is None:
                f1.append(0.0)
                em.append(0.0)
                gold_sentence.append(0.0)
            else:
                f1.append(metrics.token_f1(pick[0], q["golds"]))
                em.append(metrics.exact_match(pick[0], q["golds"]))
                gold_sentence.append(float(pick[1]["gold"]))
        feats[q["kind"]].append(
            None
            if pick is None
            else {
                "sentence": pick[1]["score"],
                "top_sentence": q["sentences"][0]["score"],
                "conf_old": pick[1]["score"] + math.exp(pick[3]),
                "dense": q["top_dense"] or 0.0,
            }
        )
    refusal = {}
    for name in ("sentence", "top_sentence", "conf_old", "dense"):
        ans = sorted(f[name] if f else -9.0 for f in feats["answerable"])
        cut = ans[int(0.05 * len(ans))] if ans else 0.0  # refuses at most 5 % answerable
        held = [f[name] if f else -9.0 for f in feats["heldout"]]
        refusal[name] = {
            "threshold": cut,
            "heldout_refused": float(np.mean([h < cut for h in held])) if held else None,
        }
    return {
        "f1": float(np.mean(f1)),
        "em": float(np.mean(em)),
        "gold_sentence": float(np.mean(gold_sentence)),
        "refusal": refusal,
    }


def grid(args: argparse.Namespace) -> int:
    from rich.table import Table

    data = json.loads(args.out.read_text(encoding="utf-8"))
    n_ans = sum(q["kind"] == "answerable" for q in data)
    gold_any = sum(
        any(s["gold"] for s in q["sentences"]) for q in data if q["kind"] == "answerable"
    )
    console.print(
        f"{n_ans} answerable, {len(data) - n_ans} hidden-passage; gold answer in one of the "
        f"recorded sentences for {gold_any}"
    )
    baseline = evaluate(data, 2, 1.0, 4.0, 1.0)
    rows = []
    for read, sw, mw, pw, nc in itertools.product(
        (1, 2, 3, 4, 6),
        (1.0, 2.0, 4.0, 8.0, 16.0),
        (0.25, 0.5, 1.0, 2.0, 4.0),
        (0.0, 0.5, 1.0),
        (6, 10, 16),
    ):
        res = evaluate(data, read, sw, mw, pw, nc)
        rows.append(
            {"read": read, "sentence_w": sw, "model_w": mw, "prior_w": pw, "cands": nc, **res}
        )
    rows.sort(key=lambda r: -r["f1"])
    table = Table(title="reader weights on the tuning dump (best F1 first)")
    for col in (
        "sentences",
        "phrases",
        "sentence w",
        "model w",
        "prior w",
        "F1",
        "EM",
        "gold sent.",
    ):
        table.add_column(col, justify="right")
    table.add_column("÷ baseline F1", justify="right")
    for r in rows[: args.top]:
        table.add_row(
            str(r["read"]),
            str(r["cands"]),
            f"{r['sentence_w']:g}",
            f"{r['model_w']:g}",
            f"{r['prior_w']:g}",
            f"{r['f1']:.3f}",
            f"{r['em']:.3f}",
            f"{r['gold_sentence']:.3f}",
            f"{r['f1'] / baseline['f1']:.2f}×" if baseline["f1"] else "-",
        )
    console.print(table)
    best_by_cost: dict[tuple[int, int], dict] = {}
    for r in rows:  # rows are best first
        best_by_cost.setdefault((r["read"], r["cands"]), r)
    for (read, nc), r in sorted(best_by_cost.items()):
        console.print(
            f"{read} sentence(s) x {nc} phrases (model calls scale with both): best F1 "
            f"{r['f1']:.3f} EM {r['em']:.3f} gold sentence {r['gold_sentence']:.3f} at weights "
            f"{r['sentence_w']:g}/{r['model_w']:g}/{r['prior_w']:g}"
        )
    console.print(
        f"baseline (2 sentences, weights 1/4/1): F1 {baseline['f1']:.3f} EM {baseline['em']:.3f} "
        f"gold sentence {baseline['gold_sentence']:.3f}"
    )
    for name, res in rows[0]["refusal"].items():
        console.print(
            f"best row, abstain on {name} < {res['threshold']:.3f}: hidden-passage refused "
            f"{res['heldout_refused']}"
        )
    save("reader-features", {"baseline": baseline, "grid": rows[:50], "questions": len(data)})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("dump", "grid"))
    ap.add_argument("--qa", type=Path, default=XQUAD, help="SQuAD v1.1 file")
    ap.add_argument("--out", type=Path, default=DUMP, help="where the dump is written/read")
    ap.add_argument("-n", type=int, default=150, help="answerable tuning questions")
    ap.add_argument("--heldout", type=int, default=60, help="hidden-passage questions (seed 1)")
    ap.add_argument("--sentences", type=int, default=6, help="sentences recorded per question")
    ap.add_argument("--candidates", type=int, default=16, help="phrases scored per sentence")
    ap.add_argument("--verbose", action="store_true", help="report every question")
    ap.add_argument("--top", type=int, default=15, help="grid rows printed")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    if args.action == "dump":
        if not args.qa.is_file():
            console.print(f"error: {args.qa} not found (fix: pass --qa FILE)")
            return 2
        return dump(args)
    return grid(args)


if __name__ == "__main__":
    raise SystemExit(main())
