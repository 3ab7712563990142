"""Documents → elements → chunks → embeddings → a versioned index on disk, and its read API.

Importing this package is cheap: torch, FAISS, bm25s and unstructured load only inside
the functions that use them, so the CLI and the workers can import it freely.

    from ingest import Source, build_index, open_index, current_version
    report = build_index(settings, [Source(Path("docs"), "hr")])
    with open_index(settings) as index:
        hits = index.search("how many days of leave?", k=4, collections=["hr"])

Modules: sources (what to ingest), parse (file → elements, in worker processes: detect,
safety, partition, elements, fallbacks), errors (a file's failure and its reasons), chunking
(elements → token-sized chunks, chunk ids), embed (MiniLM), plan (the incremental diff
against the serving version), build (the pipeline's steps), store (the on-disk format:
versions, atomic pointer, writing and reading a version), search (hybrid dense + BM25
retrieval), pool (processes with a hard time limit per file), registry (sources
remembered for re-index), report (the run's outcome).
"""

from ingest.build import build_index
from ingest.embed import Embedder
from ingest.report import FileResult, IngestReport
from ingest.sources import Source
from ingest.store import IndexReader, LiveIndex, current_version, list_versions, open_index

__all__ = [
    "Embedder",
    "FileResult",
    "IndexReader",
    "IngestReport",
    "LiveIndex",
    "Source",
    "build_index",
    "current_version",
    "list_versions",
    "open_index",
]
