"""The BM25 keyword index of a version, written from a stream of texts in bounded memory.

bm25s builds its score matrix from every document's token list at once (a Python list per
document, then three arrays per (document, term) pair, then their sorted copies); for a
large corpus that is several times the size of the index it produces. This writes the
same files (``data``/``indices``/``indptr`` of the CSC score matrix, ``vocab``, ``params``)
that ``bm25s.BM25.load`` reads, with the same tokenizer, vocabulary order and Lucene
scores, in two passes: the first tokenizes the texts once and spools each document's
(term, count) pairs to a scratch file, the second scatters the scores into term order a
range of terms at a time. Memory: the vocabulary, one batch of texts and one slice of
scores, whatever the number of documents (tests/ingest/test_build_memory.py checks the
result against bm25s's own index).
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np

from ingest.search import BM25_STOPWORDS
from ingest.spool import NpyWriter

K1, B, DELTA = 1.5, 0.75, 0.5  # bm25s's defaults, which ingest.store always used
#: (document, term) pairs scattered per pass: ~32 MiB of scores and row numbers.
SCATTER_PAIRS = 4_000_000
#: Pairs read from the scratch file at a time.
READ_PAIRS = 1_000_000
TEXT_BATCH = 2048

PAIR = np.dtype([("doc", "<i4"), ("term", "<i4"), ("tf", "<f4")])


def write_bm25(out_dir: Path, texts: Iterable[str], scratch: Path) -> int:
    """Write a bm25s index of ``texts`` (row order) into ``out_dir``; returns the documents.

    ``scratch`` is a file path for the (document, term) pairs, removed afterwards.
    """
    import bm25s

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    df = np.zeros(1024, dtype=np.int64)
    lengths = array("q")  # tokens per document
    n_pairs = 0
    try:
        with open(scratch, "wb") as fh:
            batch: list[str] = []

            def flush() -> None:
                nonlocal n_pairs, df
                # bm25s numbers a batch's tokens in order of first occurrence; mapping
                # them in that order keeps the whole corpus's first-occurrence order.
                local = bm25s.tokenize(
                    batch, stopwords=BM25_STOPWORDS, return_ids=True, show_progress=False
                )
                to_global = np.fromiter(
                    (vocab.setdefault(t, len(vocab)) for t in local.vocab),
                    dtype=np.int64,
                    count=len(local.vocab),
                )
                sizes = np.fromiter((len(d) for d in local.ids), np.int64, count=len(batch))
                flat = np.fromiter(chain.from_iterable(local.ids), np.int64, int(sizes.sum()))
                docs = np.repeat(np.arange(len(lengths), len(lengths) + len(batch)), sizes)
                lengths.extend(sizes.tolist())
                # One (document, term) pair per distinct term of a document, with its count.
                keys, tf = np.unique((docs << 32) | to_global[flat], return_counts=True)
                if len(vocab) > len(df):
                    grown = np.zeros(max(len(vocab), 2 * len(df)), dtype=df.dtype)
                    grown[: len(df)] = df
                    df = grown
                pairs = np.empty(len(keys), dtype=PAIR)
                pairs["doc"], pairs["term"], pairs["tf"] = keys >> 32, keys & 0xFFFFFFFF, tf
                np.add.at(df, pairs["term"], 1)
                fh.write(pairs.tobytes())
                n_pairs += len(pairs)
                batch.clear()

            for text in texts:
                batch.append(text)
                if len(batch) >= TEXT_BATCH:
                    flush()
            if batch:
                flush()
        n_docs = len(lengths)
        if n_docs == 0:
            raise ValueError("a keyword index needs at least one document")
        n_vocab = len(vocab)
        df = df[:n_vocab]
        doc_len = np.frombuffer(lengths, dtype=np.int64).astype(np.float64)
        avg = float(doc_len.mean())
        # bm25s: idf in float32 from a float64 log; the tf part in float64 per document.
        idf = np.array(
            [math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) if d else 0.0 for d in df.tolist()],
            dtype=np.float32,
        )
        norm = K1 * ((1 - B) + B * doc_len / avg)
        indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        _scatter(out_dir, scratch, n_pairs, indptr, idf, norm)
    finally:
        scratch.unlink(missing_ok=True)
    np.save(out_dir / "indptr.csc.index.npy", indptr)
    vocab[""] = n_vocab  # bm25s adds the empty token after the matrix's terms
    (out_dir / "vocab.index.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    params = {
        "k1": K1,
        "b": B,
        "delta": DELTA,
        "method": "lucene",
        "idf_method": "lucene",
        "dtype": "float32",
        "int_dtype": "int32",
        "num_docs": n_docs,
        "version": bm25s.__version__,
        "backend": "numpy",
    }
    (out_dir / "params.index.json").write_text(json.dumps(params, indent=4), encoding="utf-8")
    return n_docs


def _scatter(
    out_dir: Path,
    scratch: Path,
    n_pairs: int,
    indptr: np.ndarray,
    idf: np.ndarray,
    norm: np.ndarray,
) -> None:
    """Scores in column (term) order, rows ascending within a term: the CSC arrays."""
    data = NpyWriter(out_dir / "data.csc.index.npy", (n_pairs,), np.float32)
    rows = NpyWriter(out_dir / "indices.csc.index.npy", (n_pairs,), np.int32)
    n_vocab = len(indptr) - 1
    lo = 0
    while lo < n_vocab:
        # The widest range of terms whose pairs fit one pass (at least one term).
        hi = int(np.searchsorted(indptr, indptr[lo] + SCATTER_PAIRS, side="right")) - 1
        hi = min(n_vocab, max(hi, lo + 1))
        base = int(indptr[lo])
        size = int(indptr[hi]) - base
        part_data = np.empty(size, dtype=np.float32)
        part_rows = np.empty(size, dtype=np.int32)
        cursor = indptr[lo:hi] - base
        with open(scratch, "rb") as fh:
            while True:
                pairs = np.fromfile(fh, dtype=PAIR, count=READ_PAIRS)
                if len(pairs) == 0:
                    break
                keep = (pairs["term"] >= lo) & (pairs["term"] < hi)
                pairs = pairs[keep]
                if len(pairs) == 0:
                    continue
                # Stable: the scratch file is in document order, and so is each term's run.
                pairs = pairs[np.argsort(pairs["term"], kind="stable")]
                term = pairs["term"] - lo
                tf = pairs["tf"].astype(np.float64)
                score = idf[pairs["term"]] * (tf / (norm[pairs["doc"]] + tf))
                counts = np.bincount(term, minlength=hi - lo)
                first = np.cumsum(counts) - counts  # where each term's run starts here
                pos = cursor[term] + (np.arange(len(pairs)) - first[term])
                part_data[pos] = score.astype(np.float32)
                part_rows[pos] = pairs["doc"]
                cursor += counts
        if not np.array_equal(cursor, indptr[lo + 1 : hi + 1] - base):
            raise RuntimeError("keyword index: term counts changed between passes")
        data.append(part_data)
        rows.append(part_rows)
        lo = hi
    data.close()
    rows.close()
