"""Pure text clean-up before parsing: front matter, template tags, encodings.

Static-site handbooks (Jekyll, Hugo, Eleventy) are Markdown with YAML front matter and
Liquid/Jinja tags. The front matter is metadata (title, url), not prose, and the tags
are markup that would otherwise be indexed as words.
"""

from __future__ import annotations

import codecs
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

_FRONT_MATTER = re.compile(
    r"\A(?:\ufeff)?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S
)
_TOML_FRONT_MATTER = re.compile(
    r"\A(?:\ufeff)?\+\+\+[ \t]*\r?\n(.*?)\r?\n\+\+\+[ \t]*(?:\r?\n|\Z)", re.S
)
_COMMENT_BLOCK = re.compile(r"\{%-?\s*comment\s*-?%\}.*?\{%-?\s*endcomment\s*-?%\}", re.S)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_SLACK_CHANNEL = re.compile(r"\{%-?\s*slack_channel\s+[\"']([^\"']+)[\"']\s*-?%\}")
_TAG = re.compile(r"\{%.*?%\}", re.S)
_EXPR = re.compile(r"\{\{.*?\}\}", re.S)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(metadata, body) of a document that may start with YAML or TOML front matter.

    Malformed front matter is treated as no metadata (logged), never as a failure: the
    body is still worth indexing.
    """
    m = _FRONT_MATTER.match(text)
    if m:
        body = text[m.end() :]
        try:
            import yaml

            data = yaml.safe_load(m.group(1))
        except Exception as exc:
            log.debug("front matter is not valid YAML: %s", exc)
            return {}, body
        return (data if isinstance(data, dict) else {}), body
    m = _TOML_FRONT_MATTER.match(text)
    if m:
        body = text[m.end() :]
        try:
            import tomllib

            return tomllib.loads(m.group(1)), body
        except Exception as exc:
            log.debug("front matter is not valid TOML: %s", exc)
            return {}, body
    return {}, text


def strip_template_tags(text: str) -> str:
    """Remove Liquid/Jinja tags (`{% ... %}`, `{{ ... }}`, `{# ... #}`) and comment blocks.

    ``{% slack_channel "x" %}`` becomes ``#x`` because the channel name is content a
    reader needs ("ask in #people-ops"); every other tag is markup.
    """
    text = _COMMENT_BLOCK.sub("", text)
    text = _JINJA_COMMENT.sub("", text)
    text = _SLACK_CHANNEL.sub(lambda m: "#" + m.group(1), text)
    text = _TAG.sub("", text)
    text = _EXPR.sub("", text)
    return text


def front_matter_meta(meta: dict[str, Any]) -> dict[str, str]:
    """The front matter keys lorebot uses, as strings: title, url, description."""
    out: dict[str, str] = {}
    for key in ("title", "url", "permalink", "description"):
        value = meta.get(key)
        if isinstance(value, (str, int, float)) and str(value).strip():
            out[key] = str(value).strip()
    if "url" not in out:
        for key in ("source_url", "canonical_url", "link"):
            value = meta.get(key)
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                out["url"] = value
                break
    return out


def citation_url(url: str | None, hosts: Iterable[str]) -> str | None:
    """`url` if it may be a citation link: https, on one of `hosts`, nothing odd in it.

    A host ``*.example.org`` allows its subdomains. Front matter is written by whoever
    writes the document, so anything else (another host, plain http, ``javascript:``, a
    relative path, credentials in the URL) is dropped: the citation then shows the path.
    """
    if not url or any(ch in url for ch in "|<>\"' \t\r\n"):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() != "https" or not host or parts.username or parts.password:
        return None
    if port not in (None, 443):
        return None
    for allowed in hosts:
        allowed = allowed.strip().lower().rstrip(".")
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return url
    return None


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_bytes(data: bytes) -> str:
    """Text of a file in whatever common encoding it uses (BOMs, UTF-16 without BOM, cp1252).

    Raises UnicodeDecodeError only for data that is clearly binary.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data.decode(enc)
    if data[:2000].count(b"\x00") > len(data[:2000]) // 4:
        # UTF-16/32 without a BOM: many NUL bytes in ASCII-heavy text
        for enc in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
            try:
                text = data.decode(enc)
            except UnicodeDecodeError:
                continue
            if text and sum(ch.isprintable() or ch.isspace() for ch in text[:500]) > 0.9 * len(
                text[:500]
            ):
                return text
        raise UnicodeDecodeError("utf-16", data[:1], 0, 1, "binary data")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Legacy 8-bit text. Encoding detection is only reliable on enough text; short
    # snippets are far more often Windows-1252 than anything else.
    if len(data) >= 200:
        try:
            from charset_normalizer import from_bytes

            best = from_bytes(data).best()
            if best is not None:
                return str(best)
        except ImportError:  # pragma: no cover - unstructured depends on it
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")
