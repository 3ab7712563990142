"""Why one file could not be ingested: the failure a parser raises and its short reasons.

Every reason starts with a word the report and the next run read ("encrypted: ...",
"corrupt: ...", "needs LibreOffice: ...", "missing dependency: ..."); the planner retries
the environment-dependent ones (ingest.plan.RETRY_REASONS) even when the file is unchanged.
"""

from __future__ import annotations

import zipfile


class ParseFailure(Exception):
    """One file cannot be ingested; `status` is 'failed' or 'skipped'."""

    def __init__(self, reason: str, status: str = "failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def short(exc: BaseException) -> str:
    """An exception's message on one line, cut to 160 characters (its type name if empty)."""
    text = " ".join(str(exc).split())
    return (text[:160] + "…") if len(text) > 160 else text or type(exc).__name__


def classify_error(exc: BaseException, kind: str) -> str:
    """A specific, short reason for a parser exception."""
    name = type(exc).__name__
    msg = short(exc)
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
