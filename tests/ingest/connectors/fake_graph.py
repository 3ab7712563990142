"""A local server speaking the subset of Microsoft Graph (and its token endpoint) the
SharePoint connector uses: client-credentials tokens, paged drive delta queries with
delta links, deleted items, an expired token (410), file content behind a redirect to a
pre-authenticated download host, 429 storms. Every request is recorded."""

from __future__ import annotations

import threading
import time
import urllib.parse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from lorebot.cli.stack import free_port

ACCESS = "graph-access-token-1"


class FakeGraph:
    def __init__(self, client_secret: str) -> None:
        self.client_secret = client_secret
        self.items: dict[str, dict] = {}  # id -> {name, folder, body, ctag}
        self.events: list[str] = []  # ids, in the order they changed or went
        self.expired = False
        self.sharing_events: list[int] = []  # positions in events that only changed sharing
        self.groups: dict[str, list[str]] = {"g-all": []}  # group id -> member mails
        self.prefer: list[str | None] = []  # Prefer headers of delta calls
        self.storm = 0
        self.calls: list[tuple[str, str | None]] = []  # (path, authorization)
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.graph = self.root + "/v1.0"
        app = Starlette(
            routes=[
                Route("/tenant-1/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/v1.0/drives/{drive}/root/delta", self.delta),
                Route("/v1.0/drives/{drive}/items/{item}/content", self.content),
                Route("/v1.0/drives/{drive}/items/{item}/permissions", self.permissions),
                Route("/v1.0/groups/{gid}/transitiveMembers", self.members),
                Route("/download/{item}", self.download),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def put(
        self, item_id: str, folder: str, name: str, body: str, perms: list | None = None
    ) -> None:
        old = self.items.get(item_id)
        ctag = f"c{(int(old['ctag'][1:]) + 1) if old else 1}"
        if perms is None:
            perms = (
                old["perms"]
                if old
                else [{"roles": ["read"], "grantedToV2": {"group": {"id": "g-all"}}}]
            )
        self.items[item_id] = dict(
            folder=folder, name=name, body=body.encode(), ctag=ctag, perms=perms
        )
        self.events.append(item_id)

    def share(self, item_id: str, perms: list) -> None:
        """New permissions, same content (same cTag): the delta reports the item only when
        asked with ``Prefer: deltashowsharingchanges``."""
        self.items[item_id]["perms"] = perms
        self.sharing_events.append(len(self.events))
        self.events.append(item_id)

    async def permissions(self, request: Request) -> Response:
        self._record(request)
        if request.headers.get("authorization") != f"Bearer {ACCESS}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        it = self.items.get(request.path_params["item"])
        if it is None:
            return JSONResponse({"error": "itemNotFound"}, status_code=404)
        page = int(request.query_params.get("page", 0))
        out: dict = {"value": it["perms"][page * 2 : page * 2 + 2]}
        if (page + 1) * 2 < len(it["perms"]):
            out["@odata.nextLink"] = str(request.url).split("?")[0] + f"?page={page + 1}"
        return JSONResponse(out)

    async def members(self, request: Request) -> Response:
        self._record(request)
        if request.headers.get("authorization") != f"Bearer {ACCESS}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        found = self.groups.get(request.path_params["gid"])
        if found is None:
            return JSONResponse({"error": "Request_ResourceNotFound"}, status_code=404)
        return JSONResponse({"value": [{"mail": m} for m in found]})

    def delete(self, item_id: str) -> None:
        del self.items[item_id]
        self.events.append(item_id)

    def _record(self, request: Request) -> None:
        self.calls.append((request.url.path, request.headers.get("authorization")))

    async def token(self, request: Request) -> Response:
        self._record(request)
        form = urllib.parse.parse_qs((await request.body()).decode())
        if form.get("client_secret") != [self.client_secret]:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse({"access_token": ACCESS, "expires_in": 3599})

    def _item(self, item_id: str) -> dict:
        if item_id not in self.items:
            return {"id": item_id, "deleted": {"state": "deleted"}}
        it = self.items[item_id]
        return {
            "id": item_id,
            "name": it["name"],
            "cTag": it["ctag"],
            "size": len(it["body"]),
            "file": {"mimeType": "text/markdown"},
            "parentReference": {"path": f"/drive/root:/{it['folder']}".rstrip("/")},
            "webUrl": f"https://contoso.sharepoint.com/sites/hr/{it['folder']}/{it['name']}",
        }

    async def delta(self, request: Request) -> Response:
        self._record(request)
        if request.headers.get("authorization") != f"Bearer {ACCESS}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if self.storm > 0:
            self.storm -= 1
            return JSONResponse({"error": "throttled"}, 429, headers={"Retry-After": "0"})
        q = request.query_params
        base = str(request.url).split("?")[0]
        if "token" in q:
            if self.expired:
                return JSONResponse({"error": "resyncRequired"}, status_code=410)
            since = int(q["token"])
            sharing = "deltashowsharingchanges" in (request.headers.get("prefer") or "")
            ids = list(
                dict.fromkeys(
                    e
                    for n, e in enumerate(self.events)
                    if n >= since and (sharing or n not in self.sharing_events)
                )
            )
        else:
            ids = sorted(self.items)
            folders = [{"id": "root", "root": {}, "folder": {}}]
        page = int(q.get("page", 0))
        chunk = ids[page * 2 : page * 2 + 2]
        value = [self._item(i) for i in chunk] + (folders if "token" not in q and page == 0 else [])
        out: dict = {"value": value}
        if (page + 1) * 2 < len(ids):
            extra = f"&token={q['token']}" if "token" in q else ""
            out["@odata.nextLink"] = f"{base}?page={page + 1}{extra}"
        else:
            out["@odata.deltaLink"] = f"{base}?token={len(self.events)}"
        return JSONResponse(out)

    async def content(self, request: Request) -> Response:
        self._record(request)
        if request.headers.get("authorization") != f"Bearer {ACCESS}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        item = request.path_params["item"]
        if item not in self.items:
            return JSONResponse({"error": "itemNotFound"}, status_code=404)
        # Graph redirects to a pre-authenticated URL on another host.
        return RedirectResponse(f"http://localhost:{self.port}/download/{item}", 302)

    async def download(self, request: Request) -> Response:
        self._record(request)
        item = request.path_params["item"]
        if item not in self.items:
            return Response("gone", status_code=404)
        return Response(self.items[item]["body"], media_type="application/octet-stream")

    def __enter__(self) -> FakeGraph:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
