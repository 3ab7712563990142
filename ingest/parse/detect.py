"""What a file is and how its bytes are read: the parser kind by extension (or by content
for files without one), the reason an unsupported type is skipped, and reading a file's
bytes or text with the failure named ("unreadable: ...") instead of raised raw.
"""

from __future__ import annotations

from pathlib import Path

from ingest.errors import ParseFailure
from ingest.markup import decode_bytes

# extension → kind (the kind picks the partitioner and labels the report's rows)
KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".docm": "docx",
    ".pptx": "pptx",
    ".pptm": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".xml": "xml",
    ".md": "md",
    ".markdown": "md",
    ".mdx": "md",
    ".txt": "txt",
    ".text": "txt",
    ".log": "txt",
    ".rst": "txt",
    ".org": "txt",
    ".adoc": "txt",
    ".yaml": "txt",
    ".yml": "txt",
    ".toml": "txt",
    ".eml": "eml",
    ".msg": "msg",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".ndjson": "json",
    ".jsonl": "json",
    ".rtf": "rtf",
    ".odt": "odt",
    ".epub": "epub",
    ".doc": "doc",
    ".ppt": "ppt",
}

UNSUPPORTED_HINTS = {
    ".zip": "archives are not unpacked; extract it and ingest the folder",
    ".gz": "archives are not unpacked",
    ".tar": "archives are not unpacked",
    ".7z": "archives are not unpacked",
    ".png": "images need OCR, which lorebot does not run",
    ".jpg": "images need OCR, which lorebot does not run",
    ".jpeg": "images need OCR, which lorebot does not run",
    ".gif": "images need OCR, which lorebot does not run",
    ".tif": "images need OCR, which lorebot does not run",
    ".tiff": "images need OCR, which lorebot does not run",
    ".heic": "images need OCR, which lorebot does not run",
    ".p7s": "a signature, not a document",
}

# The header of an OLE compound file: old binary Office files, and encrypted new ones.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def kind_of(path: Path) -> str | None:
    """The parser kind for a file name; None when lorebot cannot parse it.

    Files without an extension (README, LICENSE) are read as plain text when they are text.
    """
    ext = path.suffix.lower()
    if ext in KINDS:
        return KINDS[ext]
    if not ext:
        try:
            head = path.read_bytes()[:4096]
        except OSError:
            return None
        if head and b"\x00" not in head:
            try:
                head.decode("utf-8")
                return "txt"
            except UnicodeDecodeError:
                return None
    return None


def unsupported_reason(path: Path) -> str:
    ext = path.suffix.lower() or "(no extension)"
    hint = UNSUPPORTED_HINTS.get(ext)
    return f"unsupported file type: {ext}" + (f" ({hint})" if hint else "")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise ParseFailure("unreadable: permission denied") from None
    except OSError as exc:
        raise ParseFailure(f"unreadable: {exc.strerror or exc}") from None


def read_text(path: Path) -> str:
    try:
        return decode_bytes(read_bytes(path))
    except UnicodeDecodeError:
        raise ParseFailure("unreadable encoding: not text in any known encoding") from None
