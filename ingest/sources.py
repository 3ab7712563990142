"""Where documents come from: a directory (recursive, globs) or a single file, per collection.

Symbolic links: a link to a directory is never walked into; a link to a file is followed
only when the file it resolves to lies inside the source folder and outside the folders
discovery skips (hidden ones, ``SKIP_DIRS``, lorebot's data directory); the real file is
then listed once, whichever of its names is met first. Any other file link
(``faq.md -> /etc/passwd``, or into another collection's folder) is listed with
``refused`` set, so the report says why it was not read, and nothing behind it is ever
opened. A file given directly as a source may be a link only to a file in the link's
own folder; otherwise discovery raises IngestError (pass the real file instead).
"""

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
    refused: str | None = None  # why it must not be read (a link leaving the source folder)

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


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _skipped_dir(rel_parts: tuple[str, ...]) -> bool:
    """Whether a path (relative to the root) lies in a folder discovery never walks into."""
    return any(p.startswith(".") or p in SKIP_DIRS for p in rel_parts[:-1])


def link_refusal(link: Path, root: Path, skipped: set[Path]) -> str | None:
    """Why the file link `link` found under `root` must not be followed (None: it may)."""
    target = link.resolve()
    if not _inside(target, root):
        return "unsafe link: points outside the source folder (not read)"
    if _skipped_dir(target.relative_to(root).parts) or any(_inside(target, s) for s in skipped):
        return "unsafe link: points into a skipped folder (hidden, .git, data dir; not read)"
    return None


def _single_file(source: Source) -> list[FoundFile]:
    """A file given directly: a link is followed only to a file in the link's own folder."""
    given = source.path.expanduser()
    if given.is_symlink():
        folder = given.absolute().parent.resolve()
        if source.root.parent != folder:
            raise IngestError(
                f"{source.path} is a link to a file outside its folder; not read",
                fix=f"pass the file it points to ({source.root}) instead of the link",
            )
    root = source.root
    return [FoundFile(root, root.name, source.collection, root)]


def discover(source: Source, skip: list[Path] | None = None) -> list[FoundFile]:
    """Files of one source, sorted; raises IngestError for a missing or unreadable path.

    Hidden files and directories (``.git``, ``.DS_Store``) are not documents and are
    passed over silently; everything else is returned, including types lorebot cannot
    parse and links it must not follow (``refused``), so the report can say why each
    was skipped.
    """
    root = source.root
    if not root.exists():
        raise IngestError(f"path {source.path} does not exist", fix="check the path and try again")
    if root.is_file():
        return _single_file(source)
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
            if not full.is_symlink():
                found.append(FoundFile(full, rel, source.collection, root))
                continue
            why = link_refusal(full, root, skipped)
            # A refused link keeps its own path: the file behind it is never opened.
            path = full if why else full.resolve()
            found.append(FoundFile(path, rel, source.collection, root, refused=why))
    # A followed link names a file of the folder: listed once, under its real name when
    # that was found too, else under the first link met.
    real = {f.path for f in found if f.path == root / f.source}
    out, seen = [], set()
    for f in found:
        if f.refused is None:
            if f.path in seen or (f.path in real and f.path != root / f.source):
                continue
            seen.add(f.path)
        out.append(f)
    return out


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
