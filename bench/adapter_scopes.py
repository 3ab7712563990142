"""One adapter per access scope, or one adapter over the intersection: which answers better?

    python bench/adapter_scopes.py                      # 18F handbook, two collections
    python bench/adapter_scopes.py --steps 20 --chunks 400 --eval 15 --keep DIR  # README figures

Two collections of the 18F handbook: ``public`` (getting-started/) and ``hr``
(hiring-staying-or-changing-jobs/). Two channel scopes: a public channel {public} and an
HR channel {public, hr}. Their intersection is {public}.

* The intersection design serves the {public} adapter in both channels.
* The per-scope design serves the {public} adapter in the public channel (the same
  adapter: both designs agree there) and a {public, hr} adapter in the HR channel.

So the two designs differ only on the HR channel's questions. The bench runs the real
nightly refresh twice in one data directory (same pair pool, same held-out split, same
budget): first with ``training.collections=[public]`` (the intersection adapter), then
with ``[public, hr]`` (the HR scope's adapter). It then asks the HR channel's held-out
pairs (questions the refresh wrote from chunks of both collections and kept out of
training), split by the collection they came from, to the base model, the intersection
adapter and the scope adapter, retrieving from {public, hr} as the HR channel does,
and reports token F1 and cosine similarity per model and collection, with durations.
The teacher is off (extraction pairs only): the 135M teacher gets ~0 % of its pairs
through the filters (README, "Nightly refresh"), and it would double the run time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

#: The shared data folder beside the checkout (or /work/shared from a worktree).
SHARED = REPO.parent / "shared" if (REPO.parent / "shared").is_dir() else Path("/work/shared")
PAGES = SHARED / "data" / "corpora" / "18f-handbook" / "pages"
PUBLIC_DIR = "getting-started"
HR_DIR = "hiring-staying-or-changing-jobs"
FIGURE = REPO / "bench" / "figures" / "adapter-scopes.png"
MODELS = ("base", "intersection", "scope")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=Path, default=PAGES)
    ap.add_argument("--steps", type=int, default=15, help="LoRA optimiser steps per adapter")
    ap.add_argument("--chunks", type=int, default=400, help="new chunks read per refresh")
    ap.add_argument("--eval", type=int, default=12, help="held-out questions per collection")
    ap.add_argument("--png", type=Path, default=FIGURE, help="where the bar chart goes")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data dir here")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: reuse its index, pair pool, trained adapters and answered evals",
    )
    ap.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="evaluate only these (a refresh runs only for the adapters named)",
    )
    args = ap.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    from ingest import Source, build_index
    from ingest.embed import Embedder
    from ingest.store import open_index
    from lorebot.settings import Settings
    from slm.training import registry
    from slm.training.gate import GateInputs, probes_from_pairs, run_gate
    from slm.training.pairs import load_pool
    from slm.training.refresh import _generator_factory, _held_out, run_refresh

    work = Path(tempfile.mkdtemp(prefix="adapter-scopes-"))
    data = args.keep or (work / "data")
    durations: dict[str, float] = {}
    try:
        training = {
            "max_new_chunks": args.chunks,
            "max_steps": args.steps,
            "batch_size": 2,
            "max_seq_len": 384,
            "time_budget_s": 1800,
            "eval_limit": 2,  # the runs' own gates only decide; the comparison is below
            "heldout_share": 0.3,
            "min_train_pairs": 4,
            "margin": -1.0,
            "injection_check": False,
            "use_feedback": False,
            "questions_per_chunk": 0,
        }
        embedder = Embedder(None)
        t0 = time.perf_counter()
        if not (args.reuse and (data / "index" / "CURRENT").is_file()):
            _say(f"indexing {PUBLIC_DIR}/ as public and {HR_DIR}/ as hr into {data}")
            build_index(
                Settings(data_dir=data),
                [
                    Source(path=args.pages / PUBLIC_DIR, collection="public"),
                    Source(path=args.pages / HR_DIR, collection="hr"),
                ],
                progress=False,
                embedder=embedder,
            )
        durations["index"] = round(time.perf_counter() - t0, 1)

        reports = {}
        for name, collections in (("intersection", ["public"]), ("scope", ["public", "hr"])):
            if name not in args.models:
                continue
            s = Settings(
                data_dir=data,
                training={**training, "collections": collections},
                model={"max_tokens": 48},
            )
            done = _trained(s, collections) if args.reuse else None
            if done is not None:  # an earlier run of this bench trained it (--keep --reuse)
                reports[name] = done
                console.print(f"{name}: reusing {done.version}")
                continue
            t0 = time.perf_counter()
            _say(f"refresh {name}: training on {collections}")
            report = run_refresh(s, embedder=embedder, progress=_refresh_progress(name))
            durations[f"refresh {name}"] = round(time.perf_counter() - t0, 1)
            console.print(report.one_line())
            if report.status != "promoted":
                raise SystemExit(f"{name}: {report.status}: {report.reason}")
            reports[name] = report

        s = Settings(
            data_dir=data,
            training={**training, "collections": ["public", "hr"]},
            model={"max_tokens": 48},
        )
        reader = open_index(s, embedder=embedder)
        chunks = {c.chunk_id: c for c in reader.iter_chunks(["public", "hr"])}
        t = s.training
        heldout = [
            p
            for p in load_pool(s)
            if p.chunk_id in chunks and _held_out(p, t.heldout_share, t.seed)
        ]
        models = [("base", _generator_factory(s, None, None), "base")]
        for name in ("intersection", "scope"):
            if name in args.models:
                version = reports[name].version
                path = registry.version_dir(s, version) / registry.ADAPTER_FILE
                models.append((name, _generator_factory(s, path, version), version))
        models = [m for m in models if m[0] in args.models]
        cache = data / "bench-eval"
        cache.mkdir(parents=True, exist_ok=True)
        results: dict[str, dict[str, dict]] = {"public": {}, "hr": {}}
        # The HR collection first: its questions are where the two designs should differ most.
        for collection in ("hr", "public"):
            pairs = [p for p in heldout if chunks[p.chunk_id].collection == collection]
            pairs = sorted(pairs, key=lambda p: p.pair_id)[: args.eval]
            ids = [p.pair_id for p in pairs]
            for label, make, version in models:
                # Each (collection, model) answer set is kept, so a rerun with --reuse asks
                # only what is missing (and two processes can share the work).
                saved = cache / f"{collection}-{label}-{version}.json"
                if args.reuse and saved.is_file():
                    done = json.loads(saved.read_text(encoding="utf-8"))
                    if done["pair_ids"] == ids:
                        _say(f"eval {collection}: {label} already asked ({saved.name})")
                        results[collection][label] = done["scores"]
                        durations[f"eval {collection} {label}"] = done["duration_s"]
                        continue
                t0 = time.perf_counter()
                _say(f"eval {collection}: asking {label} {len(pairs)} held-out questions")
                scores = run_gate(
                    s,
                    GateInputs(heldout=probes_from_pairs(pairs), no_gold=[], injection=False),
                    [(label, make)],
                    retriever=reader,
                    embedder=embedder,
                    collections=["public", "hr"],
                )
                took = round(time.perf_counter() - t0, 1)
                durations[f"eval {collection} {label}"] = took
                flat = {"n": len(pairs), **scores[label].flat()}
                results[collection][label] = flat
                saved.write_text(
                    json.dumps({"pair_ids": ids, "scores": flat, "duration_s": took}),
                    encoding="utf-8",
                )
                _say(
                    f"eval {collection}: {label} F1 {flat.get('heldout_f1')} "
                    f"cosine {flat.get('heldout_similarity')} ({took} s)"
                )
        reader.close()

        table = Table(
            "HR channel's held-out questions from",
            "n",
            "base F1 / sim",
            "intersection adapter",
            "scope adapter",
            title="adapter per scope vs intersection (18F handbook)",
        )
        for collection, by_model in results.items():
            cells = []
            for label in MODELS:
                m = by_model.get(label, {})
                f1, sim = m.get("heldout_f1"), m.get("heldout_similarity")
                if f1 is None:
                    cells.append("-")
                else:
                    cells.append(f"{f1:.3f}" + (f" / {sim:.3f}" if sim is not None else ""))
            n = next((m["n"] for m in by_model.values()), 0)
            table.add_row(collection, str(n), *cells)
        console.print(table)
        console.print(durations)
        png = plot(results, args.png)
        console.print(f"[dim]wrote {png}[/]")
        save(
            "adapter_scopes" if set(args.models) == set(MODELS) else "adapter_scopes_partial",
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "training": training,
                "results": results,
                "durations_s": durations,
                "plot": str(png.relative_to(REPO) if png.is_relative_to(REPO) else png),
                "reports": {
                    k: {
                        "version": r.version,
                        "collections": r.collections,
                        "chunks": r.chunks,
                        "split": r.split,
                        "training": r.training,
                        "durations_s": r.durations_s,
                    }
                    for k, r in reports.items()
                },
            },
            started_load=started_load,
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def plot(results: dict[str, dict[str, dict]], png: Path) -> Path:
    """Token F1 and cosine per collection of the HR channel's questions, one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), dpi=110)
    FigureCanvasAgg(fig)
    collections = list(results)
    width = 0.8 / len(MODELS)
    for ax, key, label in zip(
        fig.subplots(1, 2),
        ("heldout_f1", "heldout_similarity"),
        ("token F1", "cosine to the reference answer"),
        strict=True,
    ):
        for i, model in enumerate(MODELS):
            values = [results[c].get(model, {}).get(key) or 0.0 for c in collections]
            xs = [j + (i - (len(MODELS) - 1) / 2) * width for j in range(len(collections))]
            bars = ax.bar(xs, values, width, label=f"{model} adapter" if i else model)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(
            range(len(collections)),
            [f"{c} (n={next((m['n'] for m in results[c].values()), 0)})" for c in collections],
        )
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.0 if key == "heldout_similarity" else 0.6)
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("HR channel's held-out questions: intersection vs per-scope adapter", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    return png


def _say(message: str) -> None:
    """One progress line with the time and the load (the bench runs for an hour or more)."""
    load = loadavg()
    console.print(f"[dim]{time.strftime('%H:%M:%S')} load {load[0] if load else '?'}[/] {message}")


def _refresh_progress(name: str, every_s: float = 30.0):
    """The refresh's step lines: each step starting, and a detail at most every ``every_s``."""
    last = {"at": 0.0}

    def progress(step: str, message: str, detail: bool) -> None:
        if detail and time.monotonic() - last["at"] < every_s:
            return
        last["at"] = time.monotonic()
        _say(f"refresh {name}: {step}{'  ' if detail else ' — '}{message}")

    return progress


def _trained(settings, collections: list[str]):
    """The report of the newest promoted run trained on exactly ``collections``, if any."""
    from slm.training import registry
    from slm.training.refresh import RefreshReport, refresh_dir

    for card in reversed(registry.list_adapters(settings)):
        # The card lists the collections sorted (["hr", "public"]).
        if sorted(card.get("collections") or []) == sorted(collections) and card.get("status") in (
            "promoted",
            "retired",
        ):
            path = refresh_dir(settings) / "runs" / f"{card['run']}.json"
            return RefreshReport(**json.loads(path.read_text(encoding="utf-8")))
    return None


if __name__ == "__main__":
    main()
