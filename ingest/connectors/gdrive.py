"""Google Drive (a shared drive, or every file shared with a service account) through the
Drive v3 REST API, incremental by its changes feed.

The first sync takes a start page token (``changes/startPageToken``), then lists every
file (``files.list``, 100 a page); later syncs read ``changes.list`` from the saved
token: changed files are fetched, removed ones (deleted, trashed, or no longer shared
with the service account: Drive reports all three as ``removed`` or ``trashed``) leave
the index, and files the feed does not mention are unchanged. Google Docs, Sheets and
Slides are exported (HTML, CSV, plain text); other files are downloaded as they are.

Authentication is a service account's JSON key (``secret_file``), signed into a JWT
(RS256, with ``cryptography``, already a dependency) and exchanged for an access token
with the ``drive.readonly`` scope; share the folders or the shared drive with the
service account's e-mail address. httpx rather than google-api-python-client, whose
discovery documents and auth stack are heavy for four REST calls.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from typing import Any

import httpx

from ingest.connectors.base import (
    GONE_STATUSES,
    Doc,
    Sink,
    SourceError,
    TooLarge,
    named_groups,
    resolve_secret,
    size_reason,
    wanted,
)
from ingest.connectors.http import ApiConnector, Http, http_error_reason

log = logging.getLogger(__name__)

API = "https://www.googleapis.com"
TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/drive.readonly"
FILE_FIELDS = "id,name,mimeType,version,size,md5Checksum,trashed,webViewLink"
#: Google's own formats and what they are exported as (mime type, mirror suffix).
EXPORTS = {
    "application/vnd.google-apps.document": ("text/html", ".html"),
    "application/vnd.google-apps.spreadsheet": ("text/csv", ".csv"),
    "application/vnd.google-apps.presentation": ("text/plain", ".txt"),
}
MAX_PAGES = 5000
#: Reading group members (Admin SDK Directory API), through domain-wide delegation.
GROUPS_SCOPE = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
PERMISSION_FIELDS = "nextPageToken,permissions(type,emailAddress,domain,role)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def service_account_jwt(
    key: dict[str, Any],
    audience: str,
    now: float | None = None,
    *,
    scope: str = SCOPE,
    subject: str | None = None,
) -> str:
    """A signed JWT assertion for the OAuth jwt-bearer grant of a service account key
    (``subject``: the user a domain-wide delegation acts as)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    now = time.time() if now is None else now
    header = {"alg": "RS256", "typ": "JWT"}
    if key.get("private_key_id"):
        header["kid"] = key["private_key_id"]
    claims = {
        "iss": key["client_email"],
        "scope": scope,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + 3600,
    }
    if subject:
        claims["sub"] = subject
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    private = serialization.load_pem_private_key(key["private_key"].encode(), password=None)
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    return signing_input + "." + _b64(signature)


class DriveConnector(ApiConnector):
    """Mirror the Drive files a service account may read (or one shared drive's)."""

    default_url = API

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token = ""
        self.token_groups = ""
        self.asker = False
        self.acls: dict[str, list[list[str]]] = {}  # viewers reported this sync

    def _login(self, scope: str = SCOPE, subject: str | None = None) -> str:
        assert self.http is not None
        secret = resolve_secret(self.cfg, self.name)
        try:
            key = json.loads(secret.get_secret_value()) if secret else None
            token_url = self.cfg.token_url or key.get("token_uri") or TOKEN_URL  # type: ignore[union-attr]
            assertion = service_account_jwt(key, token_url, scope=scope, subject=subject)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SourceError(
                f"source {self.name}: the secret is not a service account JSON key",
                fix="point secret_file at the key file downloaded from the Cloud console",
            ) from None
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        return self._oauth_token(
            token_url,
            form,
            vendor="Google",
            network_fix="check token_url and the network",
            refused="check the key, and that the Drive API is enabled for its project",
        )

    def _common(self) -> dict[str, str]:
        q = {"supportsAllDrives": "true"}
        if self.cfg.drive:
            q["driveId"] = str(self.cfg.drive)
        return q

    def _json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        assert self.http is not None
        url = f"{self.api}{path}?{urllib.parse.urlencode(params)}"
        try:
            resp = self.http.get(url, {"Authorization": f"Bearer {self.token}"})
        except (httpx.HTTPError, TooLarge) as exc:
            raise SourceError(
                f"source {self.name}: cannot list Drive: {http_error_reason(exc)}",
                fix="check the network; the next sync tries again",
            ) from None
        if resp.status != 200:
            raise SourceError(
                f"source {self.name}: Drive answered HTTP {resp.status} to {path}",
                fix="check the drive id and that it is shared with the service account",
            )
        try:
            return json.loads(resp.content)
        except ValueError:
            raise SourceError(
                f"source {self.name}: Drive sent something that is not JSON"
            ) from None

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        self.http = Http(self.cfg, self.user_agent, sleep=self.sleep)
        self.asker = self.cfg.permission_mode == "asker"
        try:
            self.token = self._login()
            if cursor.get("page_token"):
                out = self._changes(sink, cursor["page_token"])
            else:
                out = self._walk(sink)
            if self.asker:
                self._groups(sink)
            return out
        finally:
            self.http.close()

    # -- permissions (answer as the asker)
    def _viewers(self, sink: Sink, file_id: str) -> None:
        """The file's permissions (``permissions.list``, paged) as one ACL clause: users
        and groups by e-mail, a domain, or anyone; any role may read. A failed read gives
        no viewers (the file answers nobody until a sync reads them)."""
        from ingest.permissions import ANYONE, domain, group, user

        clause: set[str] = set()
        page: str | None = None
        for _ in range(100):
            params = {"supportsAllDrives": "true", "pageSize": "100", "fields": PERMISSION_FIELDS}
            if page:
                params["pageToken"] = page
            url = f"{self.api}/drive/v3/files/{file_id}/permissions?" + urllib.parse.urlencode(
                params
            )
            assert self.http is not None
            try:
                resp = self.http.get(url, {"Authorization": f"Bearer {self.token}"})
                data = json.loads(resp.content) if resp.status == 200 else None
            except (httpx.HTTPError, TooLarge, ValueError):
                data = None
            if not isinstance(data, dict):
                sink.failed(f"{file_id} (permissions)", "not readable: the file answers nobody")
                self.acls[file_id] = []
                sink.viewers(file_id, [])
                return
            for p in data.get("permissions") or []:
                kind, email = p.get("type"), str(p.get("emailAddress") or "")
                if kind == "user" and email:
                    clause.add(user(email))
                elif kind == "group" and email:
                    clause.add(group(email))
                elif kind == "domain" and p.get("domain"):
                    clause.add(domain(str(p["domain"])))
                elif kind == "anyone":
                    clause.add(ANYONE)
            page = data.get("nextPageToken")
            if not page:
                break
        self.acls[file_id] = [sorted(clause)]
        sink.viewers(file_id, self.acls[file_id])

    def _groups(self, sink: Sink) -> None:
        """Members of every group the files' viewers name (Admin SDK ``members.list``, as
        the admin ``username`` through domain-wide delegation), nested groups followed."""
        wanted_groups = named_groups(sink, self.acls)
        members: dict[str, list[str]] = {}
        if not wanted_groups:
            sink.members(members)
            return
        if not self.cfg.username:
            log.warning("source %s: no admin `username` to read group members as", self.name)
            sink.members({g: [] for g in wanted_groups})
            return
        self.token_groups = self._login(GROUPS_SCOPE, subject=self.cfg.username)
        todo, seen = sorted(wanted_groups), set()
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            members[key] = self._members(sink, key)
            todo += [m[6:] for m in members[key] if m.startswith("group:") and m[6:] not in seen]
        sink.members(members)

    def _members(self, sink: Sink, key: str) -> list[str]:
        out: list[str] = []
        page: str | None = None
        for _ in range(1000):
            params = {"maxResults": "200"} | ({"pageToken": page} if page else {})
            url = (
                f"{self.api}/admin/directory/v1/groups/{urllib.parse.quote(key)}/members?"
                + urllib.parse.urlencode(params)
            )
            assert self.http is not None
            try:
                resp = self.http.get(url, {"Authorization": f"Bearer {self.token_groups}"})
                data = json.loads(resp.content) if resp.status == 200 else None
            except (httpx.HTTPError, TooLarge, ValueError):
                data = None
            if not isinstance(data, dict):
                sink.failed(f"group:{key}", "its members could not be read: counted as none")
                return []
            for m in data.get("members") or []:
                email = str(m.get("email") or "").lower()
                if email:
                    out.append(("group:" + email) if m.get("type") == "GROUP" else email)
            page = data.get("nextPageToken")
            if not page:
                break
        return out

    def _walk(self, sink: Sink) -> dict[str, Any]:
        start = self._json("/drive/v3/changes/startPageToken", self._common())
        params = self._common() | {
            "q": "trashed = false",
            "pageSize": "100",
            "includeItemsFromAllDrives": "true",
            "fields": f"nextPageToken,files({FILE_FIELDS})",
        }
        if self.cfg.drive:
            params["corpora"] = "drive"
        page_token = None
        for _ in range(MAX_PAGES):
            q = params | ({"pageToken": page_token} if page_token else {})
            data = self._json("/drive/v3/files", q)
            for f in data.get("files") or []:
                self._file(sink, f)
            page_token = data.get("nextPageToken")
            if not page_token or sink.full():
                break
        return {"page_token": start.get("startPageToken")}

    def _changes(self, sink: Sink, token: str) -> dict[str, Any]:
        reported: set[str] = set()
        new_token = token
        page: str | None = token
        for _ in range(MAX_PAGES):
            if page is None:
                break
            params = self._common() | {
                "pageToken": page,
                "pageSize": "100",
                "includeRemoved": "true",
                "includeItemsFromAllDrives": "true",
                "fields": "nextPageToken,newStartPageToken,"
                f"changes(fileId,removed,file({FILE_FIELDS}))",
            }
            data = self._json("/drive/v3/changes", params)
            for ch in data.get("changes") or []:
                file_id = str(ch.get("fileId") or "")
                if not file_id:
                    continue
                reported.add(file_id)
                f = ch.get("file") or {}
                if ch.get("removed") or f.get("trashed"):
                    if sink.known(file_id):
                        sink.failed(file_id, "removed, trashed or unshared in Drive", gone=True)
                    continue
                self._file(sink, f)
            page = data.get("nextPageToken")
            new_token = data.get("newStartPageToken") or new_token
        for doc_id in sink.known_ids():  # not in the feed: as it was
            if doc_id not in reported:
                sink.unchanged(doc_id)
        return {"page_token": new_token}

    def _file(self, sink: Sink, f: dict[str, Any]) -> None:
        file_id = str(f.get("id") or "")
        mime = str(f.get("mimeType") or "")
        if not file_id or mime == "application/vnd.google-apps.folder" or sink.full():
            return
        export = EXPORTS.get(mime)
        if export is None and mime.startswith("application/vnd.google-apps."):
            return  # forms, shortcuts, maps: nothing to read
        name = str(f.get("name") or file_id)
        suffix = export[1] if export else ""
        path = f"{name[:80]}~{file_id[:12]}{suffix}" if export else f"{file_id[:12]}~{name[:80]}"
        if not wanted(self.cfg, name):
            return
        if self.asker:
            self._viewers(sink, file_id)
        version = str(f.get("version") or f.get("md5Checksum") or "")
        old = sink.known(file_id)
        if old and old["version"] == version and old["collection"] == self.cfg.collection:
            sink.unchanged(file_id)
            return
        size = int(f.get("size") or 0)
        if size > self.cfg.max_document_mb * 2**20:
            sink.failed(file_id, size_reason(size, self.cfg.max_document_mb))
            return
        q = {"supportsAllDrives": "true"}
        if export:
            url = f"{self.api}/drive/v3/files/{file_id}/export?" + urllib.parse.urlencode(
                {"mimeType": export[0]}
            )
        else:
            url = f"{self.api}/drive/v3/files/{file_id}?" + urllib.parse.urlencode(
                q | {"alt": "media"}
            )
        assert self.http is not None
        try:
            resp = self.http.get(url, {"Authorization": f"Bearer {self.token}"})
        except (httpx.HTTPError, TooLarge) as exc:
            sink.failed(file_id, http_error_reason(exc))
            return
        if resp.status in GONE_STATUSES:
            sink.failed(file_id, f"HTTP {resp.status}: no longer readable", gone=True)
            return
        if resp.status != 200:
            sink.failed(file_id, f"HTTP {resp.status}")
            return
        link = f.get("webViewLink")
        link = link if isinstance(link, str) and link.startswith("https://") else None
        sink.put(Doc(file_id, version, path, self.cfg.collection, url=link), resp.content)
