"""Embedding speed and retrieval quality of each way to run MiniLM, in one run.

    python bench/embed_speed.py                       # 600 chunks of the 18F handbook, 3 rounds
    python bench/embed_speed.py --chunks 1500 --rounds 5 --variants st-b64 onnx-int8

The chunks are ingest's own (the 18F handbook parsed and chunked as a build does; the
gold pages of the staff questions first, then pages in path order). Each variant embeds
all of them once per round, the variants taking turns in a rotating order so that a
burst of load from other work on the machine hits them alike. Speed is reported as the
median over rounds of chunks/s, tokens/s (the word pieces the model reads, [CLS]/[SEP]
included, cut at its window) and the ratio to ``st-b64`` measured in the same round.

Variants:
  st-b64            plain sentence-transformers ``encode``, batch 64 (the naive baseline)
  ingest-torch      what ingest did before: ``Embedder.encode_with_spans`` on torch, in
                    groups of ``build.EMBED_GROUP`` (chunk and sentence vectors)
  onnx-fp32         the same weights exported to ONNX Runtime, length-sorted batches
  onnx-int8         that graph with dynamically int8-quantised weights (ingest's default)
  onnx-int8-seq128  int8 reading at most 128 tokens of each chunk
  onnx-int8-b16/-b32  int8 with smaller batches

Quality, per variant whose chunk vectors differ from the baseline's by 1e-4 or more
(the others share its quality), with its own query vectors (the same weights as its documents):
XQuAD-en passage recall@1/@5 (every question against the 240 passages) and the 18F staff
questions' gold-page recall@1/@5 among the benchmark's chunks (tune and test halves).
Results go to ``bench/results/embed-speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import loadavg, save  # noqa: E402
from ingest.embed import Embedder, offline_env  # noqa: E402
from lorebot.settings import Settings  # noqa: E402

SHARED = REPO.parent / "shared"
CORPUS = SHARED / "data" / "corpora" / "18f-handbook"
XQUAD = SHARED / "data" / "qa" / "xquad-en" / "xquad.en.json"
STAFF = REPO / "tests" / "fixtures" / "staff_questions.json"
VARIANTS = [
    "st-b64",
    "ingest-torch",
    "onnx-fp32",
    "onnx-int8",
    "onnx-int8-seq128",
    "onnx-int8-b16",
    "onnx-int8-b32",
]
DEFAULT_VARIANTS = ["st-b64", "ingest-torch", "onnx-fp32", "onnx-int8", "onnx-int8-seq128"]


def load_chunks(n: int, gold_pages: list[str]) -> list[dict[str, Any]]:
    """Ingest's chunks of the 18F handbook: the gold pages first, then pages in order."""
    from ingest.parse import ParseJob, ParseOutput, parse_job
    from ingest.parse.detect import kind_of
    from lorebot.assets import embedding_model_path

    settings = Settings()
    model_dir = str(embedding_model_path(settings.index.embedding_model))
    pages = [CORPUS / g for g in gold_pages if (CORPUS / g).is_file()]
    pages += [p for p in sorted((CORPUS / "pages").rglob("*.md")) if p not in pages]
    chunks: list[dict[str, Any]] = []
    for path in pages:
        if len(chunks) >= n:
            break
        kind = kind_of(path)
        if kind is None:
            continue
        out = parse_job(
            ParseJob(
                path=str(path.resolve()),
                source=str(CORPUS),
                collection="bench",
                kind=kind,
                content_hash="",
                modified=None,
                model_dir=model_dir,
                chunk_tokens=settings.index.chunk_tokens,
                overlap_tokens=settings.index.chunk_overlap_tokens,
            )
        )
        if isinstance(out, ParseOutput):
            rel = str(path.relative_to(CORPUS))
            chunks += [{**c, "page": rel} for c in out.chunks]
    return chunks[:n]


class Variant:
    """One way to embed: documents (timed) and queries (for the quality columns)."""

    def __init__(self, name: str, models: Path, threads: int) -> None:
        self.name = name
        self.threads = threads
        if name == "st-b64":
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(threads)
            self.st = SentenceTransformer(
                str(Embedder().model_dir), device="cpu", local_files_only=True
            )
            self.window = self.st.max_seq_length
            return
        batch, seq = 64, None
        if name.startswith("onnx-int8-b"):
            batch = int(name.rsplit("b", 1)[1])
        if name.endswith("-seq128"):
            seq = 128
        backend = {"ingest-torch": "torch", "onnx-fp32": "onnx"}.get(name, "onnx-int8")
        self.emb = Embedder(
            batch_size=batch, threads=threads, onnx_dir=models, backend=backend, max_seq_length=seq
        )
        self.emb.encode(["warm up: load, export or quantise the graph once"])
        if backend != "torch" and self.emb._onnx is False:
            raise SystemExit(f"{name}: the ONNX graph was refused (see the log)")
        self.window = seq or self.emb._load().max_seq_length

    def documents(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> np.ndarray:
        if self.name == "st-b64":
            return self.st.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        from ingest.build import EMBED_GROUP

        out = []
        for start in range(0, len(texts), EMBED_GROUP):
            group = slice(start, start + EMBED_GROUP)
            vectors, _ = self.emb.encode_with_spans(texts[group], spans[group])
            out.append(vectors)
        return np.concatenate(out)

    def queries(self, texts: list[str]) -> np.ndarray:
        if self.name == "st-b64":
            return self.st.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        # what a question pays: one text per call (the ONNX query path for torch too)
        return np.concatenate([self.emb.encode([t]) for t in texts])


def recall(q: np.ndarray, d: np.ndarray, gold: list[set[int]], k: int) -> float:
    top = np.argsort(-(q @ d.T), axis=1)[:, :k]
    return float(np.mean([bool(set(row) & g) for row, g in zip(top.tolist(), gold)]))


def xquad_sets(limit: int | None) -> tuple[list[str], list[str], list[int]]:
    data = json.loads(XQUAD.read_text(encoding="utf-8"))["data"]
    passages, questions, gold = [], [], []
    for article in data:
        for para in article["paragraphs"]:
            passages.append(para["context"])
            for qa in para["qas"]:
                questions.append(qa["question"])
                gold.append(len(passages) - 1)
    if limit:
        picks = np.random.default_rng(0).permutation(len(questions))[:limit]
        questions = [questions[i] for i in picks]
        gold = [gold[i] for i in picks]
    return passages, questions, gold


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--chunks", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS)
    p.add_argument("--xquad", type=int, default=0, help="XQuAD questions (0: all 1,190)")
    p.add_argument("--shared", type=Path, help="the shared data folder (default: ../shared)")
    args = p.parse_args()
    offline_env()
    if args.shared:
        global CORPUS, XQUAD
        CORPUS = args.shared / "data" / "corpora" / "18f-handbook"
        XQUAD = args.shared / "data" / "qa" / "xquad-en" / "xquad.en.json"
    if not CORPUS.is_dir() or not XQUAD.is_file():
        raise SystemExit(f"needs {CORPUS} and {XQUAD}")
    if args.variants[0] != "st-b64":
        args.variants = ["st-b64", *[v for v in args.variants if v != "st-b64"]]
    load0 = loadavg()

    staff = [
        q
        for q in json.loads(STAFF.read_text(encoding="utf-8"))["answerable"]
        if q["corpus"] == "18f-handbook"
    ]
    t = time.perf_counter()
    chunks = load_chunks(args.chunks, sorted({q["document"] for q in staff}))
    from ingest.build import unit_spans

    texts = [c["embed_text"] for c in chunks]
    spans = [unit_spans(c["text"], c["embed_text"]) for c in chunks]
    pages = [c["page"] for c in chunks]
    took = time.perf_counter() - t
    print(f"{len(chunks)} chunks of {len(set(pages))} pages, parsed in {took:.0f} s")

    models = Path(tempfile.mkdtemp(prefix="lorebot-embed-speed-"))
    variants = [Variant(name, models, args.threads) for name in args.variants]
    pieces = variants[1].emb.counter.count_many(texts) if len(variants) > 1 else None
    if pieces is None:
        pieces = Embedder().counter.count_many(texts)

    def tokens_read(window: int) -> int:
        return sum(min(n + 2, window) for n in pieces)

    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    ratios: dict[str, list[float]] = {v.name: [] for v in variants}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        turn = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in turn:
            t = time.perf_counter()
            vectors[v.name] = v.documents(texts, spans)
            seconds[v.name].append(time.perf_counter() - t)
        base = seconds["st-b64"][-1]
        for v in variants:
            ratios[v.name].append(base / seconds[v.name][-1])
        print(
            f"round {r + 1}: "
            + ", ".join(f"{v.name} {len(texts) / seconds[v.name][-1]:.1f}/s" for v in variants)
        )

    passages, questions, gold = xquad_sets(args.xquad or None)
    rows = []
    for v in variants:
        s = statistics.median(seconds[v.name])
        row: dict[str, Any] = {
            "variant": v.name,
            "seconds": [round(x, 2) for x in seconds[v.name]],
            "chunks_per_s": round(len(texts) / s, 1),
            "tokens_per_s": round(tokens_read(v.window) / s),
            "ratio_to_st_b64": round(statistics.median(ratios[v.name]), 2),
        }
        gap = float(np.abs(vectors[v.name] - vectors["st-b64"]).max())
        row["max_diff_to_st_b64"] = round(gap, 6)
        if v.name != "st-b64" and gap < 1e-4:  # the same vectors: the same quality
            row.update({k: x for k, x in rows[0].items() if k.startswith(("xquad", "staff"))})
            rows.append(row)
            print(json.dumps(row))
            continue
        qv = v.queries(questions)
        pv = v.documents(passages, [[] for _ in passages])
        row["xquad_r1"] = round(recall(qv, pv, [{g} for g in gold], 1), 4)
        row["xquad_r5"] = round(recall(qv, pv, [{g} for g in gold], 5), 4)
        for split in ("tune", "test"):
            items = [q for q in staff if q["split"] == split]
            sq = v.queries([q["question"] for q in items])
            golds = [{i for i, pg in enumerate(pages) if pg == q["document"]} for q in items]
            row[f"staff_{split}_r1"] = round(recall(sq, vectors[v.name], golds, 1), 3)
            row[f"staff_{split}_r5"] = round(recall(sq, vectors[v.name], golds, 5), 3)
        rows.append(row)
        print(json.dumps(row))

    ref = rows[0]
    print()
    print(
        f"{'variant':18} {'chunks/s':>9} {'tokens/s':>9} {'ratio':>6} {'xq r@1':>7} "
        f"{'xq r@5':>7} {'staff tune r@1/5':>17} {'staff test r@1/5':>17}  holds"
    )
    for row in rows:
        holds = (
            row["xquad_r1"] >= ref["xquad_r1"] - 0.01
            and row["xquad_r5"] >= ref["xquad_r5"] - 0.01
            and row["staff_tune_r1"] >= ref["staff_tune_r1"] - 0.01
            and row["staff_tune_r5"] >= ref["staff_tune_r5"] - 0.01
        )
        row["quality_holds"] = holds
        print(
            f"{row['variant']:18} {row['chunks_per_s']:9.1f} {row['tokens_per_s']:9d} "
            f"{row['ratio_to_st_b64']:6.2f} {row['xquad_r1']:7.3f} {row['xquad_r5']:7.3f} "
            f"{row['staff_tune_r1']:8.3f}/{row['staff_tune_r5']:.3f} "
            f"{row['staff_test_r1']:8.3f}/{row['staff_test_r5']:.3f}  {'yes' if holds else 'NO'}"
        )
    save(
        "embed-speed",
        {
            "chunks": len(texts),
            "mean_tokens": round(float(np.mean(pieces)) + 2, 1),
            "threads": args.threads,
            "rounds": args.rounds,
            "xquad_questions": len(questions),
            "rows": rows,
        },
        started_load=load0,
    )


if __name__ == "__main__":
    main()
