"""A build's fresh chunks and vectors on disk, and arrays read and written in slices.

A build holds no corpus-sized array or list in memory: each parsed file's chunks go to
the `Spool` as they arrive (rows in SQLite), the embedding pass reads them back one group
at a time and appends the vectors and sentence vectors to flat files, and ingest.store
copies spooled and carried rows into the new version slice by slice (`NpyWriter`,
`read_npy_rows`). The spool lives beside the version being built in ``tmp/``, so a
killed build's spool is litter the next build removes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ingest.tokens import normalise

DIM = 384
#: Rows per read or write of a vector file: ~6 MiB of float32 vectors.
SLICE_ROWS = 4096

SPOOL_DB = "spool.sqlite"
SPOOL_VECTORS = "vectors.f32"
SPOOL_UNITS = "units.f16"
SPOOL_COUNTS = "counts.i64"


def norm_hash(text: str) -> str:
    """The hash of a chunk's normalised text: search returns one chunk per distinct value."""
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()[:16]


# -- .npy files in slices ------------------------------------------------------------------


class NpyWriter:
    """A .npy file of a known shape written front to back (plain writes, no mapping).

    Written pages go to the page cache, not to this process: memory stays one slice
    however large the file. ``close`` checks that exactly ``shape[0]`` rows arrived.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path = path
        self.rows, self.row_shape, self.dtype = shape[0], tuple(shape[1:]), np.dtype(dtype)
        self.done = 0
        self.fh = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.fh, {**header, "shape": tuple(shape)})

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1, *self.row_shape)
        if self.done + len(block) > self.rows:
            raise RuntimeError(f"{self.path.name}: more than {self.rows} rows written")
        self.fh.write(block.tobytes())
        self.done += len(block)

    def close(self) -> None:
        self.fh.close()
        if self.done != self.rows:
            raise RuntimeError(f"{self.path.name}: {self.done} rows written, {self.rows} expected")


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a .npy file, from its header alone."""
    with open(path, "rb") as fh:
        major, _minor = np.lib.format.read_magic(fh)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise ValueError(f"{path.name}: Fortran-ordered arrays are not read in slices")
        return shape, dtype, fh.tell()


def read_rows(path: Path, start: int, end: int, *, cols: int, dtype: Any, offset: int = 0):
    """Rows ``start:end`` of a row-major array stored at ``offset`` in ``path`` (a read, no map)."""
    dtype = np.dtype(dtype)
    n = max(0, end - start)
    if n == 0:
        return np.zeros((0, cols), dtype=dtype)
    with open(path, "rb") as fh:
        fh.seek(offset + start * cols * dtype.itemsize)
        out = np.fromfile(fh, dtype=dtype, count=n * cols)
    if len(out) != n * cols:
        raise RuntimeError(f"{path.name}: rows {start}:{end} are past its end")
    return out.reshape(n, cols)


def read_npy_rows(path: Path, start: int, end: int) -> np.ndarray:
    """Rows ``start:end`` of a 2-D .npy file."""
    shape, dtype, offset = npy_layout(path)
    return read_rows(path, start, end, cols=shape[1], dtype=dtype, offset=offset)


def iter_npy_slices(
    path: Path, start: int, end: int, step: int | None = None
) -> Iterator[np.ndarray]:
    """Rows ``start:end`` of a 2-D .npy file, ``step`` (SLICE_ROWS) rows at a time."""
    shape, dtype, offset = npy_layout(path)
    step = step or SLICE_ROWS
    for s in range(start, end, step):
        yield read_rows(path, s, min(end, s + step), cols=shape[1], dtype=dtype, offset=offset)


# -- the spool ------------------------------------------------------------------------------


SPOOL_SCHEMA = """
CREATE TABLE chunks (
    srow INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    page INTEGER,
    text TEXT NOT NULL,
    embed_text TEXT NOT NULL,
    norm_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    extra TEXT NOT NULL
);
"""


class Spool:
    """Fresh chunks of one build, in arrival order (spool rows), with their vectors.

    `add_chunks` takes a parsed file's chunks and returns their spool row range;
    `add_vectors` takes the vectors of the next rows in order (the embedding pass, or a
    distributed batch's result). Vectors are float32 in one flat file, the sentence-unit
    vectors float16 in another, with each row's unit count in a third.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path / SPOOL_DB)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(SPOOL_SCHEMA)
        self.rows = 0  # chunks spooled
        self.embedded = 0  # rows whose vectors are spooled
        self.units = 0
        self._vectors = open(path / SPOOL_VECTORS, "wb")
        self._units = open(path / SPOOL_UNITS, "wb")
        self._counts = open(path / SPOOL_COUNTS, "wb")
        self._offsets: np.ndarray | None = None

    @property
    def db_path(self) -> Path:
        return self.path / SPOOL_DB

    def add_chunks(self, chunks: list[dict[str, Any]], file_kind: str) -> tuple[int, int]:
        """Spool a file's chunks (dicts from the parser); their spool row range."""
        start = self.rows
        self.db.executemany(
            "INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    start + i,
                    c["chunk_id"],
                    c["ordinal"],
                    c["heading"],
                    c["page"],
                    c["text"],
                    c["embed_text"],
                    norm_hash(c["text"]),
                    c.get("kind", "text"),
                    json.dumps({"file_kind": file_kind, "tokens": c.get("tokens")}),
                )
                for i, c in enumerate(chunks)
            ],
        )
        self.db.commit()
        self.rows += len(chunks)
        return start, self.rows

    def texts(self, start: int, end: int) -> list[tuple[str, str]]:
        """(text, embed_text) of spool rows ``start:end``."""
        return self.db.execute(
            "SELECT text, embed_text FROM chunks WHERE srow >= ? AND srow < ? ORDER BY srow",
            (start, end),
        ).fetchall()

    def add_vectors(self, start: int, vectors: np.ndarray, sentences: list[np.ndarray]) -> None:
        """The vectors and sentence vectors of rows ``start:start + len(vectors)``, in order."""
        if start != self.embedded:
            raise RuntimeError(f"spool: vectors for row {start} arrive before row {self.embedded}")
        if len(sentences) != len(vectors) or start + len(vectors) > self.rows:
            raise RuntimeError("spool: vectors do not match the spooled chunks")
        self._vectors.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        counts = np.array([len(b) for b in sentences], dtype=np.int64)
        for block in sentences:
            if len(block):
                self._units.write(np.asarray(block, dtype=np.float16).reshape(-1, DIM).tobytes())
        self._counts.write(counts.tobytes())
        for fh in (self._vectors, self._units, self._counts):
            fh.flush()  # to the page cache: nothing of this group stays in the process
        self.embedded += len(vectors)
        self.units += int(counts.sum())

    def finish(self) -> None:
        """Close the appenders (every row must have its vectors); readable from now on."""
        if self._offsets is not None:
            return
        if self.embedded != self.rows:
            raise RuntimeError(f"spool: {self.rows} chunks but {self.embedded} with vectors")
        for fh in (self._vectors, self._units, self._counts):
            fh.close()
        self.db.commit()
        counts = np.fromfile(self.path / SPOOL_COUNTS, dtype=np.int64)
        self._offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._offsets[1:])

    def unit_counts(self, start: int, end: int) -> np.ndarray:
        """Sentence units of each spool row ``start:end``."""
        assert self._offsets is not None, "finish() the spool first"
        return np.diff(self._offsets[start : end + 1])

    def vector_slices(self, start: int, end: int) -> Iterator[np.ndarray]:
        """The vectors of spool rows ``start:end``, a slice at a time."""
        for s in range(start, end, SLICE_ROWS):
            e = min(end, s + SLICE_ROWS)
            yield read_rows(self.path / SPOOL_VECTORS, s, e, cols=DIM, dtype=np.float32)

    def unit_slices(self, start: int, end: int) -> Iterator[np.ndarray]:
        """The sentence vectors of spool rows ``start:end`` (row order), a slice at a time."""
        assert self._offsets is not None, "finish() the spool first"
        a, b = int(self._offsets[start]), int(self._offsets[end])
        for s in range(a, b, SLICE_ROWS):
            e = min(b, s + SLICE_ROWS)
            yield read_rows(self.path / SPOOL_UNITS, s, e, cols=DIM, dtype=np.float16)

    def close(self) -> None:
        """Let go of the files (a failed build, a full disk: nothing left to save)."""
        for fh in (self._vectors, self._units, self._counts):
            try:
                fh.close()
            except OSError:
                pass
        self.db.close()
