"""The parse step on one core: where its time goes, and whether a change kept its output.

    python bench/parse_speed.py time ../shared/data/corpora/18f-handbook/pages [--profile]
    python bench/parse_speed.py dump ../shared/data/corpora/18f-handbook/pages new.jsonl
    python bench/parse_speed.py dump DIR old.jsonl --code /tmp/lorebot-before
    python bench/parse_speed.py compare old.jsonl new.jsonl

``time``: every file of the folder through ``ingest.parse.parse_job`` in this one process
(after one warm-up file, so imports and model loads are not counted per file), then the
start-up of one real parse worker (``TimeoutPool``: a fresh interpreter, its imports, its
first small file). ``--profile`` runs the files under cProfile, counting CPU time, and sums
the time spent in each library (spaCy, Markdown, unstructured, our chunking, the tokenizer...).

``dump``: each file's parse output as one JSON line (title, url, element count, and every
chunk's id, text, embedded text, heading, page, token count, kind and sentence spans as
``ingest.build.unit_spans`` computes them). ``--code DIR`` imports ``ingest`` and
``lorebot`` from DIR instead, e.g. ``git archive <commit> ingest lorebot | tar -x -C DIR``
for the output before a change. ``compare`` prints the files whose output differs and
exits with 1 if any does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _setup(code: str | None) -> None:
    """Import path and the parse workers' environment, before anything of ours is imported."""
    root = str(Path(code).resolve()) if code else str(REPO)
    if code and not (Path(root) / "ingest" / "parse").is_dir():
        sys.exit(f"--code {code}: no ingest/parse package there")
    sys.path.insert(0, root)
    from ingest.parse import worker_init

    worker_init()


def _files(folder: str, limit: int | None) -> list[Path]:
    from ingest.parse import kind_of

    root = Path(folder).resolve()
    if not root.is_dir():
        sys.exit(f"not a folder: {folder}")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and kind_of(p)]
    if not files:
        sys.exit(f"no parseable files under {folder}")
    return files[:limit] if limit else files


def _job(path: Path) -> Any:
    from ingest.parse import ParseJob

    return ParseJob.for_file(path, "check")


def _record(path: Path, root: Path, out: Any) -> dict[str, Any]:
    from ingest.build import unit_spans
    from ingest.parse import ParseOutput

    rec: dict[str, Any] = {"file": str(path.relative_to(root))}
    if not isinstance(out, ParseOutput):
        rec["failure"] = f"{out.status}: {out.reason}"
        return rec
    rec.update(title=out.title, url=out.url, elements=out.elements, meta=out.meta)
    rec["chunks"] = [{**c, "spans": unit_spans(c["text"], c["embed_text"])} for c in out.chunks]
    return rec


# -------------------------------------------------------------------------------- time
_LIBRARIES = (
    ("spaCy / thinc", ("spacy/", "thinc/", "srsly/", "cymem/", "preshed/", "blis/")),
    ("markdown", ("/markdown/",)),
    ("lxml", ("lxml",)),
    ("unstructured", ("/unstructured/",)),
    ("tokenizers", ("/tokenizers/", "tokenizers.")),
    ("ingest chunking / tokens", ("ingest/chunking.py", "ingest/tokens.py")),
    ("ingest parse", ("ingest/parse/", "ingest/markup.py")),
    ("yaml", ("/yaml/",)),
    ("re", ("/re/", "_sre", "re.py")),
)


def _by_library(stats: Any) -> list[tuple[str, float]]:
    """Own time (tottime) of every profiled function, summed by the library it lives in."""
    sums: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        where = f"{filename}:{name}"
        label = next((lab for lab, keys in _LIBRARIES if any(k in where for k in keys)), "other")
        sums[label] = sums.get(label, 0.0) + tottime
    return sorted(sums.items(), key=lambda kv: -kv[1])


def _startup_s(job: Any) -> float:
    """Seconds from starting one real parse worker to its first small file's result."""
    from ingest.build import make_parse_pool

    t = time.perf_counter()
    with make_parse_pool(1, 120) as pool:
        for _, ok, value in pool.imap_unordered([job]):
            if not ok:
                raise RuntimeError(f"the parse worker failed: {value}")
        elapsed = time.perf_counter() - t
    return elapsed


def cmd_time(args: argparse.Namespace) -> None:
    _setup(args.code)
    from ingest.parse import parse_job

    files = _files(args.folder, args.limit)
    load = os.getloadavg()
    t = time.perf_counter()
    parse_job(_job(files[0]))  # imports, tokenizer and (if used) the spaCy model
    first_s = time.perf_counter() - t
    jobs = [_job(p) for p in files]
    profiler = None
    if args.profile:
        import cProfile

        # CPU time, not wall time: the machine is shared, and waiting is not our cost.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    cpu = time.process_time()
    t = time.perf_counter()
    chunks = 0
    for job in jobs:
        out = parse_job(job)
        chunks += len(getattr(out, "chunks", []))
    wall = time.perf_counter() - t
    cpu = time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
    startup = _startup_s(jobs[0]) if not args.no_startup else None
    data = {
        "folder": str(Path(args.folder).resolve()),
        "code": str(Path(args.code).resolve()) if args.code else str(REPO),
        "files": len(files),
        "chunks": chunks,
        "parse_s": round(wall, 2),
        "parse_cpu_s": round(cpu, 2),
        "files_per_s": round(len(files) / wall, 2),
        "first_file_in_process_s": round(first_s, 2),
        "worker_startup_s": round(startup, 2) if startup is not None else None,
        "profiled": bool(profiler),
        "load_before_after": f"{load[0]:.2f} / {os.getloadavg()[0]:.2f}",
    }
    if profiler is not None:
        import pstats

        stats = pstats.Stats(profiler)
        data["own_time_by_library_s"] = {k: round(v, 2) for k, v in _by_library(stats)}
        stats.sort_stats("cumulative").print_stats(args.top)
    print(json.dumps(data, indent=1))
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"parse-speed-{args.save}.json"
        path.write_text(json.dumps(data, indent=1))
        print(f"wrote {path}")


# -------------------------------------------------------------------------- dump / compare
def cmd_dump(args: argparse.Namespace) -> None:
    _setup(args.code)
    from ingest.parse import parse_job

    root = Path(args.folder).resolve()
    files = _files(args.folder, args.limit)
    t = time.perf_counter()
    with open(args.out, "w", encoding="utf-8") as fh:
        for path in files:
            rec = _record(path, root, parse_job(_job(path)))
            fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    n = sum(1 for _ in open(args.out, encoding="utf-8"))
    print(f"{n} files → {args.out} in {time.perf_counter() - t:.1f} s")


def _load(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            return {(r := json.loads(line))["file"]: r for line in fh if line.strip()}
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"cannot read {path}: {exc}")


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in sorted(set(a) | set(b)):
        if key == "chunks":
            ca, cb = a.get("chunks", []), b.get("chunks", [])
            if len(ca) != len(cb):
                return f"{len(ca)} chunks vs {len(cb)}"
            for i, (x, y) in enumerate(zip(ca, cb)):
                for field in sorted(set(x) | set(y)):
                    if x.get(field) != y.get(field):
                        return f"chunk {i} {field}: {x.get(field)!r:.120} vs {y.get(field)!r:.120}"
        elif a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r:.120} vs {b.get(key)!r:.120}"
    return "?"


def cmd_compare(args: argparse.Namespace) -> None:
    old, new = _load(args.old), _load(args.new)
    differ = 0
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            differ += 1
            print(f"{name}: only in {args.old if name in old else args.new}")
        elif old[name] != new[name]:
            differ += 1
            print(f"{name}: {_first_difference(old[name], new[name])}")
    chunks = sum(len(r.get("chunks", [])) for r in new.values())
    print(f"{len(new)} files, {chunks} chunks: {differ} file(s) differ")
    sys.exit(1 if differ else 0)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time", help="parse a folder in this process, timed")
    t.add_argument("folder")
    t.add_argument("--limit", type=int)
    t.add_argument("--profile", action="store_true")
    t.add_argument("--top", type=int, default=30, help="profile rows to print")
    t.add_argument("--no-startup", action="store_true", help="skip the worker start-up")
    t.add_argument("--code", help="import ingest/lorebot from this folder")
    t.add_argument("--save", metavar="NAME", help="write bench/results/parse-speed-NAME.json")
    d = sub.add_parser("dump", help="each file's parse output as JSON lines")
    d.add_argument("folder")
    d.add_argument("out")
    d.add_argument("--limit", type=int)
    d.add_argument("--code", help="import ingest/lorebot from this folder")
    c = sub.add_parser("compare", help="files whose dumped output differs")
    c.add_argument("old")
    c.add_argument("new")
    args = p.parse_args()
    {"time": cmd_time, "dump": cmd_dump, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    main()
