"""Checks made before a parser opens a file: the ways a file can hurt or stall a worker.

Zip bombs (an Office or e-book package whose members unpack to far more than it holds),
encrypted or mislabelled Office files, PDFs and e-mails, HTML nested past what the parsers
read, and formats whose converter (pandoc, LibreOffice) is not installed: each becomes a
`ParseFailure` with a specific reason before any parser spends memory or time on it.
"""

from __future__ import annotations

import logging
import re
import shutil
import zipfile
from pathlib import Path

from ingest.errors import ParseFailure, short
from ingest.parse.detect import OLE_MAGIC

log = logging.getLogger(__name__)

# ZIP containers (DOCX, PPTX, XLSX, ODT, EPUB) are checked against these before any
# parser opens them: a parser reads a member whole, so a 2 MB "zip bomb" whose XML
# unpacks to gigabytes would take the parse worker's memory with it. The sizes come
# from the central directory; Python's zipfile never inflates a member past its
# declared size, so the check cannot be lied to.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBER_RATIO = 100  # unpacked / packed, for members above RATIO_MIN_BYTES
RATIO_MIN_BYTES = 8 * 1024 * 1024
# lxml's HTML parser silently stops descending at this depth (without XML_PARSE_HUGE).
HTML_MAX_DEPTH = 256


def check_ooxml(path: Path, label: str) -> None:
    """Encrypted Office files are OLE containers, not ZIPs: say so instead of 'bad zip'."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        check_zip_bomb(path)
        return
    if head == OLE_MAGIC:
        try:
            import msoffcrypto

            with open(path, "rb") as fh:
                if msoffcrypto.OfficeFile(fh).is_encrypted():
                    raise ParseFailure(f"encrypted: password-protected {label}")
        except ParseFailure:
            raise
        except Exception:
            pass
        raise ParseFailure(
            f"corrupt: an old binary Office file named .{label.lower()} (save it as {label})"
        )
    raise ParseFailure(f"corrupt: not a valid {label} file (not a ZIP package)")


def check_zip_bomb(path: Path) -> None:
    """Refuse a ZIP container whose members would unpack to far more than it holds."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseFailure(f"corrupt: not a readable ZIP package ({short(exc)})") from None
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        big = max(infos, key=lambda i: i.file_size)
        raise ParseFailure(
            f"zip bomb: unpacks to {total / 2**20:,.0f} MiB ({big.filename} alone "
            f"{big.file_size / 2**20:,.0f} MiB from {big.compress_size / 2**20:,.1f} MiB); "
            f"limit {MAX_UNPACKED_BYTES / 2**20:,.0f} MiB"
        )
    for i in infos:
        if i.file_size > RATIO_MIN_BYTES and i.file_size > MAX_MEMBER_RATIO * max(
            1, i.compress_size
        ):
            raise ParseFailure(
                f"zip bomb: {i.filename} unpacks {i.file_size / max(1, i.compress_size):,.0f}x "
                f"({i.file_size / 2**20:,.0f} MiB); limit {MAX_MEMBER_RATIO}x"
            )


def html_depth(text: str) -> int:
    """Deepest element nesting of an HTML text, counted from its tags (void tags ignored)."""
    depth = deepest = 0
    for m in _TAG.finditer(text):
        closing, name, self_closing = m.group(1), m.group(2).lower(), m.group(3)
        if name in _VOID or self_closing:
            continue
        if closing:
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


_TAG = re.compile(r"<(/?)([a-zA-Z][\w:-]*)[^<>]*?(/?)>")
# Void elements, plus p and li, which HTML lets authors leave unclosed.
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "p",
        "li",
    }
)


def check_pdf(path: Path) -> str | None:
    """Fail fast on encrypted or non-PDF files; return pypdf's complaint, if any."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF" not in head:
        raise ParseFailure("corrupt: not a PDF (no %PDF header)")
    try:
        from pypdf import PdfReader

        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception:
                ok = 0
            if not ok:
                raise ParseFailure("encrypted: password-protected PDF")
    except ParseFailure:
        raise
    except Exception as exc:  # pypdf is stricter than pdfminer: let the parser try
        log.debug("pypdf could not open %s: %s", path, exc)
        return f"{type(exc).__name__}: {short(exc)}"
    return None


def needs_pandoc(label: str) -> None:
    try:
        import pypandoc

        pypandoc.get_pandoc_path()
    except Exception:
        raise ParseFailure(
            f"needs pandoc: {label} is converted with pandoc (pip install pypandoc-binary)"
        ) from None


def needs_libreoffice(label: str) -> None:
    if not (shutil.which("soffice") or shutil.which("libreoffice")):
        raise ParseFailure(
            f"needs LibreOffice: {label} files are converted with it (install libreoffice)"
        )


def check_email(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).lower()
    if b"multipart/encrypted" in head or b"smime-type=enveloped-data" in head:
        raise ParseFailure("encrypted: PGP or S/MIME encrypted e-mail")
