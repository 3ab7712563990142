"""How long a night must be: pairs per 100 chunks and the LoRA time to see each one once.

    python bench/night_sizing.py                       # 1,000 chunks: 500 18F + 500 Sourcegraph
    python bench/night_sizing.py --chunks 200 --train-steps 4 --teacher-chunks 10

1. Markdown files of the 18F and Sourcegraph handbooks (../shared/data/corpora), drawn in a
   seeded order until each corpus gives about ``--chunks``/2 chunks' worth, are copied to a
   temporary folder and indexed by the real ingestion into a fresh data directory, one
   collection each; exactly ``--chunks``/2 chunks of each are then drawn as the night's new
   chunks (the index keeps all of the files' chunks, as a real one would).
2. The refresh's pair step on them: ``extract_pairs`` (headings, definitions, answer-first
   spans; no model) for every chunk, the local teacher for the first ``--teacher-chunks``
   (0 by default: it is timed apart, since it costs seconds per chunk), then
   ``filter_pairs`` with the nightly settings (format, supported, duplicate, round trip).
   Written and kept pairs, and drops per filter, are reported per 100 chunks in order and
   per collection.
3. The refresh's example step on the kept pairs: the held-out split, RAFT examples (with
   their not-found share) and reader examples, tokenized as training tokenizes them
   (``lora.build_dataset``): tokens per example, and the batch tokens of one epoch with
   the length-grouped batches training uses (and, for comparison, plain random batches).
4. ``--train-steps`` optimiser steps of ``LoraTrainer`` on those very examples (the first
   is warm-up), timed: seconds per batch token on this machine now. The night's LoRA time
   for one epoch (every training example once) is the epoch's batch tokens times that.

Settings come from ``LOREBOT_*`` as everywhere (batch size, LoRA rank, threads, context
budget). The machine is shared: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, console, exit_cleanly_on_sigterm, loadavg, save  # noqa: E402

CORPORA_DIR = REPO.parent / "shared" / "data" / "corpora"
#: Collection name → folder under the corpora directory.
CORPORA = {"18f": "18f-handbook/pages", "sourcegraph": "sourcegraph-handbook/content"}
#: 18F's pages: 1.76 MB of Markdown made 2,359 chunks.
BYTES_PER_CHUNK = 745
OUTCOMES = ("format", "supported", "duplicate", "round_trip", "kept")


def pick_files(root: Path, chunks: int, seed: int) -> list[str]:
    """Relative paths of Markdown files, in a seeded order, about ``chunks`` chunks' worth."""
    files = sorted(p for p in root.rglob("*.md") if p.is_file())
    random.Random(seed).shuffle(files)
    out, size = [], 0
    for path in files:
        if size >= 1.2 * chunks * BYTES_PER_CHUNK:
            break
        out.append(path.relative_to(root).as_posix())
        size += path.stat().st_size
    return out


def teacher_kind(pair: Any) -> str:
    kind = pair.teacher.split(":", 1)[0]
    if kind == "extract":
        return "answer-first" if pair.sentence else "headings/definitions"
    return kind


def index_night(
    settings: Any, root: Path, corpora: dict[str, Path], n: int, seed: int, embedder: Any
) -> tuple[Any, dict[str, Any], list[Any], float]:
    """Index about ``n`` chunks' worth of each corpus's files into ``settings.data_dir`` (a
    collection each) and draw the night's ``n`` new chunks, half of each, seeded: (reader,
    every chunk by id, the night's chunks, seconds indexing). The files are copied under
    ``root``; an index already in the data directory is reused as it is."""
    from ingest import Source, build_index, open_index
    from ingest.store import current_version

    half = n // 2
    files, index_s = 0, 0.0
    if current_version(settings) is None:
        sources = []
        for name, path in corpora.items():
            # A copy of the drawn files (an include pattern without a slash would also
            # match every same-named file below the root).
            folder = root / "corpus" / name
            for rel in pick_files(path, half, seed):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path / rel, folder / rel)
                files += 1
            sources.append(Source(path=folder, collection=name))
        t0 = time.perf_counter()
        build_index(settings, sources, progress=False, embedder=embedder)
        index_s = time.perf_counter() - t0
    reader = open_index(settings, embedder=embedder)
    rng = random.Random(seed)
    chunks: dict[str, Any] = {}
    night: list[Any] = []
    for name in corpora:
        mine = list(reader.iter_chunks([name]))
        for c in mine:
            chunks[c.chunk_id] = c
        night += rng.sample(mine, min(half, len(mine)))
    console.print(
        f"index: {reader.n} chunks"
        + (f" of {files} files in {index_s:.0f} s" if files else " (reused)")
        + f"; the night's new chunks: {len(night)} (load {loadavg()})"
    )
    return reader, chunks, night, index_s


def night_corpora(root: Path) -> dict[str, Path]:
    """The two handbooks under ``root`` (../shared/data/corpora); a one-line exit if absent."""
    corpora = {name: root / rel for name, rel in CORPORA.items()}
    missing = [str(p) for p in corpora.values() if not p.is_dir()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not found (fix: ../shared/data is needed)")
    return corpora


def filter_night(
    candidates: list[Any], chunks: Any, reader: Any, embedder: Any, training: Any, stats: Any
) -> tuple[list[Any], Any]:
    """The night's filters with the nightly settings (``training``), as the refresh runs them."""
    from slm.training.pairs import filter_pairs

    return filter_pairs(
        candidates,
        chunks,
        reader=reader,
        embedder=embedder,
        collections=list(CORPORA),
        min_support=training.min_support,
        round_trip_k=training.round_trip_k,
        dedupe_similarity=training.dedupe_similarity,
        stats=stats,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=1000, help="new chunks of the night (half each)")
    ap.add_argument("--teacher-chunks", type=int, default=0, help="chunks the local teacher reads")
    ap.add_argument("--train-steps", type=int, default=6, help="timed LoRA steps (0: none)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="LoRA threads (0: chosen per step; unset: the settings')",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None, help="keep (and reuse) the index here")
    ap.add_argument("--corpora", type=Path, default=CORPORA_DIR, help="../shared/data/corpora")
    ap.add_argument("--name", default="night_sizing", help="results file name")
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    corpora = night_corpora(args.corpora)
    if args.chunks < 2 or args.train_steps < 0 or args.teacher_chunks < 0:
        raise SystemExit("error: --chunks must be >= 2, --train-steps and --teacher-chunks >= 0")

    from ingest.embed import Embedder
    from lorebot.assets import answer_model_path
    from lorebot.settings import Settings
    from slm.training import lora
    from slm.training.pairs import (
        FilterStats,
        extract_pairs,
        make_teacher,
        teacher_pairs,
    )
    from slm.training.raft import build_examples
    from slm.training.refresh import _held_out, _token_counter, lora_config

    started, load0 = time.perf_counter(), loadavg()
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="lorebot-bench-night-"))
    settings = Settings(data_dir=root / "data")
    t = settings.training
    timings: dict[str, float] = {}
    try:
        embedder = Embedder.from_settings(settings, exclusive=True)
        reader, chunks, night, timings["index"] = index_night(
            settings, root, corpora, args.chunks, args.seed, embedder
        )

        # ---- pairs, as refresh._pairs makes them
        t0 = time.perf_counter()
        candidates, origin = [], {}
        for i, chunk in enumerate(night):
            for pair in extract_pairs(chunk, run="night"):
                candidates.append(pair)
                origin[id(pair)] = i
        timings["extract"] = time.perf_counter() - t0
        teacher_s = 0.0
        if args.teacher_chunks:
            teacher = make_teacher(settings)
            try:
                t0 = time.perf_counter()
                for i, chunk in enumerate(night[: args.teacher_chunks]):
                    for pair in teacher_pairs(
                        chunk,
                        teacher,
                        n=max(1, t.questions_per_chunk),
                        context_tokens=settings.retrieval.context_tokens,
                        run="night",
                    ):
                        candidates.append(pair)
                        origin[id(pair)] = i
                teacher_s = time.perf_counter() - t0
            finally:
                teacher.close()
        timings["teacher"] = teacher_s

        outcome: dict[int, str] = {}

        class Recorder(FilterStats):
            def count(self, pair: Any, what: str) -> None:
                super().count(pair, what)
                if what != "generated":
                    outcome[id(pair)] = what

        t0 = time.perf_counter()
        kept, stats = filter_night(candidates, chunks, reader, embedder, t, Recorder())
        timings["filters"] = time.perf_counter() - t0

        def tally(pairs: list[Any]) -> dict[str, int]:
            row = {"written": len(pairs)}
            for o in OUTCOMES:
                row[o] = sum(1 for p in pairs if outcome.get(id(p)) == o)
            return row

        blocks = []
        for start in range(0, len(night), 100):
            inside = [p for p in candidates if start <= origin[id(p)] < start + 100]
            blocks.append(
                {"chunks": f"{start + 1}-{min(start + 100, len(night))}", **tally(inside)}
            )
        by_collection = {
            name: tally([p for p in candidates if p.collection == name]) for name in CORPORA
        }
        by_kind = {}
        for p in candidates:
            by_kind.setdefault(teacher_kind(p), []).append(p)
        kinds = {k: tally(v) for k, v in sorted(by_kind.items())}

        # ---- examples, as refresh._examples makes them
        t0 = time.perf_counter()
        train = [p for p in kept if not _held_out(p, t.heldout_share, t.seed)]
        examples = build_examples(
            train,
            chunks,
            reader,
            list(CORPORA),
            distractors=t.raft_distractors,
            no_gold_share=t.raft_no_gold_share,
            seed=t.seed,
            context_tokens=settings.retrieval.context_tokens,
            count_tokens=_token_counter(settings),
            min_support=t.min_support,
        )
        timings["examples"] = time.perf_counter() - t0
        kinds_ex = {
            k: sum(1 for e in examples if e.kind == k) for k in ("gold", "no_gold", "reader")
        }
        raft = kinds_ex["gold"] + kinds_ex["no_gold"]
        config = lora_config(settings)
        if args.threads is not None:
            config.threads = args.threads or None
        train_examples = [lora.TrainExample(messages=e.messages) for e in examples]
        base = answer_model_path(settings.model.path)
        codec = lora.chat_codec(base, n_ctx=max(config.max_seq_len, 512))
        try:
            data, skipped = lora.build_dataset(codec, train_examples, config.max_seq_len)
            pad = lora.end_of_turn_id(codec)
        finally:
            codec.close()
        lengths = [len(ids) for ids, _ in data]
        targets = [sum(1 for x in lab if x != -100) for _, lab in data]
        steps_per_epoch = math.ceil(len(data) / config.batch_size)

        def epoch_cells(window: int) -> int:
            stream = lora.batches(data, config.batch_size, pad, config.seed, window=window)
            return sum(int(next(stream)["input_ids"].numel()) for _ in range(steps_per_epoch))

        cells_grouped, cells_plain = epoch_cells(lora.LENGTH_WINDOW), epoch_cells(1)

        # ---- LoRA steps on these examples
        rate: dict[str, Any] = {}
        if args.train_steps:
            with lora.reuse_base_model(), lora.torch_threads(config.threads):
                t0 = time.perf_counter()
                trainer = lora.LoraTrainer(base, train_examples, config)
                rate["load_s"] = round(time.perf_counter() - t0, 1)
                seconds, cells, tokens = [], [], []
                for _ in range(args.train_steps):
                    before = trainer.steps
                    w = time.perf_counter()
                    _, held = trainer.step()
                    wall = time.perf_counter() - w
                    if before >= 1:  # step 1 is warm-up
                        seconds.append(wall)
                        tokens.append(held)
                        cells.append(trainer.last_cells)
                rate.update(
                    {
                        "steps_timed": len(seconds),
                        "tokens_per_s": round(sum(tokens) / sum(seconds), 1) if seconds else None,
                        "batch_tokens_per_s": round(sum(cells) / sum(seconds), 1)
                        if seconds
                        else None,
                        "thread_steps": trainer.thread_steps,
                        "step_s_median": round(statistics.median(seconds), 2) if seconds else None,
                    }
                )
        epoch_s = (
            cells_grouped / rate["batch_tokens_per_s"] if rate.get("batch_tokens_per_s") else None
        )
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    n = len(night)
    per100 = {k: round(100 * v / n, 1) for k, v in tally(candidates).items()}
    result = {
        "chunks": n,
        "index_chunks": len(chunks),
        "per_100_chunks": per100,
        "blocks_of_100": blocks,
        "by_collection": by_collection,
        "by_source": kinds,
        "pass_rates": stats.to_dict()["pass_rates"],
        "kept": len(kept),
        "train_pairs": len(train),
        "examples": {
            **kinds_ex,
            "not_found_share_of_raft": round(kinds_ex["no_gold"] / raft, 3) if raft else None,
            "skipped_too_long": skipped,
            "used": len(data),
        },  # fmt: skip
        "tokens_per_example": {
            "mean": round(statistics.mean(lengths), 1) if lengths else None,
            "median": statistics.median(lengths) if lengths else None,
            "max": max(lengths, default=0),
            "target_mean": round(statistics.mean(targets), 1) if targets else None,
        },
        "epoch": {
            "batch_size": config.batch_size,
            "steps": steps_per_epoch,
            "tokens": sum(lengths),
            "batch_tokens_length_grouped": cells_grouped,
            "batch_tokens_random": cells_plain,
            "max_steps_setting": config.max_steps,
            "time_budget_s_setting": config.time_budget_s,
        },
        "lora_rate": rate,
        "epoch_lora_s": round(epoch_s) if epoch_s else None,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "teacher_chunks": args.teacher_chunks,
        "bench_s": round(time.perf_counter() - started, 1),
    }

    from rich.table import Table

    table = Table(title=f"pairs from {n} handbook chunks (per 100 chunks; drops per filter)")
    for col in ("chunks", "written", "format", "supported", "duplicate", "round trip", "kept"):
        table.add_column(col, justify="right")
    for b in blocks:
        table.add_row(b["chunks"], *(str(b[k]) for k in ("written", *OUTCOMES)))
    table.add_row("per 100", *(f"{per100[k]:.1f}" for k in ("written", *OUTCOMES)))
    console.print(table)
    for label, rows in (("collection", by_collection), ("source", kinds)):
        for name, row in rows.items():
            console.print(
                f"  {label} {name}: written {row['written']}, kept {row['kept']} "
                f"(format {row['format']}, supported {row['supported']}, duplicate "
                f"{row['duplicate']}, round trip {row['round_trip']})"
            )
    ep = result["epoch"]
    console.print(
        f"kept {len(kept)} pairs, {len(train)} for training → {len(examples)} examples "
        f"({kinds_ex}; not-found share of RAFT {result['examples']['not_found_share_of_raft']}); "
        f"{len(data)} fit {config.max_seq_len} tokens, mean {result['tokens_per_example']['mean']}"
        f" tokens; one epoch = {ep['steps']} steps of {ep['batch_size']}, {ep['tokens']:,} tokens,"
        f" {cells_grouped:,} batch tokens length-grouped ({cells_plain:,} random)"
    )
    if epoch_s:
        console.print(
            f"LoRA here now: {rate['tokens_per_s']} tokens/s ({rate['batch_tokens_per_s']} batch "
            f"tokens/s, threads {rate['thread_steps']}): one epoch ≈ {epoch_s / 3600:.2f} h "
            f"(settings: max_steps {config.max_steps}, time_budget_s {config.time_budget_s:.0f})"
        )
    console.print(f"[dim]timings {result['timings_s']}; load average {loadavg()}[/]")
    save(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, **result},
         started_load=load0)  # fmt: skip


if __name__ == "__main__":
    main()
