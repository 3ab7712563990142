"""A local server speaking the subset of the Google Drive v3 API (and Google's OAuth token
endpoint) the Drive connector uses: a service-account JWT checked against the key's
public half, paged files.list, changes.list with removed files, exports of Google Docs
and Sheets, downloads, 429 storms; for answer-as-the-asker a file's paged
permissions.list and the Admin SDK's group members.list (a token for a delegated admin
only). Every request is recorded."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lorebot.cli.stack import free_port

ACCESS = "ya29.fake-drive-access"
DIRECTORY = "ya29.fake-directory-access"


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeDrive:
    def __init__(self, public_key) -> None:
        self.public_key = public_key
        self.files: dict[str, dict] = {}
        self.events: list[tuple[str, bool]] = []  # (file id, removed for this account)
        self.storm = 0
        self.groups: dict[str, list[dict]] = {}  # group e-mail -> members {email, type}
        self.directory_subjects: list[str] = []  # whom the directory tokens act as
        self.calls: list[str] = []
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.token_url = self.api + "/token"
        app = Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/drive/v3/changes/startPageToken", self.start_token),
                Route("/drive/v3/changes", self.changes),
                Route("/drive/v3/files", self.listing),
                Route("/drive/v3/files/{fid}/export", self.export),
                Route("/drive/v3/files/{fid}/permissions", self.permissions),
                Route("/admin/directory/v1/groups/{gkey}/members", self.members),
                Route("/drive/v3/files/{fid}", self.media),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def put(self, fid: str, name: str, mime: str, body: str, perms: list | None = None) -> None:
        old = self.files.get(fid)
        version = (old["version"] + 1) if old else 1
        if perms is None:
            perms = old["perms"] if old else [{"type": "domain", "domain": "example.com"}]
        self.files[fid] = dict(
            name=name, mime=mime, body=body.encode(), version=version, perms=perms
        )
        self.events.append((fid, False))

    def share(self, fid: str, perms: list) -> None:
        """New permissions: Drive bumps the version and the changes feed reports the file."""
        self.files[fid]["perms"] = perms
        self.files[fid]["version"] += 1
        self.events.append((fid, False))

    def unshare(self, fid: str) -> None:
        del self.files[fid]
        self.events.append((fid, True))

    def _meta(self, fid: str) -> dict:
        f = self.files[fid]
        out = {
            "id": fid,
            "name": f["name"],
            "mimeType": f["mime"],
            "version": str(f["version"]),
            "trashed": False,
            "webViewLink": f"https://drive.google.com/file/d/{fid}/view",
        }
        if not f["mime"].startswith("application/vnd.google-apps."):
            out["size"] = str(len(f["body"]))
        return out

    def _gate(self, request: Request) -> Response | None:
        self.calls.append(request.url.path + "?" + request.url.query)
        if request.headers.get("authorization") != f"Bearer {ACCESS}":
            return JSONResponse({"error": "unauthenticated"}, status_code=401)
        if self.storm > 0:
            self.storm -= 1
            return JSONResponse({"error": "rateLimitExceeded"}, 429, headers={"Retry-After": "0"})
        return None

    async def token(self, request: Request) -> Response:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self.calls.append("/token")
        form = urllib.parse.parse_qs((await request.body()).decode())
        try:
            head, claims, sig = form["assertion"][0].split(".")
            self.public_key.verify(
                _unb64(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            body = json.loads(_unb64(claims))
        except (KeyError, ValueError, InvalidSignature):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if body["aud"] != self.token_url:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if "admin.directory.group.member.readonly" in body["scope"] and body.get("sub"):
            self.directory_subjects.append(body["sub"])
            return JSONResponse({"access_token": DIRECTORY, "expires_in": 3599})
        if "drive.readonly" not in body["scope"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": ACCESS, "expires_in": 3599})

    async def permissions(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        f = self.files.get(request.path_params["fid"])
        if f is None:
            return JSONResponse({"error": "notFound"}, status_code=404)
        perms = [{"kind": "drive#permission", "role": "reader", **p} for p in f["perms"]]
        start = int(request.query_params.get("pageToken", 0))
        out: dict = {"permissions": perms[start : start + 2]}
        if start + 2 < len(perms):
            out["nextPageToken"] = str(start + 2)
        return JSONResponse(out)

    async def members(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        if request.headers.get("authorization") != f"Bearer {DIRECTORY}":
            return JSONResponse({"error": "forbidden"}, status_code=403)
        found = self.groups.get(request.path_params["gkey"])
        if found is None:
            return JSONResponse({"error": "notFound"}, status_code=404)
        return JSONResponse({"members": found})

    async def start_token(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        return JSONResponse({"startPageToken": str(len(self.events))})

    async def listing(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        ids = sorted(self.files)
        start = int(request.query_params.get("pageToken", 0))
        out: dict = {"files": [self._meta(i) for i in ids[start : start + 2]]}
        if start + 2 < len(ids):
            out["nextPageToken"] = str(start + 2)
        return JSONResponse(out)

    async def changes(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        since = int(request.query_params["pageToken"])
        latest: dict[str, bool] = {}
        for fid, removed in self.events[since:]:
            latest[fid] = removed
        changes = []
        for fid, removed in latest.items():
            ch = {"fileId": fid, "removed": removed}
            if not removed:
                ch["file"] = self._meta(fid)
            changes.append(ch)
        return JSONResponse({"changes": changes, "newStartPageToken": str(len(self.events))})

    async def export(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        f = self.files.get(request.path_params["fid"])
        if f is None:
            return JSONResponse({"error": "notFound"}, status_code=404)
        return Response(f["body"], media_type=request.query_params["mimeType"])

    async def media(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        f = self.files.get(request.path_params["fid"])
        if f is None or request.query_params.get("alt") != "media":
            return JSONResponse({"error": "notFound"}, status_code=404)
        return Response(f["body"], media_type=f["mime"])

    def __enter__(self) -> FakeDrive:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
