"""Serving the console: uvicorn with the bot server's connection hardening.

The same guarded HTTP/1.1 protocol as the bot (:func:`bot.server._guarded_protocol`: a
deadline on each request head, a cap on open connections), no server header, no access
log (the audit log records changes; sign-ins too), short keep-alive. Forms are bounded
by the application's guard (:mod:`console.app`).
"""

from __future__ import annotations

import logging

import uvicorn

from bot.server import _guarded_protocol, is_loopback
from console.app import build_app
from lorebot.settings import Settings

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64


def make_server(
    settings: Settings, app=None, *, header_timeout_s: float = HEADER_TIMEOUT_S
) -> uvicorn.Server:
    """A uvicorn server for the console (``app`` defaults to :func:`build_app`)."""
    c = settings.console
    if not is_loopback(c.host) and not c.cookie_secure:
        log.warning(
            "console: listening on %s with console.cookie_secure off: session cookies "
            "travel in clear text (fix: put TLS in front and turn cookie_secure on)",
            c.host,
        )
    config = uvicorn.Config(
        app if app is not None else build_app(settings),
        host=c.host,
        port=c.port,
        http=_guarded_protocol(header_timeout_s, MAX_CONNECTIONS),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def check(settings: Settings) -> None:
    """A one-line ConfigError when nobody could sign in."""
    c = settings.console
    if not c.password_hash and not c.oidc_issuer:
        from lorebot.errors import ConfigError

        raise ConfigError(
            "the console has no way to sign in",
            fix="set LOREBOT_CONSOLE__PASSWORD_HASH (lorebot console hash-password) "
            "or console.oidc_issuer",
        )


def serve(settings: Settings) -> None:
    """Run the console in the foreground until interrupted."""
    check(settings)
    c = settings.console
    server = make_server(settings)
    log.info("console: listening on http://%s:%d", c.host, c.port)
    server.run()
