"""One file → elements → draft chunks. Runs inside parse worker processes.

Everything a file can do wrong is turned into a `ParseFailure` with a short, specific
reason ("encrypted: ...", "corrupt: ...", "needs LibreOffice: ...") so the run can record
it and go on. Format detection is by extension (with content checks for the cases that
lie: encrypted Office files are OLE containers, not ZIPs), and each format goes to its own
``unstructured`` partitioner with the "fast" strategy (no OCR, no layout model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.chunking import (
    CODE,
    FOOTER,
    HEADER,
    LIST,
    PAGE_NUMBER,
    TABLE,
    TEXT,
    TITLE,
    Chunker,
    Element,
)
from ingest.markup import decode_bytes, front_matter_meta, split_front_matter, strip_template_tags
from ingest.tokens import counter_for

log = logging.getLogger(__name__)

# Bump when parsing or chunking changes what a file turns into: incremental builds then
# re-parse everything once instead of mixing chunks made by two versions of the rules.
# 2: PDF lines that continue a sentence are joined into one element.
PARSER_VERSION = "2"

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

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

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


class ParseFailure(Exception):
    """One file cannot be ingested; `status` is 'failed' or 'skipped'."""

    def __init__(self, reason: str, status: str = "failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


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


@dataclass
class ParseOutput:
    """A parsed file: document metadata and its chunks as plain dicts."""

    title: str
    url: str | None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    elements: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def worker_init() -> None:
    """Per-worker process setup: offline, quiet, single-threaded numeric libraries."""
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


# -- helpers ------------------------------------------------------------------------


def _pretty_stem(path: Path) -> str:
    stem = re.sub(r"[_\-]+", " ", path.stem).strip()
    return stem[:1].upper() + stem[1:] if stem else path.name


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def _html_title(text: str) -> str | None:
    m = _HTML_TITLE.search(text[:20000])
    if m:
        title = " ".join(re.sub(r"<[^>]+>", "", m.group(1)).split())
        return title or None
    return None


def _category_kind(category: str) -> str | None:
    return {
        "Title": TITLE,
        "Table": TABLE,
        "TableChunk": TABLE,
        "ListItem": LIST,
        "CodeSnippet": CODE,
        "Header": HEADER,
        "Footer": FOOTER,
        "PageNumber": PAGE_NUMBER,
        "PageBreak": None,
        "Image": None,
        "Picture": None,
    }.get(category, TEXT)


_BLOB = re.compile(r"\S{200,}")


def clean_text(text: str) -> str:
    """Drop 200+ character 'words' (inline base64, minified code): MiniLM reads each as one
    unknown token and a reader learns nothing from them."""
    if len(text) < 200:
        return text
    if not _BLOB.search(text):
        return text
    return re.sub(r"[ \t]{2,}", " ", _BLOB.sub(" ", text)).strip()


def to_elements(raw: list[Any]) -> list[Element]:
    """unstructured elements → our parser-independent records."""
    out: list[Element] = []
    for el in raw:
        kind = _category_kind(getattr(el, "category", "NarrativeText"))
        text = clean_text((getattr(el, "text", "") or "").strip())
        if kind is None or not text:
            continue
        md = el.metadata
        depth = getattr(md, "category_depth", None) or 0
        out.append(
            Element(
                kind=kind,
                text=text,
                depth=int(depth),
                page=getattr(md, "page_number", None),
                html=getattr(md, "text_as_html", None) if kind == TABLE else None,
            )
        )
    return out


_ENDS_SENTENCE = re.compile(r"[.!?:;)\]\"'”’]\s*$")
_STARTS_LOWER = re.compile(r"^[a-z]")


def join_wrapped_lines(elements: list[Element]) -> list[Element]:
    """Join the lines of a PDF paragraph that the parser returned as separate elements.

    A PDF often stores each printed line on its own, and the fast strategy then gives one
    element per line, with a continuation line sometimes taken for a title ("with a note
    from occupational health."). A sentence is split that way when a text or list line
    does not end a sentence and the next line, on the same page, starts in lower case:
    no sentence or heading starts in lower case, so such a line is joined to the one
    before it. Without this, a sentence cut in two reaches neither the evidence quote nor
    the prompt whole, and its second half becomes a heading of the chunks after it.
    """
    out: list[Element] = []
    for el in elements:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.kind in (TEXT, LIST)
            and el.kind in (TEXT, TITLE)
            and prev.page == el.page
            and not _ENDS_SENTENCE.search(prev.text)
            and _STARTS_LOWER.match(el.text)
        ):
            out[-1] = Element(
                kind=prev.kind, text=f"{prev.text} {el.text}", depth=prev.depth, page=prev.page
            )
            continue
        out.append(el)
    return out


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise ParseFailure("unreadable: permission denied") from None
    except OSError as exc:
        raise ParseFailure(f"unreadable: {exc.strerror or exc}") from None


def _text_of(path: Path) -> str:
    try:
        return decode_bytes(_read(path))
    except UnicodeDecodeError:
        raise ParseFailure("unreadable encoding: not text in any known encoding") from None


def _check_ooxml(path: Path, label: str) -> None:
    """Encrypted Office files are OLE containers, not ZIPs: say so instead of 'bad zip'."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        _check_zip_bomb(path)
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


def _check_zip_bomb(path: Path) -> None:
    """Refuse a ZIP container whose members would unpack to far more than it holds."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseFailure(f"corrupt: not a readable ZIP package ({_short(exc)})") from None
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


def _check_pdf(path: Path) -> str | None:
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
        return f"{type(exc).__name__}: {_short(exc)}"
    return None


def _needs_pandoc(label: str) -> None:
    try:
        import pypandoc

        pypandoc.get_pandoc_path()
    except Exception:
        raise ParseFailure(
            f"needs pandoc: {label} is converted with pandoc (pip install pypandoc-binary)"
        ) from None


def _needs_libreoffice(label: str) -> None:
    if not (shutil.which("soffice") or shutil.which("libreoffice")):
        raise ParseFailure(
            f"needs LibreOffice: {label} files are converted with it (install libreoffice)"
        )


def _json_elements(text: str) -> list[Element]:
    """JSON / NDJSON as readable 'key path: value' lines, one element per record."""
    text = text.strip()
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ParseFailure(f"corrupt: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    records: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            records.extend(doc)
        else:
            records.append(doc)

    def lines(value: Any, prefix: str) -> list[str]:
        if isinstance(value, dict):
            out: list[str] = []
            for k, v in value.items():
                out.extend(lines(v, f"{prefix}.{k}" if prefix else str(k)))
            return out
        if isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                joined = ", ".join(str(v) for v in value if v is not None)
                return [f"{prefix}: {joined}" if prefix else joined] if joined else []
            out = []
            for i, v in enumerate(value):
                out.extend(lines(v, f"{prefix}[{i}]"))
            return out
        if value is None or value == "":
            return []
        return [f"{prefix}: {value}" if prefix else str(value)]

    return [Element(TEXT, "\n".join(ls)) for rec in records if (ls := lines(rec, ""))]


# -- partitioning -------------------------------------------------------------------


def partition_file(path: Path, kind: str) -> tuple[list[Element], dict[str, Any]]:
    """Elements and document metadata (title, url) of one file, by kind."""
    langs = {"languages": ["eng"]}
    meta: dict[str, Any] = {}
    if kind == "md":
        fm, body = split_front_matter(_text_of(path))
        meta.update(front_matter_meta(fm))
        body = strip_template_tags(body)
        if not body.strip():
            return [], meta
        from unstructured.partition.md import partition_md

        return to_elements(partition_md(text=body, **langs)), meta
    if kind == "html":
        text = strip_template_tags(_text_of(path))
        fm, text = split_front_matter(text)
        meta.update(front_matter_meta(fm))
        if "title" not in meta and (t := _html_title(text)):
            meta["title"] = t
        from unstructured.partition.html import partition_html

        elements = to_elements(partition_html(text=text, **langs))
        if not elements and (depth := html_depth(text)) > HTML_MAX_DEPTH:
            raise ParseFailure(
                f"too deeply nested: HTML nests {depth:,} levels; parsers stop at {HTML_MAX_DEPTH}"
            )
        return elements, meta
    if kind == "txt":
        text = _text_of(path)
        if not text.strip():
            return [], meta
        from unstructured.partition.text import partition_text

        return to_elements(partition_text(text=text, **langs)), meta
    if kind == "xml":
        from unstructured.partition.xml import partition_xml

        return to_elements(partition_xml(text=_text_of(path), **langs)), meta
    if kind in ("csv", "tsv"):
        import io

        text = _text_of(path)
        if not text.strip():
            return [], meta
        from unstructured.partition.csv import partition_csv

        data = io.BytesIO(text.encode("utf-8"))
        try:
            return to_elements(partition_csv(file=data, include_header=True, **langs)), meta
        except Exception as exc:
            # Rows of unequal length and friends: the words are still worth finding.
            log.debug("%s is not a regular table (%s): reading it as text", path, exc)
            meta["note"] = f"read as text: {_short(exc)}"
            from unstructured.partition.text import partition_text

            return to_elements(partition_text(text=text, **langs)), meta
    if kind == "json":
        return _json_elements(_text_of(path)), meta
    if kind == "eml":
        _check_email(path)
        from unstructured.partition.email import partition_email

        try:
            raw = partition_email(filename=str(path), **langs)
        except Exception:
            raw = partition_email(filename=str(path), process_attachments=False, **langs)
        elements = _email_elements(raw, meta)
        if not any(e.kind != TEXT or not e.text.startswith("From:") for e in elements):
            elements += _email_fallback(path)  # digests and odd MIME trees unstructured skips
        return elements, meta
    if kind == "msg":
        from unstructured.partition.msg import partition_msg

        try:
            raw = partition_msg(filename=str(path), **langs)
        except Exception:
            raw = partition_msg(filename=str(path), process_attachments=False, **langs)
        return _email_elements(raw, meta), meta
    if kind == "pdf":
        complaint = _check_pdf(path)
        from unstructured.partition.pdf import partition_pdf

        try:
            elements = join_wrapped_lines(
                to_elements(partition_pdf(filename=str(path), strategy="fast", **langs))
            )
        except Exception:
            if complaint:
                raise ParseFailure(f"corrupt: {complaint}") from None
            raise
        if not elements and complaint:
            raise ParseFailure(f"corrupt: {complaint}")
        return elements, meta
    if kind in ("docx", "pptx", "xlsx"):
        _check_ooxml(path, kind.upper())
        if kind == "docx":
            from unstructured.partition.docx import partition_docx as part
        elif kind == "pptx":
            from unstructured.partition.pptx import partition_pptx as part
        else:
            from unstructured.partition.xlsx import partition_xlsx as part
        return to_elements(part(filename=str(path), **langs)), meta
    if kind == "xls":
        with open(path, "rb") as fh:
            if fh.read(8) != OLE_MAGIC and not zipfile.is_zipfile(path):
                raise ParseFailure("corrupt: not an Excel workbook")
        if zipfile.is_zipfile(path):
            _check_zip_bomb(path)
        from unstructured.partition.xlsx import partition_xlsx

        return to_elements(partition_xlsx(filename=str(path), **langs)), meta
    if kind in ("rtf", "odt", "epub"):
        _needs_pandoc(kind.upper())
        if kind != "rtf" and zipfile.is_zipfile(path):
            _check_zip_bomb(path)
        if kind == "rtf":
            from unstructured.partition.rtf import partition_rtf as part
        elif kind == "odt":
            from unstructured.partition.odt import partition_odt as part
        else:
            from unstructured.partition.epub import partition_epub as part
        return to_elements(part(filename=str(path), **langs)), meta
    if kind in ("doc", "ppt"):
        _needs_libreoffice(f".{kind}")
        if kind == "doc":
            from unstructured.partition.doc import partition_doc as part
        else:
            from unstructured.partition.ppt import partition_ppt as part
        return to_elements(part(filename=str(path), **langs)), meta
    raise ParseFailure(unsupported_reason(path), status="skipped")


def _check_email(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).lower()
    if b"multipart/encrypted" in head or b"smime-type=enveloped-data" in head:
        raise ParseFailure("encrypted: PGP or S/MIME encrypted e-mail")


def _email_fallback(path: Path) -> list[Element]:
    """Plain-text parts of every message in the file, read with the standard library."""
    import email
    from email import policy

    try:
        msg = email.message_from_bytes(_read(path), policy=policy.default)
    except Exception:
        return []
    out: list[Element] = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.is_attachment():
            continue
        try:
            body = part.get_content()
        except Exception:
            continue
        for para in re.split(r"\n\s*\n", body):
            if para.strip():
                out.append(Element(TEXT, para.strip()))
    return out


def _email_elements(raw: list[Any], meta: dict[str, Any]) -> list[Element]:
    """An e-mail's body elements, led by a From/To/Subject line (people search by them)."""
    elements = to_elements(raw)
    if raw:
        md = raw[0].metadata
        subject = getattr(md, "subject", None)
        if subject:
            meta["title"] = subject
        head = []
        if getattr(md, "sent_from", None):
            head.append("From: " + ", ".join(md.sent_from))
        if getattr(md, "sent_to", None):
            head.append("To: " + ", ".join(md.sent_to))
        if subject:
            head.append("Subject: " + subject)
        if head:
            elements.insert(0, Element(TEXT, "\n".join(head)))
    return elements


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "…") if len(text) > 160 else text or type(exc).__name__


def classify_error(exc: BaseException, kind: str) -> str:
    """A specific, short reason for a parser exception."""
    name = type(exc).__name__
    msg = _short(exc)
    low = f"{name} {msg}".lower()
    if "password" in low or "encrypt" in low or "decrypt" in low:
        return f"encrypted: {msg}"
    if "amplification" in low or "entity reference loop" in low:
        return f"XML entity expansion (billion laughs) refused: {msg}"
    if "resource limit exceeded" in low or "xml_parse_huge" in low:
        return f"too large for the XML parser: {msg}"
    if isinstance(exc, (zipfile.BadZipFile, EOFError)) or any(
        s in low
        for s in (
            "badzip",
            "syntax",
            "eof marker",
            "not a zip",
            "no /root",
            "xmlsyntax",
            "malformed",
            "truncated",
        )
    ):
        return f"corrupt: {name}: {msg}"
    if isinstance(exc, UnicodeError):
        return f"unreadable encoding: {msg}"
    if isinstance(exc, ImportError):
        return f"missing dependency: {getattr(exc, 'name', None) or msg}"
    if isinstance(exc, MemoryError):
        return "out of memory while parsing"
    if isinstance(exc, FileNotFoundError) and ("soffice" in low or "libreoffice" in low):
        return "needs LibreOffice: install libreoffice"
    return f"parse error: {name}: {msg}"


def chunk_id(collection: str, path: str, ordinal: int, text: str) -> str:
    """Stable id: the same text at the same place of the same file keeps its id."""
    h = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return hashlib.sha1(f"{collection}\0{path}\0{ordinal}\0{h}".encode()).hexdigest()[:20]


def parse_job(job: ParseJob) -> ParseOutput | ParseFailure:
    """Parse and chunk one file; failures are returned (not raised) so they pickle cleanly."""
    started = time.perf_counter()
    path = Path(job.path)
    try:
        elements, meta = partition_file(path, job.kind)
    except ParseFailure as failure:
        return failure
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
