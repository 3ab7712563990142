"""A local server speaking the subset of the Notion API the connector uses: paged
search over the pages shared with the integration, paged and nested block children,
archived pages, 429 storms, bearer-token and Notion-Version checks."""

from __future__ import annotations

import json
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lorebot.cli.stack import free_port


def para(text: str, kind: str = "paragraph", children: list | None = None) -> dict:
    return {"type": kind, kind: {"rich_text": [{"plain_text": text}]}, "children": children or []}


class FakeNotion:
    def __init__(self, token: str) -> None:
        self.token = token
        self.pages: dict[str, dict] = {}  # id -> {title, blocks, edited, archived, shared}
        self.storm = 0
        self.calls: list[str] = []
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/v1/search", self.search, methods=["POST"]),
                Route("/v1/blocks/{bid}/children", self.children),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self._blocks: dict[str, list[dict]] = {}

    def page(self, pid: str, title: str, blocks: list[dict], edited: str) -> None:
        self.pages[pid] = dict(
            title=title, blocks=blocks, edited=edited, archived=False, shared=True
        )
        self._index(pid, blocks)

    def _index(self, bid: str, blocks: list[dict]) -> None:
        self._blocks[bid] = []
        for i, b in enumerate(blocks):
            child_id = f"{bid}-b{i}"
            out = {k: v for k, v in b.items() if k != "children"} | {
                "id": child_id, "object": "block", "has_children": bool(b["children"])}  # fmt: skip
            self._blocks[bid].append(out)
            if b["children"]:
                self._index(child_id, b["children"])

    def _gate(self, request: Request) -> Response | None:
        self.calls.append(request.url.path)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"code": "unauthorized"}, status_code=401)
        if request.headers.get("notion-version") != "2022-06-28":
            return JSONResponse({"code": "missing_version"}, status_code=400)
        if self.storm > 0:
            self.storm -= 1
            return JSONResponse({"code": "rate_limited"}, 429, headers={"Retry-After": "0"})
        return None

    async def search(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        body = json.loads(await request.body())
        ids = sorted(i for i, p in self.pages.items() if p["shared"])
        start = int(body.get("start_cursor") or 0)
        chunk = ids[start : start + 2]
        results = []
        for i in chunk:
            p = self.pages[i]
            title = {"type": "title", "title": [{"plain_text": p["title"]}]}
            results.append(
                {
                    "object": "page",
                    "id": i,
                    "last_edited_time": p["edited"],
                    "archived": p["archived"],
                    "url": f"https://www.notion.so/{i}",
                    "properties": {"Name": title},
                }
            )
        more = start + 2 < len(ids)
        return JSONResponse(
            {"results": results, "has_more": more, "next_cursor": str(start + 2) if more else None}
        )

    async def children(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        blocks = self._blocks.get(request.path_params["bid"])
        if blocks is None:
            return JSONResponse({"code": "object_not_found"}, status_code=404)
        start = int(request.query_params.get("start_cursor") or 0)
        more = start + 2 < len(blocks)
        return JSONResponse(
            {
                "results": blocks[start : start + 2],
                "has_more": more,
                "next_cursor": str(start + 2) if more else None,
            }  # fmt: skip
        )

    def __enter__(self) -> FakeNotion:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
