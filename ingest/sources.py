"""Where documents come from: a directory (recursive, globs) or a single file, per collection."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from lorebot.errors import IngestError

# Directories never worth walking into.
SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "node_modules",
    ".venv",
    ".tox",
    ".ipynb_checkpoints",
}


@dataclass(frozen=True)
class Source:
    """A directory or file whose documents go into one collection.

    ``include``/``exclude`` are glob patterns matched against the path relative to the
    source root (``*.md``, ``policies/**``, ``drafts/*``); a pattern without a slash also
    matches the bare file name anywhere below the root.
    """

    path: Path
    collection: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "include", list(self.include))
        object.__setattr__(self, "exclude", list(self.exclude))
        if not self.collection or not self.collection.strip():
            raise IngestError("collection name is empty", fix="pass --collection NAME")

    def __hash__(self) -> int:
        return hash((str(self.path), self.collection, tuple(self.include), tuple(self.exclude)))

    @property
    def root(self) -> Path:
        """The resolved path: files' `source` is relative to it (a file: its directory)."""
        return self.path.expanduser().resolve()


@dataclass(frozen=True)
class FoundFile:
    """A file discovered under a source."""

    path: Path  # absolute, resolved
    source: str  # relative to the source root, '/'-separated
    collection: str
    root: Path  # the source root it was found under

    @property
    def key(self) -> str:
        """Identity of the file in the index: collection + absolute path."""
        return f"{self.collection}::{self.path}"


def _matches(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        if fnmatch.fnmatchcase(rel, pat):
            return True
        if "/" not in pat and fnmatch.fnmatchcase(name, pat):
            return True
        if pat.endswith("/**") and (rel + "/").startswith(pat[:-2]):
            return True
    return False


def discover(source: Source, skip: list[Path] | None = None) -> list[FoundFile]:
    """Files of one source, sorted; raises IngestError for a missing or unreadable path.

    Hidden files and directories (``.git``, ``.DS_Store``) are not documents and are
    passed over silently; everything else is returned, including types lorebot cannot
    parse, so the report can say why each was skipped.
    """
    root = source.root
    if not root.exists():
        raise IngestError(f"path {source.path} does not exist", fix="check the path and try again")
    if root.is_file():
        return [FoundFile(root, root.name, source.collection, root)]
    if not root.is_dir():
        raise IngestError(
            f"{source.path} is neither a file nor a directory", fix="pass a file or a folder"
        )
    if not os.access(root, os.R_OK | os.X_OK):
        raise IngestError(
            f"directory {source.path} is not readable",
            fix=f"check the permissions of {source.path}",
        )
    found: list[FoundFile] = []
    # lorebot's own data directory may sit inside the folder being ingested
    skipped = {p.expanduser().resolve() for p in (skip or [])}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and (Path(dirpath) / d).resolve() not in skipped
        )
        for name in sorted(filenames):
            if name.startswith(".") or name.startswith("~$"):  # hidden, Office lock files
                continue
            full = Path(dirpath) / name
            if full.is_symlink() and not full.exists():
                continue
            rel = full.relative_to(root).as_posix()
            if source.include and not _matches(rel, source.include):
                continue
            if source.exclude and _matches(rel, source.exclude):
                continue
            found.append(
                FoundFile(
                    full.resolve() if full.is_symlink() else full, rel, source.collection, root
                )
            )
    return found


def discover_all(sources: list[Source], skip: list[Path] | None = None) -> list[FoundFile]:
    """Files of every source; the same file in the same collection is listed once.

    Directories in `skip` (lorebot's data directory) are never walked into.
    """
    if not sources:
        raise IngestError("no source given", fix="pass a file or folder to ingest")
    seen: set[str] = set()
    out: list[FoundFile] = []
    for src in sources:
        for f in discover(src, skip):
            if f.key not in seen:
                seen.add(f.key)
                out.append(f)
    return out
