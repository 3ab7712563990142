"""Running the bot: the HTTP Events API server, Socket Mode, health checks.

One small threaded HTTP server (standard library) always runs on ``slack.http_port``:

* ``GET /healthz``: the process is up. ``GET /readyz``: Redis answers and Slack
  accepted the token (503 otherwise), for load balancers and ``lorebot up``.
* ``GET /metrics``: Prometheus metrics (queue depth per Celery queue, process stats).
* ``POST /slack/events``, ``/slack/commands``, ``/slack/actions``: Slack's HTTP
  transport, only when a signing secret is configured; bolt verifies every signature
  (401 for forged, expired or missing ones).

When an app token is set the bot also opens a Socket Mode connection (no public URL
needed); both transports feed the same bolt app.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from slack_bolt import App
from slack_bolt.request import BoltRequest

log = logging.getLogger(__name__)

SLACK_PATHS = ("/slack/events", "/slack/commands", "/slack/actions")
MAX_BODY_BYTES = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # route access logs to logging
        log.debug("http %s " + fmt, self.client_address[0], *args)

    def _send(self, status: int, body: str | bytes, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        hdrs = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        for k, v in hdrs.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, "ok")
        elif path == "/readyz":
            ok, detail = self.server.bot.ready()
            self._send(200 if ok else 503, json.dumps(detail), {"Content-Type": "application/json"})
        elif path == "/metrics":
            body, content_type = self.server.bot.metrics()
            self._send(200, body, {"Content-Type": content_type})
        else:
            self._send(404, "not found")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path not in SLACK_PATHS:
            self._send(404, "not found")
            return
        if not self.server.bot.http_enabled:
            self._send(
                404, "the HTTP Events API is off (no signing secret); this bot uses Socket Mode"
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, "payload too large")
            return
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = BoltRequest(body=raw, query=parts.query, headers=headers)
        resp = self.server.bot.app.dispatch(req)
        if resp.status == 401:
            log.warning(
                "rejected Slack request path=%s from=%s: %s",
                parts.path,
                self.client_address[0],
                rejection_reason(headers),
            )
        self._send(resp.status, resp.body or "", resp.first_headers_without_set_cookie())


def rejection_reason(headers: dict[str, str], window_s: int = 300) -> str:
    """Why bolt refused a request's signature, for the log (bolt only says "invalid")."""
    import time

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    bot: BotServer


class BotServer:
    """The HTTP listener around a bolt app; ``start()`` serves on a background thread."""

    def __init__(
        self, app: App, redis, *, host: str = "0.0.0.0", port: int = 3000, http_enabled: bool = True
    ) -> None:
        self.app = app
        self.redis = redis
        self.http_enabled = http_enabled
        self._httpd = _Server((host, port), _Handler)
        self._httpd.bot = self
        self._thread: threading.Thread | None = None
        self._registry = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

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

    def start(self) -> BotServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="lorebot-http",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "bot HTTP server on %s (slack endpoints %s)",
            self.url,
            "on" if self.http_enabled else "off",
        )
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


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
    try:
        server = BotServer(
            app, redis, port=slack.http_port, http_enabled=slack.signing_secret is not None
        ).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on port {slack.http_port}: {exc.strerror}",
            fix="free the port or set LOREBOT_SLACK__HTTP_PORT",
        ) from None

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
