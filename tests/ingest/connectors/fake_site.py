"""A small web site served by uvicorn + Starlette on a free local port, for the crawler.

Pages live in a dict the test edits between syncs; every response carries an ETag and
answers If-None-Match with 304, like a real server. ``status`` forces a status per path
(403 for an unshared page), ``storm`` answers 429 (Retry-After: 0) that many times first.
Every request is recorded as (path, status).
"""

from __future__ import annotations

import hashlib
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lorebot.cli.stack import free_port


class Site:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body)
        self.status: dict[str, int] = {}
        self.storm: dict[str, int] = {}
        self.redirects: dict[str, str] = {}  # path -> Location
        self.log: list[tuple[str, int]] = []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path:path}", self.handle)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def page(self, path: str, body: str, ctype: str = "text/html") -> None:
        self.pages[path] = (ctype, body.encode())

    async def handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        if path != "/" and request.url.query:
            path += "?" + request.url.query
        resp = self._answer(path, request)
        self.log.append((path, resp.status_code))
        return resp

    def _answer(self, path: str, request: Request) -> Response:
        if self.storm.get(path, 0) > 0:
            self.storm[path] -= 1
            return Response("slow down", status_code=429, headers={"Retry-After": "0"})
        if path in self.redirects:
            return Response(status_code=302, headers={"Location": self.redirects[path]})
        if path in self.status:
            return Response("no", status_code=self.status[path])
        if path not in self.pages:
            return Response("not found", status_code=404)
        ctype, body = self.pages[path]
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=ctype, headers={"ETag": etag})

    def __enter__(self) -> Site:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def fetched(self, status: int | None = 200) -> list[str]:
        return [p for p, s in self.log if status is None or s == status]
