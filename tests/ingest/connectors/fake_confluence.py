"""A local server speaking the subset of Confluence's REST API the connector uses
(uvicorn + Starlette): paged content listing with versions and read restrictions, page
bodies, basic or bearer auth, 429 storms, and a log of every call."""

from __future__ import annotations

import threading
import time
import urllib.parse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lorebot.cli.stack import free_port


class FakeConfluence:
    def __init__(self, auth_header: str) -> None:
        self.auth_header = auth_header
        self.pages: dict[str, dict] = {}  # id -> {space, title, version, body, restricted}
        self.storm = 0  # 429s before the next answer
        self.broken: set[str] = set()  # page ids whose body answer is not JSON
        self.attachments: dict[str, dict] = {}  # id -> {page, name, body, version}
        self.calls: list[str] = []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/wiki"
        app = Starlette(
            routes=[
                Route("/wiki/rest/api/content", self.listing),
                Route("/wiki/rest/api/content/search", self.search),
                Route("/wiki/download/attachments/{page}/{name}", self.download),
                Route("/wiki/rest/api/content/{page_id}", self.content),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def page(self, pid, space, title, body, version=1, restricted=False):
        self.pages[pid] = dict(space=space, title=title, body=body, version=version,
                               restricted=restricted)  # fmt: skip

    def attach(self, aid, page, name, body, version=1):
        self.attachments[aid] = dict(page=page, name=name, body=body.encode(), version=version)

    async def search(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        q = request.query_params
        cql = q["cql"]
        assert "type = attachment" in cql
        space = cql.split('"')[1]
        ids = sorted(
            a for a, v in self.attachments.items()
            if v["page"] in self.pages and self.pages[v["page"]]["space"] == space
        )  # fmt: skip
        results = []
        for a in ids:
            v = self.attachments[a]
            results.append(
                {
                    "id": a,
                    "type": "attachment",
                    "title": v["name"],
                    "version": {"number": v["version"]},
                    "container": {"id": v["page"]},
                    "extensions": {"fileSize": len(v["body"])},
                    "_links": {"download": f"/download/attachments/{v['page']}/{v['name']}"},
                }
            )
        return JSONResponse({"results": results, "size": len(results), "_links": {}})

    async def download(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        for v in self.attachments.values():
            if (
                v["page"] == request.path_params["page"]
                and v["name"] == request.path_params["name"]
            ):
                return Response(v["body"], media_type="application/octet-stream")
        return Response("not found", status_code=404)

    def _gate(self, request: Request) -> Response | None:
        self.calls.append(request.url.path + ("?" + request.url.query if request.url.query else ""))
        if request.headers.get("authorization") != self.auth_header:
            return JSONResponse({"message": "unauthorized"}, status_code=401)
        if self.storm > 0:
            self.storm -= 1
            return JSONResponse({"message": "rate limited"}, 429, headers={"Retry-After": "0"})
        return None

    def _summary(self, pid: str, p: dict) -> dict:
        users = {"results": [{"accountId": "u1"}], "size": 1} if p["restricted"] else {
            "results": [], "size": 0}  # fmt: skip
        return {
            "id": pid,
            "type": "page",
            "title": p["title"],
            "version": {"number": p["version"]},
            "restrictions": {"read": {"restrictions": {"user": users, "group": {"results": []}}}},
            "_links": {"webui": f"/spaces/{p['space']}/pages/{pid}"},
        }

    async def listing(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        q = request.query_params
        start, limit = int(q.get("start", 0)), min(int(q.get("limit", 25)), 2)  # tiny pages
        ids = sorted(i for i, p in self.pages.items() if p["space"] == q.get("spaceKey"))
        chunk = ids[start : start + limit]
        links = {}
        if start + limit < len(ids):
            nq = dict(q) | {"start": start + limit, "limit": limit}
            links["next"] = "/rest/api/content?" + urllib.parse.urlencode(nq)
        return JSONResponse(
            {
                "results": [self._summary(i, self.pages[i]) for i in chunk],
                "start": start,
                "limit": limit,
                "size": len(chunk),
                "_links": links,
            }  # fmt: skip
        )

    async def content(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        pid = request.path_params["page_id"]
        if pid not in self.pages:
            return JSONResponse({"message": "not found"}, status_code=404)
        if pid in self.broken:
            return Response("<html>oops</html>", media_type="application/json")
        p = self.pages[pid]
        out = self._summary(pid, p) | {"body": {"storage": {"value": p["body"]}}}
        return JSONResponse(out)

    def __enter__(self) -> FakeConfluence:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
