"""Formats read without ``unstructured``, or when it reads nothing: JSON / NDJSON as
'key path: value' lines, and the plain-text parts of an e-mail that ``unstructured`` skips
(digests, odd MIME trees), read with the standard library.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ingest.chunking import TEXT, Element
from ingest.errors import ParseFailure
from ingest.parse.detect import read_bytes


def json_elements(text: str) -> list[Element]:
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


def email_fallback(path: Path) -> list[Element]:
    """Plain-text parts of every message in the file, read with the standard library."""
    import email
    from email import policy

    try:
        msg = email.message_from_bytes(read_bytes(path), policy=policy.default)
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
