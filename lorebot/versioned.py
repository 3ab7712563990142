"""A directory of immutable versions with an atomically replaced ``CURRENT`` pointer.

The index, the adapter registry and the fleet sync all keep their data in this shape::

    <root>/
        CURRENT              the serving version's name; absent or empty = none
        versions/<version>/  complete versions, never changed once complete
        tmp/                 builds in progress (their owner moves them into versions/)

A reader calls :meth:`VersionedDir.current` between tasks (one small file read) and sees
the old version or the new one, never half of one: a version is moved into ``versions/``
whole, and only then does ``CURRENT`` change, by ``os.replace`` of a fsynced file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lorebot.files import atomic_write_text, fsync_dir

POINTER = "CURRENT"


def read_pointer(root: Path) -> str | None:
    """The version ``root/CURRENT`` names, or None when it is absent or empty."""
    try:
        text = (root / POINTER).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def write_pointer(root: Path, version: str | None) -> None:
    """Point ``root/CURRENT`` at ``version`` atomically; None removes it (no version)."""
    pointer = root / POINTER
    if version is None:
        pointer.unlink(missing_ok=True)
        if root.is_dir():
            fsync_dir(root)
        return
    atomic_write_text(pointer, version + "\n")


def valid_name(version: str) -> bool:
    """A version name that stays inside ``versions/``: no separators, no leading dot."""
    return (
        bool(version) and "/" not in version and "\\" not in version and not version.startswith(".")
    )


class VersionedDir:
    """``root`` laid out as above; ``is_complete(path)`` says whether a version is whole."""

    def __init__(self, root: Path, is_complete: Callable[[Path], bool] | None = None) -> None:
        self.root = Path(root)
        self._is_complete = is_complete or Path.is_dir

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path(self, version: str) -> Path:
        """Where ``version`` lives (ValueError for a name that would leave ``versions/``)."""
        if not valid_name(version):
            raise ValueError(f"bad version name {version!r}")
        return self.versions_dir / version

    def is_complete(self, version: str) -> bool:
        return valid_name(version) and self._is_complete(self.path(version))

    def current(self) -> str | None:
        return read_pointer(self.root)

    def set_current(self, version: str | None) -> None:
        write_pointer(self.root, version)

    def versions(self) -> list[str]:
        """Complete versions on disk, in name order (the names sort by creation time)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and self._is_complete(p)
        )
