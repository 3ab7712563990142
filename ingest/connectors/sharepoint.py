"""SharePoint document libraries and OneDrives through Microsoft Graph delta queries.

The first sync walks ``/drives/{drive}/root/delta`` page by page (``@odata.nextLink``)
and keeps the ``@odata.deltaLink`` it ends with; every later sync asks that link for
what changed since: new and edited files (fetched from ``/items/{id}/content``), and
deleted ones (a ``deleted`` facet: they leave the index). Files the delta does not
mention are unchanged and not fetched. A 410 (the delta token expired) starts a full
walk again, after which anything not seen is deleted.

Authentication is the OAuth client-credentials flow of an Entra ID app registration
(``username`` = client id, the secret = client secret, ``tenant``); the app needs the
``Sites.Read.All`` (or ``Files.Read.All``) application permission. httpx, as for the web
connector: Graph is plain REST, and Microsoft's SDK would bring a large async stack for
three calls. The access token is sent only to the Graph host; the download of a file's
content is redirected to a pre-authenticated URL, and httpx drops the Authorization
header on a redirect to another host.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import httpx

from ingest.connectors.base import (
    GONE_STATUSES,
    Doc,
    Sink,
    SourceError,
    TooLarge,
    collection_for,
    named_groups,
    resolve_secret,
    size_reason,
    wanted,
)
from ingest.connectors.http import ApiConnector, Http, http_error_reason

log = logging.getLogger(__name__)

GRAPH = "https://graph.microsoft.com/v1.0"
LOGIN = "https://login.microsoftonline.com"
MAX_DELTA_PAGES = 5000


class SharePointConnector(ApiConnector):
    """Mirror the files of one drive (``cfg.drive``), incremental by delta link."""

    default_url = GRAPH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token = ""
        self.asker = False
        self.acls: dict[str, list[list[str]]] = {}  # viewers reported this sync

    def _login(self) -> None:
        assert self.http is not None
        secret = resolve_secret(self.cfg, self.name)
        if secret is None:
            raise SourceError(
                f"source {self.name}: no client secret", fix="set secret_env or secret_file"
            )
        url = self.cfg.token_url or f"{LOGIN}/{self.cfg.tenant}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": str(self.cfg.username),
            "client_secret": secret.get_secret_value(),
            "scope": "https://graph.microsoft.com/.default",
        }
        self.token = self._oauth_token(
            url,
            form,
            vendor="Graph",
            network_fix="check tenant, token_url and the network",
            refused="check the client id, the client secret and the tenant",
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if getattr(self, "asker", False):
            # Items whose sharing changed come back in the delta too (content unchanged).
            headers["Prefer"] = "deltashowsharingchanges, hierarchicalsharing"
        return headers

    def _page(self, url: str) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        if not url.startswith(self.api + "/"):
            raise SourceError(
                f"source {self.name}: Graph sent a link to another host; stopped",
                fix="check sources.*.url",
            )
        try:
            resp = self.http.get(url, self._headers())
        except (httpx.HTTPError, TooLarge) as exc:
            raise SourceError(
                f"source {self.name}: cannot read the drive's changes: {http_error_reason(exc)}",
                fix="check the network; the next sync tries again",
            ) from None
        if resp.status != 200:
            return resp.status, {}
        try:
            return 200, json.loads(resp.content)
        except ValueError:
            raise SourceError(
                f"source {self.name}: Graph sent something that is not JSON",
                fix="check sources.*.url (the Graph base URL)",
            ) from None

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        self.http = Http(self.cfg, self.user_agent, sleep=self.sleep)
        self.asker = self.cfg.permission_mode == "asker"
        self.acls: dict[str, list[list[str]]] = {}
        try:
            self._login()
            out = self._delta(sink, cursor)
            if self.asker:
                self._groups(sink)
            return out
        finally:
            self.http.close()

    # -- permissions (answer as the asker)
    def _get_json(self, url: str) -> dict[str, Any] | None:
        assert self.http is not None
        try:
            resp = self.http.get(url, self._headers())
            data = json.loads(resp.content) if resp.status == 200 else None
        except (httpx.HTTPError, TooLarge, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _viewers(self, sink: Sink, item_id: str) -> None:
        """The item's permissions (``/items/{id}/permissions``) as one ACL clause: users
        by e-mail, groups by id (their members are read by :meth:`_groups`), anonymous
        links as anyone. Organisation-wide links name no one we can match: they grant
        nothing here (closed). A failed read gives no viewers."""
        from ingest.permissions import ANYONE, group, user

        drive = urllib.parse.quote(str(self.cfg.drive))
        url: str | None = (
            f"{self.api}/drives/{drive}/items/{urllib.parse.quote(item_id)}/permissions"
        )
        clause: set[str] = set()
        for _ in range(100):
            if url is None:
                break
            data = self._get_json(url) if url.startswith(self.api + "/") else None
            if data is None:
                sink.failed(f"{item_id} (permissions)", "not readable: the file answers nobody")
                self.acls[item_id] = []
                sink.viewers(item_id, [])
                return
            for perm in data.get("value") or []:
                if "read" not in (perm.get("roles") or []) and not {"write", "owner"} & set(
                    perm.get("roles") or []
                ):
                    continue
                grants = [perm.get("grantedToV2") or {}] + list(
                    perm.get("grantedToIdentitiesV2") or []
                )
                for g in grants:
                    who = g.get("user") or {}
                    if who.get("email"):
                        clause.add(user(str(who["email"])))
                    team = g.get("group") or {}
                    if team.get("id"):
                        clause.add(group(str(team["id"])))
                if (perm.get("link") or {}).get("scope") == "anonymous":
                    clause.add(ANYONE)
            url = data.get("@odata.nextLink")
        self.acls[item_id] = [sorted(clause)]
        sink.viewers(item_id, self.acls[item_id])

    def _groups(self, sink: Sink) -> None:
        """Every named group's members (``/groups/{id}/transitiveMembers``: nested groups
        already expanded by Graph), by mail or user principal name."""
        names = named_groups(sink, self.acls)
        members: dict[str, list[str]] = {}
        for gid in sorted(names):
            out: list[str] = []
            url: str | None = (
                f"{self.api}/groups/{urllib.parse.quote(gid)}/transitiveMembers"
                "?$select=mail,userPrincipalName"
            )
            for _ in range(1000):
                if url is None:
                    break
                data = self._get_json(url) if url.startswith(self.api + "/") else None
                if data is None:
                    sink.failed(f"group:{gid}", "its members could not be read: counted as none")
                    out = []
                    break
                for m in data.get("value") or []:
                    mail = m.get("mail") or m.get("userPrincipalName")
                    if isinstance(mail, str) and "@" in mail:
                        out.append(mail.lower())
                url = data.get("@odata.nextLink")
            members[gid] = out
        sink.members(members)

    def _delta(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        start = f"{self.api}/drives/{urllib.parse.quote(str(self.cfg.drive))}/root/delta"
        url: str | None = cursor.get("delta_link") or start
        incremental = url != start
        reported: set[str] = set()
        delta_link = None
        for _ in range(MAX_DELTA_PAGES):
            if url is None:
                break
            status, data = self._page(url)
            if status == 410 and incremental:
                log.info("source %s: delta token expired; walking the whole drive", self.name)
                url, incremental, reported = start, False, set()
                continue
            if status != 200:
                hint = "check the app's permissions" if status in (401, 403) else "try later"
                raise SourceError(
                    f"source {self.name}: Graph answered HTTP {status} to the delta query",
                    fix=hint,
                )
            for item in data.get("value") or []:
                self._item(sink, item, reported)
            url = data.get("@odata.nextLink")
            delta_link = data.get("@odata.deltaLink") or delta_link
        if incremental:
            for doc_id in sink.known_ids():  # not mentioned by the delta: as it was
                if doc_id not in reported:
                    sink.unchanged(doc_id)
        return {"delta_link": delta_link} if delta_link else {}

    def _item(self, sink: Sink, item: dict[str, Any], reported: set[str]) -> None:
        item_id = str(item.get("id") or "")
        if not item_id:
            return
        if "deleted" in item:
            reported.add(item_id)
            if sink.known(item_id):
                sink.failed(item_id, "deleted in SharePoint", gone=True)
            return
        if "file" not in item or sink.full():
            return  # folders, the root, notebooks
        parent = str((item.get("parentReference") or {}).get("path") or "")
        folder = parent.split(":", 1)[1].lstrip("/") if ":" in parent else ""
        path = f"{folder}/{item.get('name', item_id)}".lstrip("/")
        reported.add(item_id)
        if not wanted(self.cfg, path):
            if sink.known(item_id):
                sink.failed(item_id, "excluded by the source's globs", gone=True)
            return
        if self.asker:
            self._viewers(sink, item_id)
        version = str(item.get("cTag") or item.get("eTag") or "")
        coll = collection_for(self.cfg, path)
        old = sink.known(item_id)
        if old and old["version"] == version and old["collection"] == coll:
            sink.unchanged(item_id)
            return
        size = int(item.get("size") or 0)
        if size > self.cfg.max_document_mb * 2**20:
            sink.failed(item_id, size_reason(size, self.cfg.max_document_mb))
            return
        assert self.http is not None
        drive = urllib.parse.quote(str(self.cfg.drive))
        url = f"{self.api}/drives/{drive}/items/{urllib.parse.quote(item_id)}/content"
        try:
            resp = self.http.get(url, {"Authorization": f"Bearer {self.token}"})
        except (httpx.HTTPError, TooLarge) as exc:
            sink.failed(item_id, http_error_reason(exc))
            return
        if resp.status in GONE_STATUSES:
            sink.failed(item_id, f"HTTP {resp.status}: no longer readable", gone=True)
            return
        if resp.status != 200:
            sink.failed(item_id, f"HTTP {resp.status}")
            return
        link = item.get("webUrl")
        link = link if isinstance(link, str) and link.startswith("https://") else None
        sink.put(Doc(item_id, version, path, coll, url=link), resp.content)
