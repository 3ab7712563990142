"""Logging setup for every lorebot process: text or JSON lines, request context, redaction.

* Context: the answer task binds the question id and channel (and, once known, the index
  and adapter versions) in context variables; every line logged while it runs carries
  them, whichever module logs it.
* JSON (``logging.json = true``): one object per line via python-json-logger, with the
  context as fields, for log shippers.
* Redaction: every formatted line (message, arguments, traceback, JSON fields) passes
  through :class:`Redactor`, which masks the configured secret values (Slack tokens and
  signing secret, passwords in the Redis and sync URLs, S3 keys: every ``SecretStr`` in
  the settings) and anything shaped like a Slack token or a URL password. Redacting the
  final text rather than the record is what catches secrets in exception messages and
  in libraries' own log calls.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from lorebot.settings import SECRET_MASK, Settings

CONTEXT_FIELDS = ("question_id", "channel", "index_version", "adapter_version")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"
NOISY = (
    "httpx",
    "urllib3",
    "sentence_transformers",
    "unstructured",
    "pdfminer",
    "filelock",
    "bm25s",
    "botocore",
    "aiobotocore",
    "s3fs",
    "fsspec",
)

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "lorebot_log_context", default=None
)


# --------------------------------------------------------------------------- context
@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every log line inside the block (None values are left out)."""
    token = _context.set(
        {**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}}
    )
    try:
        yield
    finally:
        _context.reset(token)


def update(**fields: Any) -> None:
    """Add fields to the enclosing :func:`bind` block (e.g. versions learned halfway
    through a task); they end with it. Outside any block there is no task to describe,
    so nothing is added: a field set there would stay on every later line of the thread.
    """
    current = _context.get()
    if current is not None:
        current.update({k: str(v) for k, v in fields.items() if v is not None})


def current() -> dict[str, str]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record (as attributes and a text suffix)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get() or {}
        for key in CONTEXT_FIELDS:
            if key in ctx and not hasattr(record, key):
                setattr(record, key, ctx[key])
        shown = {k: v for k, v in ctx.items() if k in CONTEXT_FIELDS}
        record.context = (
            (" [" + " ".join(f"{k}={v}" for k, v in shown.items()) + "]") if shown else ""
        )
        return True


# --------------------------------------------------------------------------- redaction
# Slack tokens: bot xoxb-, user xoxp-, app-level xapp-, config xoxe-, legacy xoxa/xoxr/xoxs.
_SLACK_TOKEN = re.compile(r"\b(?:xox[abeoprs]|xapp)-[A-Za-z0-9][A-Za-z0-9-]{5,}")
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)", re.IGNORECASE
)


class Redactor:
    """Masks known secret values and secret-shaped strings in a line of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for s in secrets:
            if s and len(s) >= 4:  # shorter values would mask ordinary words
                values.add(s)
                escaped = json.dumps(s)[1:-1]  # as it appears inside a JSON string
                values.add(escaped)
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, SECRET_MASK)
        text = _SLACK_TOKEN.sub(SECRET_MASK, text)
        return _URL_PASSWORD.sub(lambda m: m["head"] + SECRET_MASK + m["at"], text)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: SecretStr values and passwords inside URLs."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, SecretStr):
            found.append(obj.get_secret_value())
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, str) and "://" in obj:
            try:
                pw = urlsplit(obj).password
            except ValueError:
                pw = None
            if pw:
                found.append(pw)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)

    walk(settings)
    return found


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter and redacts its whole output."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(self.inner.format(record))


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        # The text suffix is for humans; JSON has the fields themselves.
        reserved_attrs=[
            *logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys(),
            "context",
            "message",
            "color_message",
        ],
        json_ensure_ascii=False,
    )


HANDLER_NAME = "lorebot"
_active: Redactor = Redactor()


def redact(text: str) -> str:
    """Mask secrets in text printed outside logging (the CLI's one-line errors)."""
    return _active(text)


def setup(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once per process (idempotent: replaces our handler)."""
    level = getattr(logging, settings.logging.level.upper(), logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    inner = json_formatter() if settings.logging.json_format else logging.Formatter(TEXT_FORMAT)
    global _active
    _active = Redactor(secret_values(settings))
    handler.setFormatter(RedactingFormatter(inner, _active))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
