"""Confluence (Cloud and Data Center) through its REST API: the current pages of chosen
spaces, incremental by page version, each space mapped to a collection.

Every sync lists each space's pages (``GET /rest/api/content``, 50 a page, following
``_links.next``) with their version numbers and read restrictions; only pages whose
version changed are fetched with their body (``GET /rest/api/content/{id}``). The
space's attachments come from one paged CQL search (``type = attachment``), with their
versions; only new versions are downloaded, and only those of pages that may be read. Listing
rather than a CQL ``lastmodified`` query, because a query for changes never reports a
deleted page, and the listing is metadata only.

Permissions, ``permissions = "asker"`` (the default): every page is indexed with its
viewers: the space's (``/rest/api/space/{key}?expand=permissions``), then its own read
restriction and each ancestor's (a child inherits them); attachments take their page's.
Members of the named groups come from ``/rest/api/group/{name}/member``; a question only
finds the pages its asker may view (ingest.permissions). ``permissions =
"collections"``: a space's pages go to the collection mapped to it (``collections``:
space key -> collection; unmapped spaces to ``collection``), so the channel mapping
decides who may read them; a page with read restrictions (its own or an ancestor's) is
narrower than its space and is never indexed. Either way a page that is deleted or
archived (or, in collections mode, gains restrictions) leaves the index on the next sync.

Cloud authenticates with e-mail + API token (``username`` + secret, basic auth), Data
Center with a personal access token (secret alone, bearer).
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
    named_groups,
    resolve_secret,
    safe_relpath,
    size_reason,
    wanted,
)
from ingest.connectors.http import ApiConnector, Http, http_error_reason

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_LIST_PAGES = 2000  # 100k pages per space at most
LIST_EXPAND = (
    "version,ancestors,restrictions.read.restrictions.user,restrictions.read.restrictions.group"
)


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._header
        yield request


def restriction_clause(page: dict[str, Any]) -> list[str] | None:
    """The page's own read restriction as one ACL clause (users by e-mail, groups by
    name), or None when it has none. A restricted user whose e-mail the API does not show
    cannot be matched: they simply do not count (closed)."""
    if not restricted(page):
        return None
    from ingest.permissions import group, user

    read = ((page.get("restrictions") or {}).get("read") or {}).get("restrictions") or {}
    clause = {user(str(u["email"])) for u in (read.get("user") or {}).get("results") or []
              if isinstance(u, dict) and u.get("email")}  # fmt: skip
    clause |= {group(str(g["name"])) for g in (read.get("group") or {}).get("results") or []
               if isinstance(g, dict) and g.get("name")}  # fmt: skip
    return sorted(clause)


def restricted(page: dict[str, Any]) -> bool:
    """Whether a page has read restrictions (users or groups) of its own."""
    read = ((page.get("restrictions") or {}).get("read") or {}).get("restrictions") or {}
    for key in ("user", "group"):
        block = read.get(key) or {}
        if block.get("results") or block.get("size"):
            return True
    return False


class ConfluenceConnector(ApiConnector):
    """Mirror the current pages of ``cfg.spaces`` from the site at ``cfg.url``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readable: dict[str, str] = {}
        self.asker = False
        self.acls: dict[str, list[list[str]]] = {}  # viewers reported this sync
        self.page_clauses: dict[str, list[str] | None] = {}  # page id -> its restriction
        self.page_acl_by_id: dict[str, list[list[str]]] = {}

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        if not self.cfg.spaces:
            raise SourceError(
                f"source {self.name}: no Confluence spaces named", fix="set the source's spaces"
            )
        secret = resolve_secret(self.cfg, self.name)
        auth: httpx.Auth | None = None
        if secret is not None:
            token = secret.get_secret_value()
            auth = (
                httpx.BasicAuth(self.cfg.username, token) if self.cfg.username else _Bearer(token)
            )
        self.http = Http(self.cfg, self.user_agent, auth=auth, sleep=self.sleep)
        self.asker = self.cfg.permission_mode == "asker"
        self.acls: dict[str, list[list[str]]] = {}
        try:
            for space in self.cfg.spaces:
                self._space(sink, space)
            if self.asker:
                self._groups(sink)
        finally:
            self.http.close()
        return {}

    # -- permissions (answer as the asker)
    def _space_viewers(self, space: str) -> list[str]:
        """Who may view the space (``GET /rest/api/space/{key}?expand=permissions``: the
        subjects of its ``read``/``space`` permission), as one ACL clause."""
        from ingest.permissions import ANYONE, group, user

        data = self._json(
            f"{self.api}/rest/api/space/{urllib.parse.quote(space)}?expand=permissions"
        )
        clause: set[str] = set()
        for perm in data.get("permissions") or []:
            op = perm.get("operation") or {}
            if (op.get("operation"), op.get("targetType")) != ("read", "space"):
                continue
            if perm.get("anonymousAccess"):
                clause.add(ANYONE)
            subjects = perm.get("subjects") or {}
            for u in (subjects.get("user") or {}).get("results") or []:
                if isinstance(u, dict) and u.get("email"):
                    clause.add(user(str(u["email"])))
            for g in (subjects.get("group") or {}).get("results") or []:
                if isinstance(g, dict) and g.get("name"):
                    clause.add(group(str(g["name"])))
        return sorted(clause)

    def _page_acl(self, page: dict[str, Any], space_clause: list[str]) -> list[list[str]]:
        """The space's viewers, then the page's restriction and each ancestor's (Confluence
        applies a parent's view restriction to its children). An ancestor not in the
        listing cannot be checked: the page answers nobody."""
        acl = [space_clause]
        own = restriction_clause(page)
        if own is not None:
            acl.append(own)
        for anc in page.get("ancestors") or []:
            aid = str((anc or {}).get("id", ""))
            if aid not in self.page_clauses:
                return [[]]
            if self.page_clauses[aid] is not None:
                acl.append(self.page_clauses[aid])
        return acl

    def _groups(self, sink: Sink) -> None:
        """Members of every group the viewers name (``GET /rest/api/group/{name}/member``,
        paged), by e-mail."""
        names = named_groups(sink, self.acls)
        members: dict[str, list[str]] = {}
        for name in sorted(names):
            out: list[str] = []
            url: str | None = (
                f"{self.api}/rest/api/group/{urllib.parse.quote(name)}/member?limit={PAGE_SIZE}"
            )
            try:
                for _ in range(MAX_LIST_PAGES):
                    if url is None:
                        break
                    data = self._json(url)
                    out += [
                        str(u["email"]).lower()
                        for u in data.get("results") or []
                        if isinstance(u, dict) and u.get("email")
                    ]
                    url = self._next(data)
            except SourceError as exc:
                sink.failed(f"group:{name}", f"members not readable ({exc.message}): none")
                out = []
            members[name] = out
        sink.members(members)

    def _json(self, url: str) -> dict[str, Any]:
        """A listing call: anything but 200 stops the sync (nothing is deleted)."""
        assert self.http is not None
        try:
            resp = self.http.get(url, {"Accept": "application/json"})
        except (httpx.HTTPError, TooLarge) as exc:
            raise SourceError(
                f"source {self.name}: cannot list Confluence: {http_error_reason(exc)}",
                fix="check the site URL and the network",
            ) from None
        if resp.status != 200:
            hint = "check the credentials" if resp.status in (401, 403) else "try again later"
            raise SourceError(
                f"source {self.name}: Confluence answered HTTP {resp.status} to a listing",
                fix=hint,
            )
        try:
            return json.loads(resp.content)
        except ValueError:
            raise SourceError(
                f"source {self.name}: Confluence sent something that is not JSON",
                fix="check that the URL is the site's base URL",
            ) from None

    def _space(self, sink: Sink, space: str) -> None:
        collection = self.cfg.collections.get(space, self.cfg.collection)
        self.readable: dict[str, str] = {}  # page id -> its mirror folder (unrestricted)
        query = urllib.parse.urlencode(
            {
                "spaceKey": space,
                "type": "page",
                "status": "current",
                "limit": PAGE_SIZE,
                "expand": LIST_EXPAND,
            }
        )
        url: str | None = f"{self.api}/rest/api/content?{query}"
        pages: list[dict[str, Any]] = []
        for _ in range(MAX_LIST_PAGES):
            if url is None:
                break
            data = self._json(url)
            pages += [p for p in data.get("results") or [] if isinstance(p, dict)]
            url = self._next(data)
        # Every page's restriction first: a child inherits its ancestors'.
        self.page_clauses = {str(p.get("id", "")): restriction_clause(p) for p in pages}
        space_clause = self._space_viewers(space) if self.asker else []
        for page in pages:
            if sink.full():
                break
            self._page(sink, space, collection, page, space_clause)
        self._attachments(sink, space, collection)

    def _next(self, data: dict[str, Any]) -> str | None:
        nxt = (data.get("_links") or {}).get("next")
        url = urllib.parse.urljoin(self.api + "/", nxt.lstrip("/")) if nxt else None
        if url and not url.startswith(self.api + "/"):
            return None  # never follow a link to another host
        return url

    def _attachments(self, sink: Sink, space: str, collection: str) -> None:
        """The space's attachments (one paged CQL search), those of readable pages only."""
        cql = f'space = "{space}" and type = attachment'
        query = urllib.parse.urlencode(
            {"cql": cql, "limit": PAGE_SIZE, "expand": "version,container"}
        )
        url: str | None = f"{self.api}/rest/api/content/search?{query}"
        limit = int(self.cfg.max_document_mb * 2**20)
        for _ in range(MAX_LIST_PAGES):
            if url is None or sink.full():
                break
            data = self._json(url)
            for att in data.get("results") or []:
                if sink.full():
                    break
                page_id = str((att.get("container") or {}).get("id", ""))
                att_id = str(att.get("id", ""))
                doc_id = f"{space}:{page_id}:{att_id}"
                folder = self.readable.get(page_id)
                if folder is None:  # its page is restricted (or not a current page)
                    if sink.known(doc_id):
                        sink.failed(doc_id, "restricted: its page has read restrictions", gone=True)
                    continue
                name = str(att.get("title") or att_id)
                path = f"{folder}/{name}"
                if not wanted(self.cfg, path):
                    continue
                if self.asker:
                    self.acls[doc_id] = self.page_acl_by_id.get(page_id) or [[]]
                    sink.viewers(doc_id, self.acls[doc_id])
                version = str((att.get("version") or {}).get("number", ""))
                old = sink.known(doc_id)
                if old and old["version"] == version and old["collection"] == collection:
                    sink.unchanged(doc_id)
                    continue
                size = int((att.get("extensions") or {}).get("fileSize") or 0)
                if size > limit:
                    sink.failed(doc_id, size_reason(size, self.cfg.max_document_mb))
                    continue
                self._download(sink, att, Doc(doc_id, version, path, collection))
            url = self._next(data)

    def _download(self, sink: Sink, att: dict[str, Any], doc: Doc) -> None:
        link = str((att.get("_links") or {}).get("download") or "")
        url = urllib.parse.urljoin(self.api + "/", link.lstrip("/"))
        if not link or not url.startswith(self.api + "/"):
            sink.failed(doc.id, "no download link on the site's host")
            return
        assert self.http is not None
        try:
            resp = self.http.get(url)
        except (httpx.HTTPError, TooLarge) as exc:
            sink.failed(doc.id, http_error_reason(exc))
            return
        if resp.status in GONE_STATUSES:
            sink.failed(doc.id, f"HTTP {resp.status}: no longer readable", gone=True)
        elif resp.status != 200:
            sink.failed(doc.id, f"HTTP {resp.status}")
        else:
            sink.put(doc, resp.content)

    def _page(
        self,
        sink: Sink,
        space: str,
        collection: str,
        page: dict[str, Any],
        space_clause: list[str],
    ) -> None:
        page_id = str(page.get("id", ""))
        if not page_id.isdigit():
            return
        doc_id = f"{space}:{page_id}"
        title = str(page.get("title") or page_id)
        inherited = any(
            self.page_clauses.get(str((a or {}).get("id", ""))) is not None
            for a in page.get("ancestors") or []
        )
        if not self.asker and (restricted(page) or inherited):
            # Narrower than its space: the space's collection must not show it.
            if sink.known(doc_id):
                sink.failed(doc_id, "restricted: the page has read restrictions", gone=True)
            return
        folder = safe_relpath(f"{space}/{title[:80]}-{page_id}")
        self.readable[page_id] = folder
        path = folder + ".html"
        if not wanted(self.cfg, path):
            return
        if self.asker:
            self.acls[doc_id] = self._page_acl(page, space_clause)
            self.page_acl_by_id[page_id] = self.acls[doc_id]
            sink.viewers(doc_id, self.acls[doc_id])
        version = str((page.get("version") or {}).get("number", ""))
        old = sink.known(doc_id)
        if old and old["version"] == version and old["collection"] == collection:
            sink.unchanged(doc_id)
            return
        assert self.http is not None
        url = f"{self.api}/rest/api/content/{page_id}?expand=body.storage,version"
        try:
            resp = self.http.get(url, {"Accept": "application/json"})
        except (httpx.HTTPError, TooLarge) as exc:
            sink.failed(doc_id, http_error_reason(exc))
            return
        if resp.status in GONE_STATUSES:
            sink.failed(doc_id, f"HTTP {resp.status}: no longer readable", gone=True)
            return
        if resp.status != 200:
            sink.failed(doc_id, f"HTTP {resp.status}")
            return
        try:
            full = json.loads(resp.content)
            body = full["body"]["storage"]["value"]
        except (ValueError, KeyError, TypeError):
            sink.failed(doc_id, "corrupt: the page's body is missing from the API answer")
            return
        webui = ((full.get("_links") or {}).get("webui")) or ""
        link = (self.api + webui) if webui.startswith("/") else None
        html = (
            "---\n"
            + (f"url: {json.dumps(link)}\n" if link else "")
            + f"title: {json.dumps(title)}\n---\n"
            + f"<html><head><title>{_escape(title)}</title></head><body>{body}</body></html>"
        )
        version = str((full.get("version") or {}).get("number", version))
        sink.put(Doc(doc_id, version, path, collection, url=link), html.encode("utf-8"))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
