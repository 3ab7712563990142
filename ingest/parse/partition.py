"""One file → elements and document metadata, by kind: each kind goes to its own
``unstructured`` partitioner with the "fast" strategy (no OCR, no layout model), after the
safety checks for that kind; Markdown and HTML front matter give the title and url.

Markdown and HTML skip one step of ``unstructured``'s HTML parser whose answer we throw
away: see `plain_text_classes`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest.chunking import TEXT, Element
from ingest.errors import ParseFailure, short
from ingest.markup import front_matter_meta, split_front_matter, strip_template_tags
from ingest.parse.detect import OLE_MAGIC, read_text, unsupported_reason
from ingest.parse.elements import email_elements, html_title, join_wrapped_lines, to_elements
from ingest.parse.fallbacks import email_fallback, json_elements
from ingest.parse.safety import (
    HTML_MAX_DEPTH,
    check_email,
    check_ooxml,
    check_pdf,
    check_zip_bomb,
    html_depth,
    needs_libreoffice,
    needs_pandoc,
)

log = logging.getLogger(__name__)

# -- the narrative-text check of unstructured's HTML parser ---------------------------
#
# For every paragraph of text without a more specific tag, unstructured's HTML parser
# (which partition_md also goes through) asks ``is_possible_narrative_text`` whether it is
# "NarrativeText" or plain "Text" (UncategorizedText). The answer runs spaCy's tagger and
# parser over the paragraph (sentence count, verbs, capitalised words), the largest part
# of the time a Markdown page takes, and the first call loads the spaCy model. Our
# elements (`ingest.parse.elements.to_elements`) map both categories to TEXT with the
# same depth, so inside `plain_text_classes` the check answers "not narrative" at once:
# the bullet, address and e-mail checks before it, and everything after, are unchanged.
# Other callers in the process (and text files, whose title detection needs spaCy) get
# the original check: the switch is a context variable, not a global.

_SKIP_NARRATIVE_CHECK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lorebot_skip_narrative_check", default=False
)
_install_lock = threading.Lock()
#: Whether Markdown and HTML skip the narrative-text check (False: unstructured's own
#: classification, as the same-output test compares).
SKIP_NARRATIVE_CHECK = True


def _install_narrative_switch() -> bool:
    """Wrap the HTML parser's ``is_possible_narrative_text`` once per process.

    Returns False when this version of unstructured has no such name to wrap (the pages
    are then parsed as unstructured does, only slower).
    """
    from unstructured.partition.html import parser

    with _install_lock:
        current = getattr(parser, "is_possible_narrative_text", None)
        if current is None:
            return False
        if getattr(current, "_lorebot_switch", False):
            return True
        original = current

        def is_possible_narrative_text(text: str, *args: Any, **kwargs: Any) -> bool:
            if _SKIP_NARRATIVE_CHECK.get():
                return False
            return original(text, *args, **kwargs)

        is_possible_narrative_text._lorebot_switch = True  # type: ignore[attr-defined]
        parser.is_possible_narrative_text = is_possible_narrative_text
        return True


@contextmanager
def plain_text_classes() -> Iterator[None]:
    """Within this block, unstructured's HTML parser calls untagged text "Text" without
    running its spaCy narrative-text check (see the comment above)."""
    if not SKIP_NARRATIVE_CHECK or not _install_narrative_switch():
        yield
        return
    token = _SKIP_NARRATIVE_CHECK.set(True)
    try:
        yield
    finally:
        _SKIP_NARRATIVE_CHECK.reset(token)


def partition_file(path: Path, kind: str) -> tuple[list[Element], dict[str, Any]]:
    """Elements and document metadata (title, url) of one file, by kind."""
    langs = {"languages": ["eng"]}
    meta: dict[str, Any] = {}
    if kind == "md":
        fm, body = split_front_matter(read_text(path))
        meta.update(front_matter_meta(fm))
        body = strip_template_tags(body)
        if not body.strip():
            return [], meta
        from unstructured.partition.md import partition_md

        with plain_text_classes():
            return to_elements(partition_md(text=body, **langs)), meta
    if kind == "html":
        text = strip_template_tags(read_text(path))
        fm, text = split_front_matter(text)
        meta.update(front_matter_meta(fm))
        if "title" not in meta and (t := html_title(text)):
            meta["title"] = t
        from unstructured.partition.html import partition_html

        with plain_text_classes():
            elements = to_elements(partition_html(text=text, **langs))
        if not elements and (depth := html_depth(text)) > HTML_MAX_DEPTH:
            raise ParseFailure(
                f"too deeply nested: HTML nests {depth:,} levels; parsers stop at {HTML_MAX_DEPTH}"
            )
        return elements, meta
    if kind == "txt":
        text = read_text(path)
        if not text.strip():
            return [], meta
        from unstructured.partition.text import partition_text

        return to_elements(partition_text(text=text, **langs)), meta
    if kind == "xml":
        from unstructured.partition.xml import partition_xml

        return to_elements(partition_xml(text=read_text(path), **langs)), meta
    if kind in ("csv", "tsv"):
        import io

        text = read_text(path)
        if not text.strip():
            return [], meta
        from unstructured.partition.csv import partition_csv

        data = io.BytesIO(text.encode("utf-8"))
        try:
            return to_elements(partition_csv(file=data, include_header=True, **langs)), meta
        except Exception as exc:
            # Rows of unequal length and friends: the words are still worth finding.
            log.debug("%s is not a regular table (%s): reading it as text", path, exc)
            meta["note"] = f"read as text: {short(exc)}"
            from unstructured.partition.text import partition_text

            return to_elements(partition_text(text=text, **langs)), meta
    if kind == "json":
        return json_elements(read_text(path)), meta
    if kind == "eml":
        check_email(path)
        from unstructured.partition.email import partition_email

        try:
            raw = partition_email(filename=str(path), **langs)
        except Exception:
            raw = partition_email(filename=str(path), process_attachments=False, **langs)
        elements = email_elements(raw, meta)
        if not any(e.kind != TEXT or not e.text.startswith("From:") for e in elements):
            elements += email_fallback(path)  # digests and odd MIME trees unstructured skips
        return elements, meta
    if kind == "msg":
        from unstructured.partition.msg import partition_msg

        try:
            raw = partition_msg(filename=str(path), **langs)
        except Exception:
            raw = partition_msg(filename=str(path), process_attachments=False, **langs)
        return email_elements(raw, meta), meta
    if kind == "pdf":
        complaint = check_pdf(path)
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
        check_ooxml(path, kind.upper())
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
            check_zip_bomb(path)
        from unstructured.partition.xlsx import partition_xlsx

        return to_elements(partition_xlsx(filename=str(path), **langs)), meta
    if kind in ("rtf", "odt", "epub"):
        needs_pandoc(kind.upper())
        if kind != "rtf" and zipfile.is_zipfile(path):
            check_zip_bomb(path)
        if kind == "rtf":
            from unstructured.partition.rtf import partition_rtf as part
        elif kind == "odt":
            from unstructured.partition.odt import partition_odt as part
        else:
            from unstructured.partition.epub import partition_epub as part
        return to_elements(part(filename=str(path), **langs)), meta
    if kind in ("doc", "ppt"):
        needs_libreoffice(f".{kind}")
        if kind == "doc":
            from unstructured.partition.doc import partition_doc as part
        else:
            from unstructured.partition.ppt import partition_ppt as part
        return to_elements(part(filename=str(path), **langs)), meta
    raise ParseFailure(unsupported_reason(path), status="skipped")
