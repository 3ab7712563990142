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
        self.space_viewers: dict[str, list[str]] = {}  # key -> e-mails and group:<name>
        self.groups: dict[str, list[str]] = {}  # group name -> member e-mails
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/wiki"
        app = Starlette(
            routes=[
                Route("/wiki/rest/api/content", self.listing),
                Route("/wiki/rest/api/content/search", self.search),
                Route("/wiki/download/attachments/{page}/{name}", self.download),
                Route("/wiki/rest/api/content/{page_id}", self.content),
                Route("/wiki/rest/api/space/{key}", self.space),
                Route("/wiki/rest/api/group/{name}/member", self.members),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def page(self, pid, space, title, body, version=1, restricted=False, parent=None):
        """``restricted``: True (an account without a visible e-mail) or a list of
        e-mails and ``group:<name>`` entries."""
        self.pages[pid] = dict(space=space, title=title, body=body, version=version,
                               restricted=restricted, parent=parent)  # fmt: skip

    async def space(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        viewers = self.space_viewers.get(request.path_params["key"], [])
        users = [{"type": "known", "email": v} for v in viewers if not v.startswith("group:")]
        groups = [{"type": "group", "name": v[6:]} for v in viewers if v.startswith("group:")]
        perms = [
            {"operation": {"operation": "read", "targetType": "space"},
             "subjects": {"user": {"results": users}, "group": {"results": groups}}},
            {"operation": {"operation": "administer", "targetType": "space"},
             "subjects": {"user": {"results": [{"email": "root@example.com"}]}}},
        ]  # fmt: skip
        return JSONResponse({"key": request.path_params["key"], "permissions": perms})

    async def members(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        found = self.groups.get(request.path_params["name"])
        if found is None:
            return JSONResponse({"message": "no such group"}, status_code=404)
        start = int(request.query_params.get("start", 0))
        out = {"results": [{"type": "known", "email": e} for e in found[start : start + 2]]}
        links = {}
        if start + 2 < len(found):
            links["next"] = (
                f"/rest/api/group/{request.path_params['name']}/member?start={start + 2}"
            )
        return JSONResponse(out | {"_links": links})

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
        r = p["restricted"]
        names = [] if r is True or not r else r
        people = [{"accountId": "u1"}] if r is True else [
            {"accountId": e, "email": e} for e in names if not e.startswith("group:")]  # fmt: skip
        users = {"results": people, "size": len(people)}
        groups = {"results": [{"name": e[6:]} for e in names if e.startswith("group:")]}
        ancestors, at = [], p.get("parent")
        while at:
            ancestors.insert(0, {"id": at})
            at = self.pages.get(at, {}).get("parent")
        return {
            "id": pid,
            "type": "page",
            "title": p["title"],
            "version": {"number": p["version"]},
            "ancestors": ancestors,
            "restrictions": {"read": {"restrictions": {"user": users, "group": groups}}},
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
