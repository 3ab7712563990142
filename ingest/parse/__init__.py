"""One file → elements → draft chunks, run inside the parse worker processes.

Everything a file can do wrong is turned into a `ParseFailure` with a short, specific
reason ("encrypted: ...", "corrupt: ...", "needs LibreOffice: ...") so the run can record
it and go on. Modules: detect (kind by extension or content, reading bytes and text),
safety (zip bombs, encrypted and mislabelled files, nesting, missing converters),
partition (the per-kind ``unstructured`` partitioners), elements (their output → our
`Element` records), fallbacks (JSON, e-mail parts ``unstructured`` skips). This module is
the worker's entry point: `parse_job` and what it takes and returns.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.chunking import TITLE, Chunker, chunk_id
from ingest.errors import ParseFailure, classify_error
from ingest.parse.detect import kind_of, unsupported_reason
from ingest.parse.partition import partition_file
from ingest.pool import memory_limit_mb
from ingest.tokens import counter_for

log = logging.getLogger(__name__)

__all__ = [
    "PARSER_VERSION",
    "ParseFailure",
    "ParseJob",
    "ParseOutput",
    "kind_of",
    "parse_job",
    "unsupported_reason",
    "worker_init",
]

# Bump when parsing or chunking changes what a file turns into: incremental builds then
# re-parse everything once instead of mixing chunks made by two versions of the rules.
# 2: PDF lines that continue a sentence are joined into one element.
PARSER_VERSION = "2"


@dataclass
class ParseJob:
    """Everything a worker needs to turn one file into chunks (picklable)."""

    path: str
    source: str
    collection: str
    kind: str
    content_hash: str
    modified: str | None
    model_dir: str
    chunk_tokens: int
    overlap_tokens: int

    @classmethod
    def for_file(cls, path: Path, collection: str) -> ParseJob:
        """A job for one file outside any build (benchmarks, checks): default chunking,
        the packaged embedding model's tokenizer, no hash or modification time."""
        from lorebot.assets import embedding_model_path
        from lorebot.settings import IndexSettings

        index = IndexSettings()
        return cls(
            path=str(path),
            source=str(path.parent),
            collection=collection,
            kind=kind_of(path) or "txt",
            content_hash="",
            modified=None,
            model_dir=str(embedding_model_path()),
            chunk_tokens=index.chunk_tokens,
            overlap_tokens=index.chunk_overlap_tokens,
        )


@dataclass
class ParseOutput:
    """A parsed file: document metadata and its chunks as plain dicts."""

    title: str
    url: str | None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    elements: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def _thinc_without_torch() -> None:
    """Import spaCy's numeric library, thinc, without letting it import torch.

    ``unstructured`` imports spaCy (for text files' titles and, elsewhere, its narrative
    check), spaCy imports thinc, and thinc imports torch if it can, only to offer it for
    GPU models and seeding: that import is the larger part of a parse worker's start-up
    (about 1.3 s of its 2.9 s of CPU). The small English pipeline runs on thinc's NumPy
    operations either way. While thinc is imported here, ``import torch`` fails (a None
    in ``sys.modules`` stops it); afterwards torch imports normally for anything that
    needs it. Nothing is done in a process that already holds torch or thinc.
    """
    if "torch" in sys.modules or "thinc.compat" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import thinc.compat  # noqa: F401
    except Exception:  # no thinc (or a broken one): unstructured reports it when it matters
        pass
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


def worker_init() -> None:
    """Per-worker process setup: offline, quiet, single-threaded numeric libraries, and
    spaCy's thinc imported without torch (see `_thinc_without_torch`)."""
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("SCARF_NO_ANALYTICS", "true"),
        ("DO_NOT_TRACK", "true"),
        ("UNSTRUCTURED_DISABLE_NOTICE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("OMP_NUM_THREADS", "1"),
        ("OPENBLAS_NUM_THREADS", "1"),
        ("MKL_NUM_THREADS", "1"),
    ):
        os.environ[key] = value
    logging.getLogger("unstructured").setLevel(logging.ERROR)
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    _thinc_without_torch()


def memory_reason() -> str:
    """Why a file whose parsing ran out of memory failed, naming the worker's limit."""
    limit = memory_limit_mb()
    if limit is None:
        return "out of memory while parsing"
    return f"too much memory: parsing needs more than the {limit} MiB limit (index.parse_memory_mb)"


def _pretty_stem(path: Path) -> str:
    stem = re.sub(r"[_\-]+", " ", path.stem).strip()
    return stem[:1].upper() + stem[1:] if stem else path.name


def _partition_with_retry(path: Path, kind: str) -> tuple[list[Any], dict[str, Any]]:
    """``partition_file``, tried once more after a MemoryError.

    An allocation can fail because the machine is short of memory for a moment (other
    processes beside the build), not only because the file needs more than the parser's
    limit; the second try, after the first one's memory is collected, tells the two apart.
    A file that really needs more fails twice and is refused.
    """
    try:
        return partition_file(path, kind)
    except MemoryError:
        gc.collect()
        log.info("parse: out of memory on %s, trying once more", path.name)
        return partition_file(path, kind)


def parse_job(job: ParseJob) -> ParseOutput | ParseFailure:
    """Parse and chunk one file; failures are returned (not raised) so they pickle cleanly."""
    started = time.perf_counter()
    path = Path(job.path)
    if path.resolve() != path:  # discovery resolved every path: it became a link since
        return ParseFailure("unsafe link: the file was replaced by a link after discovery")
    try:
        elements, meta = _partition_with_retry(path, job.kind)
    except ParseFailure as failure:
        return failure
    except MemoryError:
        return ParseFailure(memory_reason())
    except Exception as exc:
        return ParseFailure(classify_error(exc, job.kind))
    title = str(meta.get("title") or "").strip()
    if not title:
        first = next(
            (e for e in elements[:3] if e.kind == TITLE and len(e.text.split()) <= 14), None
        )
        title = " ".join(first.text.split()) if first else _pretty_stem(path)
    url = meta.get("url")
    counter = counter_for(job.model_dir)
    drafts = Chunker(
        counter, chunk_tokens=job.chunk_tokens, overlap_tokens=job.overlap_tokens
    ).chunk(elements, title)
    if not drafts:
        return ParseFailure(
            "no text: nothing extractable (empty, image-only or scanned?)", status="skipped"
        )
    chunks = []
    for i, d in enumerate(drafts):
        chunks.append(
            {
                "chunk_id": chunk_id(job.collection, job.path, i, d.text),
                "ordinal": i,
                "text": d.text,
                "embed_text": d.embed_text,
                "heading": d.heading,
                "page": d.page,
                "tokens": d.tokens,
                "kind": d.kind,
            }
        )
    return ParseOutput(
        title=title,
        url=url,
        chunks=chunks,
        elements=len(elements),
        seconds=time.perf_counter() - started,
        meta={k: v for k, v in meta.items() if k not in ("title", "url")},
    )
