"""A seeded random sample of the pairs a real night keeps, with where each came from.

    python bench/pair_sample.py                        # 20 of a 1,000-chunk night
    python bench/pair_sample.py --sample 20 --seed 0 --data-dir /tmp/night   # keep the index

The night is :mod:`night_sizing`'s (the same seeded files, index and ``--chunks`` new
chunks, half 18F and half Sourcegraph): the refresh's pair step on it, ``extract_pairs``
for every chunk then ``filter_pairs`` with the nightly settings. ``--sample`` of the kept
pairs are drawn with ``--seed`` and printed with their provenance: the generator
(``teacher``: ``answer-first:<kind>`` or ``extract:<kind>``), the chunk's collection,
document and heading, the sentence an answer-first span was cut from, and each filter's
score (``support``: share of the answer's words in the chunk; ``max_similarity``: MiniLM
cosine to the nearest question kept before it, duplicates from the dedupe threshold up;
``round_trip_rank``: the chunk's rank when the question is searched). ``--json`` prints the
sample as one JSON line last.
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

from common import console, exit_cleanly_on_sigterm, loadavg, save  # noqa: E402
from night_sizing import CORPORA_DIR, filter_night, index_night, night_corpora  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=1000, help="new chunks of the night (half each)")
    ap.add_argument("--sample", type=int, default=20, help="kept pairs to print")
    ap.add_argument("--seed", type=int, default=0, help="the night's files and chunks, the sample")
    ap.add_argument("--data-dir", type=Path, default=None, help="keep (and reuse) the index here")
    ap.add_argument("--corpora", type=Path, default=CORPORA_DIR, help="../shared/data/corpora")
    ap.add_argument("--json", action="store_true", help="the sample as one JSON line last")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    corpora = night_corpora(args.corpora)
    if args.chunks < 2 or args.sample < 1:
        raise SystemExit("error: --chunks must be >= 2 and --sample >= 1")

    from ingest.embed import Embedder
    from lorebot.settings import Settings
    from slm.training.pairs import FilterStats, extract_pairs

    started, load0 = time.perf_counter(), loadavg()
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="lorebot-bench-pairs-"))
    settings = Settings(data_dir=root / "data")
    t = settings.training
    try:
        embedder = Embedder.from_settings(settings, exclusive=True)
        reader, chunks, night, index_s = index_night(
            settings, root, corpora, args.chunks, args.seed, embedder
        )
        try:
            t0 = time.perf_counter()
            candidates = [p for chunk in night for p in extract_pairs(chunk, run="night")]
            kept, stats = filter_night(candidates, chunks, reader, embedder, t, FilterStats())
            pairs_s = time.perf_counter() - t0
        finally:
            reader.close()
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    drawn = random.Random(args.seed).sample(kept, min(args.sample, len(kept)))
    sample = [
        {
            "teacher": p.teacher,
            "collection": p.collection,
            "document": p.document,
            "heading": chunks[p.chunk_id].heading,
            "question": p.question,
            "answer": p.answer,
            "sentence": p.sentence,
            "scores": p.scores,
        }
        for p in drawn
    ]
    console.print(
        f"{len(night)} chunks: {stats.generated} pairs written, {len(kept)} kept "
        f"(dropped: {stats.dropped}); {len(sample)} drawn with seed {args.seed}"
    )
    for i, row in enumerate(sample, start=1):
        sc = row["scores"]
        where = f"{row['collection']}/{row['document']}" + (
            f" › {row['heading']}" if row["heading"] else ""
        )
        console.print(
            f"{i:2d}. [{row['teacher']}] {where}\n"
            f"    Q: {row['question']}\n    A: {row['answer']}"
            + (f"\n    from: {row['sentence']}" if row["sentence"] else "")
            + f"\n    support {sc.get('support')}, nearest kept question "
            f"{sc.get('max_similarity')} (duplicate from {t.dedupe_similarity}), "
            f"round trip rank {sc.get('round_trip_rank')} (of {t.round_trip_k})",
            highlight=False,
            markup=False,  # "[answer-first:date]" is text, not markup
        )
    load1 = loadavg()
    console.print(
        f"[dim]index {index_s:.0f} s, pairs and filters {pairs_s:.0f} s; "
        f"load average {load0} → {load1}[/]"
    )
    result = {
        "chunks": len(night),
        "written": stats.generated,
        "kept": len(kept),
        "dropped": stats.dropped,
        "sample": sample,
        "timings_s": {"index": round(index_s, 1), "pairs": round(pairs_s, 1)},
        "bench_s": round(time.perf_counter() - started, 1),
    }
    save(
        "pair_sample",
        {"args": {k: str(v) for k, v in vars(args).items()}, **result},
        started_load=load0,
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
