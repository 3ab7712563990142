"""``unstructured``'s elements → our parser-independent `Element` records.

The category map, the clean-up of text no reader learns from (inline base64, minified
code), PDF lines re-joined into their sentences, an e-mail's From/To/Subject line, and the
title an HTML page declares.
"""

from __future__ import annotations

import re
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
    Element,
)

_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def html_title(text: str) -> str | None:
    m = _HTML_TITLE.search(text[:20000])
    if m:
        title = " ".join(re.sub(r"<[^>]+>", "", m.group(1)).split())
        return title or None
    return None


# unstructured's category → our kind (None: dropped); any other category is TEXT.
_KINDS: dict[str, str | None] = {
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
}


def _category_kind(category: str) -> str | None:
    return _KINDS.get(category, TEXT)


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


def email_elements(raw: list[Any], meta: dict[str, Any]) -> list[Element]:
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
