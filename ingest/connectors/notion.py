"""Notion pages (database rows included) through the Notion REST API, incremental by each
page's ``last_edited_time``.

Every sync lists the pages shared with the integration (``POST /v1/search``, 100 a call,
following ``next_cursor``); a page whose last edit is the one recorded is not fetched.
Changed pages are read block by block (``GET /v1/blocks/{id}/children``, paged, nested
blocks up to three levels) and written as Markdown. A page archived, moved to the trash,
or no longer shared with the integration (it stops appearing in the search) leaves the
index. httpx, as for the other REST connectors: the official client is a thin wrapper
over the same calls.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from ingest.connectors.base import (
    Doc,
    Sink,
    SourceError,
    TooLarge,
    resolve_secret,
    wanted,
)
from ingest.connectors.http import ApiConnector, Http, http_error_reason

log = logging.getLogger(__name__)

API = "https://api.notion.com"
NOTION_VERSION = "2022-06-28"
MAX_CALLS_PER_PAGE = 200  # block-children calls for one page
MAX_NESTING = 3
MAX_SEARCH_PAGES = 2000
#: Block type -> Markdown prefix of its text.
PREFIX = {
    "heading_1": "# ",
    "heading_2": "## ",
    "heading_3": "### ",
    "bulleted_list_item": "- ",
    "numbered_list_item": "1. ",
    "to_do": "- [ ] ",
    "quote": "> ",
    "callout": "> ",
    "toggle": "",
    "paragraph": "",
    "code": "    ",
}


def _text(rich: list[dict[str, Any]] | None) -> str:
    return "".join(str(r.get("plain_text", "")) for r in rich or [])


def page_title(page: dict[str, Any]) -> str:
    """The page's title property (any property of type title)."""
    for prop in (page.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return _text(prop.get("title")).strip()
    return ""


class NotionConnector(ApiConnector):
    """Mirror the pages shared with one Notion integration."""

    default_url = API

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: dict[str, str] = {}

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        assert self.http is not None
        headers = dict(self.headers)
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body)
        try:
            resp = self.http.request(method, self.api + path, headers, content=content)
        except (httpx.HTTPError, TooLarge) as exc:
            return 0, http_error_reason(exc)
        if resp.status != 200:
            return resp.status, None
        try:
            return 200, json.loads(resp.content)
        except ValueError:
            return 0, "not JSON"

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        secret = resolve_secret(self.cfg, self.name)
        if secret is None:
            raise SourceError(
                f"source {self.name}: no integration token", fix="set secret_env or secret_file"
            )
        self.headers = {
            "Authorization": f"Bearer {secret.get_secret_value()}",
            "Notion-Version": NOTION_VERSION,
            "Accept": "application/json",
        }
        self.http = Http(self.cfg, self.user_agent, sleep=self.sleep)
        try:
            start: str | None = None
            for _ in range(MAX_SEARCH_PAGES):
                body = {"filter": {"property": "object", "value": "page"}, "page_size": 100}
                if start:
                    body["start_cursor"] = start
                status, data = self._call("POST", "/v1/search", body)
                if status != 200:
                    why = f"HTTP {status}" if status else data
                    raise SourceError(
                        f"source {self.name}: the Notion search failed: {why}",
                        fix="check the integration token"
                        if status in (401, 403)
                        else "the next sync tries again",
                    )
                for page in data.get("results") or []:
                    if sink.full():
                        break
                    self._page(sink, page)
                start = data.get("next_cursor") if data.get("has_more") else None
                if not start or sink.full():
                    break
        finally:
            self.http.close()
        return {}

    def _page(self, sink: Sink, page: dict[str, Any]) -> None:
        page_id = str(page.get("id") or "")
        if not page_id or page.get("object", "page") != "page":
            return
        if page.get("archived") or page.get("in_trash"):
            if sink.known(page_id):
                sink.failed(page_id, "archived or in the trash in Notion", gone=True)
            return
        title = page_title(page) or page_id
        path = f"{title[:80]}~{page_id.replace('-', '')[:12]}.md"
        if not wanted(self.cfg, path):
            return
        version = str(page.get("last_edited_time") or "")
        old = sink.known(page_id)
        if old and old["version"] == version and old["collection"] == self.cfg.collection:
            sink.unchanged(page_id)
            return
        lines: list[str] = [f"# {title}", ""]
        calls = [0]
        if not self._blocks(page_id, lines, 0, calls):
            sink.failed(page_id, "could not read the page's blocks (see the log)")
            return
        text = "\n".join(lines)
        limit = self.cfg.max_document_mb * 2**20
        if len(text.encode()) > limit:
            sink.failed(page_id, f"too large: over the {self.cfg.max_document_mb:g} MB limit")
            return
        link = page.get("url")
        link = link if isinstance(link, str) and link.startswith("https://") else None
        front = f"---\ntitle: {json.dumps(title)}\n" + (
            f"url: {json.dumps(link)}\n" if link else ""
        )
        sink.put(
            Doc(page_id, version, path, self.cfg.collection, url=link),
            (front + "---\n" + text + "\n").encode("utf-8"),
        )

    def _blocks(self, block_id: str, lines: list[str], depth: int, calls: list[int]) -> bool:
        """Append a block's children as Markdown; False when a call failed."""
        start: str | None = None
        while calls[0] < MAX_CALLS_PER_PAGE:
            calls[0] += 1
            path = f"/v1/blocks/{block_id}/children?page_size=100"
            status, data = self._call("GET", path + (f"&start_cursor={start}" if start else ""))
            if status != 200:
                log.info("source %s: blocks of %s: %s", self.name, block_id, status or data)
                return False
            for block in data.get("results") or []:
                kind = str(block.get("type") or "")
                body = block.get(kind) or {}
                text = _text(body.get("rich_text"))
                if kind in PREFIX and text.strip():
                    lines.append("  " * depth + PREFIX[kind] + text)
                    lines.append("")
                elif kind == "child_page":
                    pass  # a page of its own: listed by the search
                if block.get("has_children") and depth < MAX_NESTING and kind != "child_page":
                    if not self._blocks(str(block.get("id")), lines, depth + 1, calls):
                        return False
            start = data.get("next_cursor") if data.get("has_more") else None
            if not start:
                return True
        return True
