"""Running the bot: the HTTP Events API server, Socket Mode, health checks.

One HTTP server always runs on ``slack.http_host``:``slack.http_port``: uvicorn (an
asyncio server, one thread for every connection together) around a small Starlette app.

* ``GET /healthz``: the process is up. ``GET /readyz``: Redis answers and Slack
  accepted the token (503 otherwise), for load balancers and ``lorebot up``.
* ``GET /metrics``: Prometheus metrics (queue depth per Celery queue, process stats).
* ``POST /slack/events``, ``/slack/commands``, ``/slack/actions``: Slack's HTTP
  transport, only when a signing secret is configured; bolt verifies every signature
  (401 for forged, expired or missing ones).

Hostile clients cannot hold the process: a request without ``Content-Length`` gets 411,
a malformed (e.g. negative) one 400, one over ``slack.http_max_body_bytes`` 413, all
before any of the body is read; a connection that has not sent its whole request head
within ``slack.http_header_timeout_s`` is closed, a body that has not arrived within
``slack.http_body_timeout_s`` gets 408, and connections beyond
``slack.http_max_connections`` are closed as they arrive. Bolt's dispatch runs on a
bounded thread pool.

The server listens on loopback unless the HTTP Events API needs it reachable (see
``slack.http_host``). ``/metrics`` and the detail of ``/readyz`` are for the operator: on
a loopback listener they are open; on any other interface ``/metrics`` needs
``Authorization: Bearer <metrics.token>`` (and is refused when no token is set), and
``/readyz`` without the token says only ready or not.

When an app token is set the bot also opens a Socket Mode connection (no public URL
needed); both transports feed the same bolt app.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import signal
import socket
import threading
import time
from typing import Any

import uvicorn
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_starlette_response
from slack_bolt.request import BoltRequest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from lorebot import contracts

log = logging.getLogger(__name__)

SLACK_PATHS = ("/slack/events", "/slack/commands", "/slack/actions")
MAX_BODY_BYTES = 1 << 20
CLOSE = {"Connection": "close"}


def rejection_reason(headers: dict[str, str], window_s: int = contracts.SIGNATURE_WINDOW_S) -> str:
    """Why bolt refused a request's signature, for the log (bolt only says "invalid")."""
    missing = [h for h in ("x-slack-request-timestamp", "x-slack-signature") if not headers.get(h)]
    if missing:
        return "missing header " + ", ".join(missing)
    try:
        age = time.time() - int(headers["x-slack-request-timestamp"])
    except ValueError:
        return "timestamp is not a number"
    if abs(age) > window_s:
        return f"timestamp {age:.0f} s old (replay window {window_s} s)"
    return "signature does not match the signing secret"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline on each request head and a connection cap.

    uvicorn times out idle keep-alive connections but not a client that trickles its
    request line and headers (every byte restarts the keep-alive timer): this deadline
    starts when the connection opens, or when the previous response was sent, and only a
    complete request head stops it.
    """

    refused = [0, float("-inf")]  # connections closed over the cap, when that was last logged

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                refused[0] += 1
                if time.monotonic() - refused[1] >= 10:  # one log line per 10 s at most
                    refused[1] = time.monotonic()
                    log.warning(
                        "http: %d connections open (limit %d): closing new ones "
                        "(%d so far), e.g. from %s",
                        len(self.connections),
                        max_connections,
                        refused[0],
                        (self.client or ("?",))[0],
                    )
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _in_flight(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def handle_events(self) -> None:
            super().handle_events()
            if self._in_flight():
                self._disarm()  # the whole head arrived; the body has its own timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self._in_flight():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_expired(self) -> None:
            self._head_timer = None
            if not self._in_flight() and not self.transport.is_closing():
                log.info(
                    "http: closed a connection from %s: no complete request within %.0f s",
                    (self.client or ("?",))[0],
                    header_timeout_s,
                )
                self.transport.close()

    return GuardedH11Protocol


class BotServer:
    """The HTTP listener around a bolt app; ``start()`` serves on a background thread."""

    def __init__(
        self,
        app: App,
        redis,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        http_enabled: bool = True,
        metrics_token: str | None = None,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        max_connections: int = 256,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.redis = redis
        self.http_enabled = http_enabled
        self.host = host
        self.loopback = is_loopback(host)
        self.metrics_token = metrics_token
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = max_body_bytes
        self._registry = None
        # Bound here, so a busy port fails in the constructor and port=0 is known at once.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        config = uvicorn.Config(
            self.asgi(),
            http=_guarded_protocol(header_timeout_s, max_connections),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = self._sock.getsockname()[0]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    # ------------------------------------------------------------------ checks
    def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {}
        try:
            detail["redis"] = bool(self.redis.ping())
        except Exception as exc:
            detail["redis"] = False
            detail["redis_error"] = type(exc).__name__
        detail["slack"] = bool(getattr(self.app, "_token", None) or self.app.client.token)
        return all(v for k, v in detail.items() if k in ("redis", "slack")), detail

    def metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition: this process plus the Celery queue depths (read from Redis)."""
        from lorebot import telemetry

        if self._registry is None:
            self._registry = telemetry.registry(redis=self.redis)
        return telemetry.exposition(self._registry)

    def operator(self, request: Request) -> bool | None:
        """May this request see metrics and readiness detail? None: no token to check."""
        if self.metrics_token is None:
            return True if self.loopback else None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.metrics_token.encode()
        )

    # ------------------------------------------------------------------ ASGI app
    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                *(Route(p, self._slack, methods=["POST"]) for p in SLACK_PATHS),
            ]
        )

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _readyz(self, request: Request) -> Response:
        ok, detail = await run_in_threadpool(self.ready)
        body = {"ready": ok, **detail} if self.operator(request) else {"ready": ok}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def _metrics(self, request: Request) -> Response:
        allowed = self.operator(request)
        if allowed is None:
            return PlainTextResponse(
                "metrics are off on this interface: set LOREBOT_METRICS__TOKEN and scrape with "
                "Authorization: Bearer <token>",
                status_code=403,
            )
        if not allowed:
            return PlainTextResponse(
                "bearer token required", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body, content_type = await run_in_threadpool(self.metrics)
        return Response(body, headers={"Content-Type": content_type})

    async def _slack(self, request: Request) -> Response:
        if not self.http_enabled:
            return PlainTextResponse(
                "the HTTP Events API is off (no signing secret); this bot uses Socket Mode",
                status_code=404,
            )
        length = request.headers.get("content-length")
        if length is None or "transfer-encoding" in request.headers:
            return PlainTextResponse("length required", status_code=411, headers=CLOSE)
        if not length.isdigit():  # the HTTP parser refuses these already
            return PlainTextResponse("bad content-length", status_code=400, headers=CLOSE)
        if int(length) > self.max_body_bytes:
            return PlainTextResponse("payload too large", status_code=413, headers=CLOSE)
        try:
            body = await asyncio.wait_for(self._body(request), self.body_timeout_s)
        except TimeoutError:
            log.info("http: request body from %s too slow", _client(request))
            return PlainTextResponse("request timeout", status_code=408, headers=CLOSE)
        if body is None:
            return PlainTextResponse("payload too large", status_code=413, headers=CLOSE)
        headers = {k.lower(): v for k, v in request.headers.items()}
        req = BoltRequest(
            body=body.decode("utf-8", errors="replace"),
            query=request.url.query,
            headers=headers,
        )
        resp = await run_in_threadpool(self.app.dispatch, req)
        if resp.status == 401:
            log.warning(
                "rejected Slack request path=%s from=%s: %s",
                request.url.path,
                _client(request),
                rejection_reason(headers),
            )
        return to_starlette_response(resp)

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None once it runs past the limit (a lying Content-Length)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> BotServer:
        self._thread = threading.Thread(
            target=self._uvicorn.run,
            kwargs={"sockets": [self._sock]},
            name="lorebot-http",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        log.info(
            "bot HTTP server on %s (slack endpoints %s)",
            self.url,
            "on" if self.http_enabled else "off",
        )
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._sock.close()


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def run_bot(settings, *, stop: threading.Event | None = None) -> None:
    """Run the bot until SIGINT/SIGTERM or `stop` is set.

    The HTTP server always runs (health, and Slack's HTTP transport with a signing
    secret); Socket Mode runs too when an app token is set.
    """
    import redis as redis_lib

    from bot.app import build_app
    from lorebot.errors import ConfigError, ServiceUnavailableError
    from lorebot.settings import mask_url

    slack = settings.slack
    if not slack.configured:
        raise ConfigError(
            "Slack is not configured",
            fix="set LOREBOT_SLACK__BOT_TOKEN and either LOREBOT_SLACK__APP_TOKEN (Socket Mode) "
            "or LOREBOT_SLACK__SIGNING_SECRET (HTTP); see the README's Slack section",
        )
    redis = redis_lib.Redis.from_url(
        settings.redis.effective_url, socket_timeout=5, socket_connect_timeout=4
    )
    try:
        redis.ping()
    except Exception as exc:
        raise ServiceUnavailableError(
            f"Redis at {mask_url(settings.redis.effective_url)} is not reachable "
            f"({type(exc).__name__})",
            fix="start it with `lorebot up`, or set LOREBOT_REDIS__URL",
        ) from None

    app = build_app(settings, redis=redis)
    host = slack.bind_host
    token = settings.metrics.token
    try:
        server = BotServer(
            app,
            redis,
            host=host,
            port=slack.http_port,
            http_enabled=slack.signing_secret is not None,
            metrics_token=token.get_secret_value() if token else None,
            header_timeout_s=slack.http_header_timeout_s,
            body_timeout_s=slack.http_body_timeout_s,
            max_connections=slack.http_max_connections,
            max_body_bytes=slack.http_max_body_bytes,
        ).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{slack.http_port}: {exc.strerror or exc}",
            fix="free the port or set LOREBOT_SLACK__HTTP_PORT / LOREBOT_SLACK__HTTP_HOST",
        ) from None
    if not server.loopback and token is None:
        log.warning(
            "the bot listens on %s: /metrics is refused there until LOREBOT_METRICS__TOKEN is "
            "set (then scrape with Authorization: Bearer <token>)",
            host,
        )

    socket_handler = None
    if slack.app_token is not None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_handler = SocketModeHandler(
            app, slack.app_token.get_secret_value(), web_client=app.client
        )
        try:
            socket_handler.connect()
        except Exception as exc:
            server.stop()
            raise ServiceUnavailableError(
                f"Socket Mode connection failed: {exc}",
                fix="check LOREBOT_SLACK__APP_TOKEN (xapp-… with connections:write)",
            ) from None
        log.info("Socket Mode connected")
    watchdog = app.lorebot.watchdog.start()  # type: ignore[attr-defined]

    stop = stop or threading.Event()

    def _signal(signum, _frame) -> None:
        log.info("signal %s: stopping the bot", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _signal)
    log.info(
        "lorebot bot running (%s)", "Socket Mode + HTTP" if socket_handler else "HTTP Events API"
    )
    try:
        stop.wait()
    finally:
        if socket_handler is not None:
            socket_handler.close()
        watchdog.stop()
        server.stop()
