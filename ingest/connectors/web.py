"""Web sites: a same-host crawl from a start URL and the site's sitemaps, incremental by
ETag / Last-Modified.

The crawl stays on the start URL's scheme, host and port, under its path prefixes
(default: the start URL's folder), ``max_depth`` links from the start, and obeys
robots.txt (rules and Crawl-delay, for ``sources.user_agent``) and ``<meta
name="robots">`` noindex/nofollow. A page's ``<link rel="canonical">`` on the same host
is its identity (two addresses of one page are one document) and its citation link: the
mirror copy starts with front matter naming it, which becomes the link when the host is
in ``index.link_hosts``. Every page known from the last sync is asked for with
If-None-Match / If-Modified-Since, so an unchanged site answers 304s and nothing is
parsed again; a page that now answers 401/403/404/410 leaves the index.

httpx fetches (ingest.connectors.http), lxml parses links (already installed with
unstructured), urllib.robotparser reads robots.txt.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import urllib.parse
import urllib.robotparser
from collections import deque
from typing import Any

import httpx

from ingest.connectors.base import (
    GONE_STATUSES,
    RETRY_STATUSES,
    Doc,
    Sink,
    SourceError,
    TooLarge,
    collection_for,
    resolve_secret,
    wanted,
)
from ingest.connectors.http import ApiConnector, Http, http_error_reason
from lorebot.settings import SourceConfig

log = logging.getLogger(__name__)

#: Links with these suffixes are never fetched: they are not documents.
SKIP_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", ".bmp", ".tif", ".tiff",
    ".css", ".js", ".mjs", ".map", ".woff", ".woff2", ".ttf", ".eot", ".otf",
    ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".iso", ".dmg", ".exe",
    ".mp3", ".mp4", ".m4a", ".mov", ".avi", ".webm", ".wav", ".ogg", ".json", ".xml", ".rss",
)  # fmt: skip
#: Content types kept, and the suffix their mirror copy gets.
TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/csv": ".csv",
}
MAX_LINKS = 300  # followed (and remembered) per page
MAX_QUEUE = 100_000  # addresses waiting to be visited
MAX_SITEMAPS = 20
MAX_CRAWL_DELAY_S = 10.0


def normalize(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without fragment, default port or empty path; None if not."""
    try:
        joined = urllib.parse.urljoin(base, url.strip()) if base else url.strip()
        parts = urllib.parse.urlsplit(joined)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    host = parts.hostname.lower()
    if port and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def origin(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def mirror_path(url: str, suffix: str) -> str:
    """Where a page's copy goes: its URL path, a name for folders, its type as suffix."""
    p = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(p.path).lstrip("/")
    if not path or path.endswith("/"):
        path += "index"
    if p.query:
        path += "~" + hashlib.sha1(p.query.encode()).hexdigest()[:8]
    if not path.lower().endswith(_suffixes_for(suffix)):
        path += suffix
    return path


def _suffixes_for(suffix: str) -> tuple[str, ...]:
    return (".html", ".htm") if suffix == ".html" else (suffix,)


def with_front_matter(data: bytes, url: str, suffix: str) -> bytes:
    """The page with front matter naming its canonical URL (HTML and Markdown only)."""
    if suffix not in (".html", ".md"):
        return data
    return b"---\nurl: " + json.dumps(url).encode() + b"\n---\n" + data


def parse_html(data: bytes, base: str) -> tuple[list[str], str | None, bool, bool]:
    """(links, canonical, noindex, nofollow) of a page; links absolute and normalized."""
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(data)
    except Exception:  # an empty or unparsable page has no links
        return [], None, False, False
    robots = " ".join(doc.xpath("//meta[translate(@name,'ROBTS','robts')='robots']/@content"))
    robots = robots.lower()
    bases = doc.xpath("//base/@href")
    base = normalize(bases[0], base) or base if bases else base
    canonical = None
    for href in doc.xpath(
        "//link[contains(translate(@rel,'CANONIL','canonil'),'canonical')]/@href"
    ):
        canonical = normalize(href, base)
        break
    links = []
    for href in doc.xpath("//a/@href")[: MAX_LINKS * 2]:
        if href.strip().lower().startswith(("mailto:", "javascript:", "tel:", "#")):
            continue
        url = normalize(href, base)
        if url:
            links.append(url)
    return links[:MAX_LINKS], canonical, "noindex" in robots, "nofollow" in robots


class WebConnector(ApiConnector):
    """Crawl one site and mirror its pages."""

    def __init__(self, name: str, cfg: SourceConfig, **kwargs: Any) -> None:
        super().__init__(name, cfg, **kwargs)
        start = normalize(str(cfg.url))
        if start is None:
            raise SourceError(
                f"source {name}: the url is not an http(s) address without credentials",
                fix="give the site's address; a password goes in secret_env",
            )
        self.start = start
        self.origin = origin(start)
        folder = urllib.parse.urlsplit(start).path.rsplit("/", 1)[0] + "/"
        self.prefixes = [p if p.startswith("/") else "/" + p for p in cfg.path_prefixes] or [folder]
        self.robots: urllib.robotparser.RobotFileParser | None = None
        self.delay = 0.0

    def in_scope(self, url: str) -> bool:
        if origin(url) != self.origin:
            return False
        path = urllib.parse.urlsplit(url).path
        if not any(path.startswith(p) for p in self.prefixes):
            return False
        if path.lower().endswith(SKIP_SUFFIXES):
            return False
        return self.robots is None or self.robots.can_fetch(self.user_agent, url)

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        auth = None
        secret = resolve_secret(self.cfg, self.name)
        if secret is not None:
            auth = httpx.BasicAuth(self.cfg.username or "", secret.get_secret_value())
        self.http = Http(self.cfg, self.user_agent, auth=auth, sleep=self.sleep, same_origin=True)
        try:
            return self._crawl(sink, cursor)
        finally:
            self.http.close()

    def _get(self, url: str, headers: dict[str, str] | None = None):
        if self.delay:
            self.sleep(self.delay)
        assert self.http is not None
        return self.http.get(url, headers)

    def _read_robots(self) -> list[str]:
        try:
            resp = self._get(self.origin + "/robots.txt")
        except (httpx.HTTPError, TooLarge) as exc:
            raise SourceError(
                f"source {self.name}: cannot reach {self.origin}: {http_error_reason(exc)}",
                fix="check the start URL and the network",
            ) from None
        if resp.status == 200:
            rp = urllib.robotparser.RobotFileParser()
            rp.parse(resp.content.decode("utf-8", "replace").splitlines())
            self.robots = rp
            delay = rp.crawl_delay(self.user_agent)
            self.delay = min(float(delay), MAX_CRAWL_DELAY_S) if delay else 0.0
            return list(rp.site_maps() or [])
        if resp.status in RETRY_STATUSES:
            # Robots.txt unavailable: the site may not want crawling now; try later.
            raise SourceError(
                f"source {self.name}: {self.origin}/robots.txt answers HTTP {resp.status}",
                fix="the site is having trouble; the next sync tries again",
            )
        return []  # no robots.txt: everything allowed

    def _sitemap_urls(self, roots: list[str]) -> list[str]:
        """Page URLs listed in the sitemaps (sitemap indexes followed, bounded)."""
        from lxml import etree

        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        todo, seen, pages = deque(roots), set(), []
        while todo and len(seen) < MAX_SITEMAPS:
            url = normalize(todo.popleft())
            if not url or url in seen or origin(url) != self.origin:
                continue
            seen.add(url)
            try:
                resp = self._get(url)
            except (httpx.HTTPError, TooLarge) as exc:
                log.info("source %s: sitemap %s: %s", self.name, url, http_error_reason(exc))
                continue
            if resp.status != 200:
                continue
            data = resp.content
            if data[:2] == b"\x1f\x8b":
                try:
                    data = gzip.GzipFile(fileobj=io.BytesIO(data)).read(
                        self.http.max_bytes if self.http else 50 * 2**20
                    )
                except OSError:
                    continue
            try:
                root = etree.fromstring(data, parser=parser)
            except etree.XMLSyntaxError:
                continue
            locs = [t.strip() for t in root.xpath("//*[local-name()='loc']/text()")]
            if etree.QName(root).localname == "sitemapindex":
                todo.extend(locs)
            else:
                pages.extend(locs)
        return pages

    def _crawl(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]:
        sitemaps = self._read_robots() + list(self.cfg.sitemaps)
        aliases: dict[str, str] = dict(cursor.get("aliases") or {})
        new_aliases: dict[str, str] = {}
        queue: deque[tuple[str, int]] = deque([(self.start, 0)])
        for page in self._sitemap_urls(sitemaps):
            if (url := normalize(page)) is not None:
                queue.append((url, 0))
        seen: set[str] = set()
        done: set[str] = set()  # document ids reported this sync
        budget = self.cfg.max_documents * 3  # requests for pages, redirects and errors
        while queue and budget > 0 and not sink.full():
            url, depth = queue.popleft()
            if url in seen or not self.in_scope(url):
                continue
            seen.add(url)
            budget -= 1
            links = self._visit(sink, url, aliases, new_aliases, done)
            if depth < self.cfg.max_depth and len(queue) < MAX_QUEUE:
                queue.extend((link, depth + 1) for link in links if link not in seen)
        return {"aliases": new_aliases}

    def _start_failed(self, url: str, reason: str) -> None:
        """The start page must answer: without it the whole site would look deleted."""
        if url == self.start:
            raise SourceError(
                f"source {self.name}: the start page {url} failed: {reason}; nothing deleted",
                fix="check the site, the URL and the credentials; the next sync tries again",
            )

    def _visit(
        self,
        sink: Sink,
        url: str,
        aliases: dict[str, str],
        new_aliases: dict[str, str],
        done: set[str],
    ) -> list[str]:
        """Fetch one page (conditionally), report it, and return the links to follow."""
        old_id = aliases.get(url, url)
        old = sink.known(old_id)
        headers = {}
        if old:
            extra = old.get("extra") or {}
            if extra.get("etag"):
                headers["If-None-Match"] = extra["etag"]
            if extra.get("last_modified"):
                headers["If-Modified-Since"] = extra["last_modified"]
        old_links = list((old.get("extra") or {}).get("links", [])) if old else []
        try:
            resp = self._get(url, headers)
        except TooLarge as exc:
            sink.failed(old_id, str(exc))
            return []
        except httpx.HTTPError as exc:
            self._start_failed(url, http_error_reason(exc))
            sink.failed(old_id, http_error_reason(exc))
            return old_links  # what it linked to last time is still worth visiting
        if 300 <= resp.status < 400 and resp.status != 304:
            self._start_failed(url, f"HTTP {resp.status}: redirects off the site to {resp.url}")
            sink.failed(old_id, f"redirects off the site (HTTP {resp.status})", gone=True)
            return []
        if resp.status not in (200, 304):
            self._start_failed(url, f"HTTP {resp.status}")
        if resp.status == 304 and old:
            if old_id not in done:
                done.add(old_id)
                sink.unchanged(old_id)
            new_aliases[url] = old_id
            return list((old.get("extra") or {}).get("links", []))
        if resp.status in GONE_STATUSES:
            sink.failed(old_id, f"HTTP {resp.status}: no longer readable", gone=True)
            return []
        if resp.status != 200:
            sink.failed(old_id, f"HTTP {resp.status}", gone=False)
            return old_links
        final = normalize(resp.url) or url
        if origin(final) != self.origin:
            return []  # redirected off the site: not ours to index
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        suffix = TYPES.get(ctype)
        if suffix is None:
            return []  # not a document type (an image, a feed...)
        links: list[str] = []
        canonical = None
        noindex = nofollow = False
        if suffix == ".html":
            links, canonical, noindex, nofollow = parse_html(resp.content, final)
        doc_id = canonical if canonical and origin(canonical) == self.origin else final
        new_aliases[url] = doc_id
        # Only links the crawl may follow are kept (they are stored for 304 revisits).
        follow = [] if nofollow else [link for link in links if self.in_scope(link)]
        if doc_id in done:
            return follow  # another address of a page already taken
        done.add(doc_id)
        if noindex:
            if sink.known(doc_id):
                sink.failed(doc_id, "noindex: the page asks not to be indexed", gone=True)
            return follow
        path = mirror_path(doc_id, suffix)
        if not wanted(self.cfg, path):
            return follow
        etag = resp.headers.get("etag")
        modified = resp.headers.get("last-modified")
        version = etag or modified or hashlib.sha256(resp.content).hexdigest()
        doc = Doc(
            id=doc_id,
            version=version,
            path=path,
            collection=collection_for(self.cfg, urllib.parse.urlsplit(doc_id).path.lstrip("/")),
            url=doc_id,
            extra={"etag": etag, "last_modified": modified, "links": follow[:MAX_LINKS]},
        )
        sink.put(doc, with_front_matter(resp.content, doc_id, suffix))
        return follow
