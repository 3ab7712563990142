"""When a question is a reviewed one reworded: the MiniLM cosine a match needs.

    python bench/reviewed_match.py [--xquad ../shared/data/qa/xquad-en/xquad.en.json]

A reviewed answer (slm/serving/reviewed.py) answers its own question and its rewordings,
matched at MiniLM cosine >= ``MATCH_COSINE``. Too low and a correction answers a different
question (with a "reviewed" badge, which is worse than a plain wrong answer); too high and
it answers only the words it was given for. Three sets, embedded as the answer path embeds
questions:

* rewordings: pairs of questions written for this bench about the sample handbook that a
  person would answer the same way;
* near misses: pairs of the same shape that ask something else (another subject, another
  quantity, the opposite case);
* XQuAD-en (when the file is there): every pair of different human questions about the same
  passage, the nearest a real question set comes to a near miss.

For each threshold: the share of rewordings matched and of near misses (and XQuAD pairs)
wrongly matched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import XQUAD, console, loadavg, save  # noqa: E402

REWORDED = (
    ("What happens if I submit a claim late?", "What happens when I submit my claim late?"),
    ("What happens if I submit a claim late?", "What happens if my expense claim is late?"),
    ("How many days of annual leave do I get?", "How many annual leave days do I get?"),
    ("How many days of annual leave do I get?", "How many days of holiday do I get a year?"),
    ("Who approves my expense claims?", "Who approves expense claims?"),
    ("Can I work from abroad?", "Am I allowed to work from abroad?"),
    ("What is the mileage rate for my own car?", "What is the mileage rate if I use my car?"),
    ("How do I report a lost laptop?", "How do I report that I lost my laptop?"),
    ("When is payday?", "On which day are we paid?"),
    ("How long is paternity leave?", "How long is the paternity leave?"),
    ("Do I need a receipt for a taxi?", "Do I need a receipt for taxis?"),
    ("Who do I call if I am sick?", "Who should I call when I am sick?"),
)
NEAR_MISSES = (
    ("What happens if I submit a claim late?", "What happens if I submit a timesheet late?"),
    ("What happens if I submit a claim late?", "What happens if I submit a claim early?"),
    ("How many days of annual leave do I get?", "How many days of sick leave do I get?"),
    ("Who approves my expense claims?", "Who approves my annual leave?"),
    ("Can I work from abroad?", "Can I work from home?"),
    ("What is the mileage rate for my own car?", "What is the limit for business meals?"),
    ("How do I report a lost laptop?", "How do I order a new laptop?"),
    ("When is payday?", "When is the performance review?"),
    ("How long is paternity leave?", "How long is maternity leave?"),
    ("Do I need a receipt for a taxi?", "Do I need a receipt for a hotel?"),
    ("Who do I call if I am sick?", "Who do I call if my laptop is stolen?"),
    ("Can I claim alcohol?", "Can I claim parking fines?"),
)
THRESHOLDS = (0.8, 0.85, 0.88, 0.9, 0.92, 0.95)


def cosines(embedder, pairs) -> np.ndarray:
    a = embedder.encode([p[0] for p in pairs])
    b = embedder.encode([p[1] for p in pairs])
    return np.sum(np.asarray(a) * np.asarray(b), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xquad", type=Path, default=XQUAD, help="a SQuAD-format file (optional)")
    args = ap.parse_args()

    from ingest.embed import Embedder
    from lorebot.settings import Settings
    from slm.serving.reviewed import MATCH_COSINE

    load0, t0 = loadavg(), time.perf_counter()
    embedder = Embedder.from_settings(Settings(), exclusive=True)
    sets = {"reworded": cosines(embedder, REWORDED), "near miss": cosines(embedder, NEAR_MISSES)}
    if args.xquad.is_file():
        data = json.loads(args.xquad.read_text(encoding="utf-8"))
        groups = [
            [qa["question"] for qa in para["qas"]]
            for art in data["data"]
            for para in art["paragraphs"]
        ]
        flat = [q for g in groups for q in g]
        vecs = np.asarray(embedder.encode(flat))
        sims, at = [], 0
        for g in groups:
            v = vecs[at : at + len(g)]
            at += len(g)
            s = v @ v.T
            sims += [float(s[i, j]) for i in range(len(g)) for j in range(i + 1, len(g))]
        sets["xquad same passage"] = np.asarray(sims)
    from rich.table import Table

    table = Table(title="share of pairs at or above each cosine (a match)")
    table.add_column("threshold", justify="right")
    for name, values in sets.items():
        table.add_column(f"{name} ({len(values)})", justify="right")
    rows = {}
    for th in THRESHOLDS:
        shares = {name: float(np.mean(values >= th)) for name, values in sets.items()}
        rows[str(th)] = shares
        mark = " ←" if th == MATCH_COSINE else ""
        table.add_row(f"{th}{mark}", *(f"{v:.3f}" for v in shares.values()))
    console.print(table)
    for name, pairs in (("reworded", REWORDED), ("near miss", NEAR_MISSES)):
        for (a, b), c in zip(pairs, sets[name]):
            console.print(f"  {name:9s} {c:.3f}  {a} | {b}", highlight=False)
    console.print(f"[dim]{time.perf_counter() - t0:.0f} s; load average {load0} → {loadavg()}[/]")
    save(
        "reviewed_match",
        {
            "match_cosine": MATCH_COSINE,
            "shares": rows,
            "pairs": {
                name: [round(float(c), 3) for c in values]
                for name, values in sets.items()
                if name != "xquad same passage"
            },
        },
        started_load=load0,
    )


if __name__ == "__main__":
    main()
