"""One bounded HTTP GET for the web and API connectors (httpx): timeouts, a size limit
read while streaming, retries with backoff on 429/5xx and dropped connections.

httpx because it gives one timeout per phase, streaming with an early stop, and
redirect control in a small, well-kept library (already installed with huggingface-hub).
Authorization headers are passed in per request and never logged.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ingest.connectors.base import SourceError, TooLarge, size_reason, with_retries
from lorebot.settings import SourceConfig

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass
class Fetched:
    """A finished response: status, final URL, headers and (bounded) body."""

    status: int
    url: str
    headers: httpx.Headers
    content: bytes


class Http:
    """A client for one source's sync: bounded requests, retries, a request counter."""

    def __init__(
        self,
        cfg: SourceConfig,
        user_agent: str,
        *,
        auth: httpx.Auth | None = None,
        sleep: Callable[[float], None] = time.sleep,
        same_origin: bool = False,
    ) -> None:
        self.cfg = cfg
        # same_origin: a redirect to another scheme, host or port is not followed (a
        # crawled site must not send us to an internal address); the 3xx is returned.
        self.same_origin = same_origin
        self.max_bytes = int(cfg.max_document_mb * 2**20)
        self.sleep = sleep
        self.requests = 0
        self.client = httpx.Client(
            timeout=httpx.Timeout(cfg.timeout_s),
            follow_redirects=not same_origin,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": user_agent},
            auth=auth,
            trust_env=False,  # no proxy or netrc credentials from the environment
        )

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, headers: dict[str, str] | None = None) -> Fetched:
        """GET with retries; TooLarge past the size limit; httpx errors after the retries."""
        return self.request("GET", url, headers)

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        content: str | None = None,
    ) -> Fetched:
        """A request with retries (a form ``data`` or a raw ``content`` body); bounded like
        get."""

        def once() -> Fetched:
            target = url
            for _ in range(MAX_REDIRECTS):
                fetched = one(target)
                if not (self.same_origin and fetched.status in REDIRECTS):
                    return fetched
                nxt = urllib.parse.urljoin(target, fetched.headers.get("location", ""))
                if _origin(nxt) != _origin(target):
                    return Fetched(fetched.status, nxt, fetched.headers, b"")
                target = nxt
            raise httpx.TooManyRedirects("too many redirects", request=None)  # type: ignore[arg-type]

        def one(target: str) -> Fetched:
            self.requests += 1
            with self.client.stream(
                method, target, headers=headers or {}, data=data, content=content
            ) as resp:
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise TooLarge(size_reason(int(declared), self.cfg.max_document_mb))
                body = bytearray()
                if resp.status_code == 200:
                    for block in resp.iter_bytes():
                        body += block
                        if len(body) > self.max_bytes:
                            raise TooLarge(
                                size_reason(len(body), self.cfg.max_document_mb).replace(
                                    "MB >", "MB+ >"
                                )
                            )
                return Fetched(resp.status_code, str(resp.url), resp.headers, bytes(body))

        return with_retries(
            once,
            retries=self.cfg.retries,
            base_s=self.cfg.backoff_s,
            status_of=lambda r: r.status,
            retry_after_of=lambda r: r.headers.get("retry-after"),
            transient=(httpx.TimeoutException, httpx.TransportError),
            what=f"{method} {url.split('?')[0]}",
            sleep=self.sleep,
        )


def http_error_reason(exc: BaseException) -> str:
    """A one-line reason for a failed request (no headers, so no credentials)."""
    if isinstance(exc, TooLarge):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__}"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    return f"network error: {type(exc).__name__}: {exc}"[:200]


class ApiConnector:
    """What the connectors of web APIs share: their source, the API's base URL
    (``cfg.url``, else the vendor's :attr:`default_url`), the user agent, the sleep used
    between retries, and the :class:`Http` client of the sync in progress."""

    #: The vendor's API base when ``cfg.url`` is unset.
    default_url: str = ""

    def __init__(
        self,
        name: str,
        cfg: SourceConfig,
        *,
        user_agent: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.api = str(cfg.url or self.default_url).rstrip("/")
        self.user_agent = user_agent
        self.sleep = sleep
        self.http: Http | None = None

    @property
    def requests(self) -> int:
        """HTTP requests this connector made in its last sync."""
        return self.http.requests if self.http else 0

    def _oauth_token(
        self, url: str, form: dict[str, str], *, vendor: str, network_fix: str, refused: str
    ) -> str:
        """An OAuth access token from the token endpoint ``url`` (a form POST).

        A request that fails is a :class:`SourceError` naming the exception type only
        (the form holds a secret); a refusal is one naming the HTTP status, ``refused``
        being its fix.
        """
        assert self.http is not None
        try:
            resp = self.http.request("POST", url, data=form)
            token = json.loads(resp.content).get("access_token") if resp.status == 200 else None
        except (httpx.HTTPError, TooLarge, ValueError) as exc:
            raise SourceError(
                f"source {self.name}: cannot get a {vendor} token: {type(exc).__name__}",
                fix=network_fix,
            ) from None
        if not token:
            raise SourceError(
                f"source {self.name}: the {vendor} token endpoint refused (HTTP {resp.status})",
                fix=refused,
            )
        return str(token)
