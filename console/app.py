"""The console's web application: the guard, the pages and the forms.

Every request passes :class:`Guard` first, before any route is matched:

* only GET, HEAD and POST; a POST must be a form (``application/x-www-form-urlencoded``)
  with a ``Content-Length`` of at most ``MAX_FORM_BYTES``, read within ``BODY_TIMEOUT_S``
  (411 / 400 / 413 / 415 / 408 otherwise), before anything else looks at it;
* no page without sign-in: a request outside ``PUBLIC_PATHS`` without a live session is
  redirected to the sign-in page (a page) or refused with 401 (a live fragment, a form),
  so an unknown path says nothing either;
* every POST, the sign-in form included, carries the session's CSRF token (form field
  ``csrf_token``, or header ``X-CSRF-Token``) and, when the browser sends one, an ``Origin``
  equal to the console's own: 403 otherwise, with an audit line;
* every response gets a strict Content-Security-Policy (scripts and styles only from the
  console itself), ``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: same-origin`` and
  ``no-store``.

Sessions are signed cookies (Starlette's SessionMiddleware): ``SameSite=Lax``, HttpOnly,
``Secure`` unless ``console.cookie_secure`` is off, and they end ``session_max_age_s`` after
sign-in whatever the activity, or at sign-out (the session id joins
:class:`console.auth.RevokedSessions`, so a copy of the cookie stops working too).
Handlers are plain functions (Starlette runs them on its thread pool), because they read
files, SQLite and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import data
from console.actions import ActionError, Actions
from console.audit import AuditLog
from console.auth import (
    MAX_PASSWORD_CHARS,
    PasswordCheck,
    RevokedSessions,
    SignInThrottle,
    console_dir,
    new_token,
    same_token,
    secret_key,
)
from lorebot.settings import Settings
from lorebot.types import new_id

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 64 << 10
MAX_FORM_FIELDS = 32
BODY_TIMEOUT_S = 10.0
#: Paths served without a session: the sign-in pages, health, the console's own CSS/JS.
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/oidc/start", "/oidc/callback"})
PUBLIC_PREFIXES = ("/static/",)
FRAGMENT_HEADER = "x-console-fragment"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # not no-referrer: with it, browsers send "Origin: null" on same-origin form posts
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NAV = (
    ("/", "Status"),
    ("/sources", "Sources & documents"),
    ("/answers", "Answers & feedback"),
    ("/models", "Models"),
    ("/access", "Access"),
    ("/audit", "Audit log"),
)


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=status, headers={"Connection": "close"})


def session_user(session: dict[str, Any], max_age_s: int, now: float | None = None) -> str | None:
    """The signed-in admin of a session, or None (never signed in, or signed in too long ago)."""
    user, at = session.get("user"), session.get("at")
    if not user or not isinstance(at, int | float):
        return None
    if (now if now is not None else time.time()) - at > max_age_s:
        return None
    return str(user)


class Guard:
    """Bounded form bodies, sign-in, CSRF and security headers for every request (ASGI)."""

    def __init__(self, app, *, max_age_s: int, audit: AuditLog, revoked: RevokedSessions) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self.audit = audit
        self.revoked = revoked

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        response = await self._check(scope, receive)
        if isinstance(response, Response):
            await response(scope, receive, send_with_headers)
            return
        body: bytes = response
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _check(self, scope, receive) -> Response | bytes:
        """A refusal, or the request body (already read, for the app to read again)."""
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method not in ("GET", "HEAD", "POST"):
            return _plain(405, "method not allowed")
        body = b""
        form: dict[str, str] = {}
        if method == "POST":
            length = headers.get("content-length")
            if length is None:
                return _plain(411, "Content-Length required")
            if not (length.isascii() and length.isdigit()):
                return _plain(400, "bad Content-Length")
            if int(length) > MAX_FORM_BYTES:
                return _plain(413, "form too large")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if int(length) and ctype != "application/x-www-form-urlencoded":
                return _plain(415, "forms only")
            try:
                body = await asyncio.wait_for(_read_body(receive, int(length)), BODY_TIMEOUT_S)
            except TimeoutError:
                return _plain(408, "request body timed out")
            except ValueError as exc:
                return _plain(400, str(exc))
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    max_num_fields=MAX_FORM_FIELDS,
                )
            except (UnicodeDecodeError, ValueError):
                return _plain(400, "malformed form")
            for k, v in pairs:
                form.setdefault(k, v)  # the first value of a repeated field wins
        scope["console.form"] = form
        session = scope.get("session")
        if session is None:  # SessionMiddleware always runs first
            return _plain(500, "no session")
        user = session_user(session, self.max_age_s)
        if user is not None and self.revoked.revoked(session.get("sid")):
            user = None  # signed out: a copy of the cookie is worth nothing
        if session.get("user") and user is None:
            session.clear()  # expired or signed out: sign in again
        scope["console.user"] = user
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if not public and user is None:
            if method in ("GET", "HEAD") and FRAGMENT_HEADER not in headers:
                return RedirectResponse("/login?next=" + quote(path, safe="/"), status_code=303)
            return _plain(401, "sign in first")
        if method == "POST":
            reason = self._csrf_problem(session, form, headers)
            if reason:
                client = (scope.get("client") or ("?",))[0]
                await asyncio.to_thread(  # the audit line is fsynced: not on the event loop
                    self.audit.record,
                    user or "-",
                    "csrf",
                    result="refused",
                    path=path[:200],
                    reason=reason,
                    ip=client,
                )
                return _plain(403, f"refused: {reason}")
        return body

    @staticmethod
    def _csrf_problem(session, form: dict[str, str], headers: dict[str, str]) -> str | None:
        token = form.get("csrf_token") or headers.get("x-csrf-token")
        if not same_token(session.get("csrf"), token):
            return "missing or wrong CSRF token"
        origin = headers.get("origin")
        if origin and origin != "null":
            host = headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                return "cross-origin form"
        elif origin == "null":
            return "opaque origin"
        if headers.get("sec-fetch-site") == "cross-site":
            return "cross-site form"
        return None


async def _read_body(receive, length: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValueError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            raise ValueError("body longer than Content-Length")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Console:
    """The pages and forms over the stores (``redis``, ``gateway`` passed in for tests)."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis,
        gateway,
        audit: AuditLog,
        revoked: RevokedSessions,
        oidc=None,
    ) -> None:
        self.settings = settings
        self.revoked = revoked
        self.redis = redis
        self.actions = Actions(settings, redis, gateway, audit)
        self.audit = audit
        self.password = PasswordCheck(
            settings.console.admin_user,
            settings.console.password_hash.get_secret_value()
            if settings.console.password_hash
            else None,
        )
        self.oidc = oidc
        self.throttle = SignInThrottle()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
        )

    # -- helpers ------------------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session = request.session
        if "csrf" not in session:
            session["csrf"] = new_token()
        flash = session.pop("flash", [])
        html = self.env.get_template(name).render(
            user=request.scope.get("console.user"),
            csrf=session["csrf"],
            flash=flash,
            nav=NAV,
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    @staticmethod
    def flash(request: Request, kind: str, text: str) -> None:
        items = request.session.get("flash", [])[-4:]
        items.append([kind, text[:500]])
        request.session["flash"] = items

    @staticmethod
    def form(request: Request) -> dict[str, str]:
        return request.scope.get("console.form", {})

    @staticmethod
    def who(request: Request) -> str:
        return request.scope["console.user"]

    @staticmethod
    def _int(value: str | None, default: int = 0, most: int = 10_000) -> int:
        try:
            return max(0, min(int(value or default), most))
        except ValueError:
            return default

    def back(self, request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)

    # -- sign-in ------------------------------------------------------------------------
    def login_page(self, request: Request) -> Response:
        if request.scope.get("console.user"):
            return self.back(request, "/")
        return self.render(
            request,
            "login.html",
            next=_safe_next(request.query_params.get("next")),
            password_enabled=self.password.enabled,
            oidc_enabled=self.oidc is not None,
        )

    def login(self, request: Request) -> Response:
        form = self.form(request)
        client = request.client.host if request.client else "?"
        user = form.get("user", "")[:64]
        nxt = _safe_next(form.get("next"))
        again = "/login" if nxt == "/" else "/login?next=" + quote(nxt, safe="/")
        wait = self.throttle.retry_after(client)
        if wait > 0:
            self.audit.record(user or "-", "sign-in", result="throttled", ip=client)
            self.flash(request, "error", f"Too many failed sign-ins: try again in {wait:.0f} s.")
            return self.back(request, again)
        password = form.get("password", "")
        if len(password) > MAX_PASSWORD_CHARS or not self.password.verify(user, password):
            self.throttle.failed(client)
            self.audit.record(user or "-", "sign-in", result="refused", via="password", ip=client)
            self.flash(request, "error", "Wrong name or password.")
            return self.back(request, again)
        self.throttle.succeeded(client)
        self.start_session(request, user, "password")
        self.audit.record(user, "sign-in", via="password", ip=client)
        return self.back(request, nxt)

    @staticmethod
    def start_session(request: Request, user: str, via: str) -> None:
        request.session.clear()  # nothing from before sign-in survives it (fixation)
        request.session.update(
            {
                "user": user,
                "via": via,
                "at": int(time.time()),
                "csrf": new_token(),
                "sid": new_token(),
            }
        )

    def logout(self, request: Request) -> Response:
        self.audit.record(self.who(request), "sign-out")
        at = request.session.get("at") or time.time()
        self.revoked.revoke(
            request.session.get("sid", ""), at + self.settings.console.session_max_age_s
        )
        request.session.clear()
        return self.back(request, "/login")

    # -- pages --------------------------------------------------------------------------
    def status_page(self, request: Request) -> Response:
        return self.render(request, "status.html", s=data.status(self.settings, self.redis))

    def status_fragment(self, request: Request) -> Response:
        return self.render(request, "_status.html", s=data.status(self.settings, self.redis))

    def sources_page(self, request: Request) -> Response:
        p = request.query_params
        only = p.get("only", "")
        only = only if only in ("failed", "skipped", "ok", "unchanged") else ""
        d = data.documents(
            self.settings, q=p.get("q", ""), only=only, page=self._int(p.get("page"))
        )
        return self.render(
            request,
            "sources.html",
            d=d,
            q=data.clean_query(p.get("q")),
            only=only,
            jobs=self.actions.jobs()[:10],
            remote=data.connector_sources(self.settings, q=p.get("q", "")),
        )

    def source_sync(self, request: Request) -> Response:
        name = self.form(request).get("source", "")[:200]
        try:
            task_id = self.actions.source_sync(self.who(request), name)
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
            return self.back(request, "/sources")
        return self.back(request, f"/jobs/{task_id}")

    def reindex(self, request: Request) -> Response:
        collection = self.form(request).get("collection", "").strip() or None
        try:
            task_id = self.actions.reindex(self.who(request), collection)
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
            return self.back(request, "/sources")
        return self.back(request, f"/jobs/{task_id}")

    def job_page(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            job = self.actions.job_state(task_id)
        except ActionError:
            return _plain(404, "no such job")
        return self.render(request, "job.html", job=job, task_id=task_id)

    def job_fragment(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            job = self.actions.job_state(task_id)
        except ActionError:
            return _plain(404, "no such job")
        return self.render(request, "_job.html", job=job, task_id=task_id)

    def answers_page(self, request: Request) -> Response:
        p = request.query_params
        d = data.answers(self.settings, q=p.get("q", ""), page=self._int(p.get("page")))
        latest = data.recent_answers(self.redis, channel=p.get("channel", ""))
        return self.render(
            request, "answers.html", d=d, q=data.clean_query(p.get("q")), recent=latest
        )

    def correct(self, request: Request) -> Response:
        form = self.form(request)
        try:
            question = self.actions.correct(
                self.who(request), form.get("question_id", ""), form.get("answer", "")
            )
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
        else:
            self.flash(request, "ok", f"Saved the right answer to “{question[:120]}”.")
        return self.back(request, "/answers")

    def models_page(self, request: Request) -> Response:
        return self.render(request, "models.html", m=data.models(self.settings))

    def confirm_page(self, request: Request) -> Response:
        p = request.query_params
        action = p.get("action", "")
        version = p.get("version", "")[:80]
        if action not in ("promote", "rollback") or (action == "promote" and not version):
            return _plain(400, "nothing to confirm")
        return self.render(request, "confirm.html", action=action, version=version)

    def adapters(self, request: Request) -> Response:
        form = self.form(request)
        action = form.get("action", "")
        if form.get("confirm") != "yes" or action not in ("promote", "rollback"):
            self.flash(request, "error", "Nothing changed: the change was not confirmed.")
            return self.back(request, "/models")
        try:
            if action == "promote":
                text = self.actions.promote(self.who(request), form.get("version", ""))
            else:
                text = self.actions.rollback(self.who(request))
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
        else:
            self.flash(request, "ok", text or f"{action}: done")
        return self.back(request, "/models")

    def access_page(self, request: Request) -> Response:
        return self.render(request, "access.html", a=data.access(self.settings, self.redis))

    def access_set(self, request: Request) -> Response:
        form = self.form(request)
        try:
            self.actions.set_channel(
                self.who(request),
                form.get("channel", ""),
                form.get("collections", ""),
                confirm_all=form.get("confirm_all") == "yes",
            )
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
        else:
            self.flash(request, "ok", f"Saved the mapping of {form.get('channel', '').upper()}.")
        return self.back(request, "/access")

    def access_reset(self, request: Request) -> Response:
        form = self.form(request)
        try:
            self.actions.reset_channel(self.who(request), form.get("channel", ""))
        except ActionError as exc:
            self.flash(request, "error", exc.one_line())
        else:
            self.flash(
                request, "ok", f"{form.get('channel', '').upper()} follows the settings again."
            )
        return self.back(request, "/access")

    def audit_page(self, request: Request) -> Response:
        return self.render(request, "audit.html", entries=self.audit.tail(200))

    @staticmethod
    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")


def _safe_next(value: str | None) -> str:
    """Only a path of this site (``/x``), never ``//host`` or a URL: no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:500]


def routes(c: Console) -> list:
    """Every route; tests enumerate this list to check each refuses anonymous requests."""
    out = [
        Route("/healthz", c.healthz, methods=["GET"]),
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", c.logout, methods=["POST"]),
        Route("/", c.status_page, methods=["GET"]),
        Route("/status/fragment", c.status_fragment, methods=["GET"]),
        Route("/sources", c.sources_page, methods=["GET"]),
        Route("/sources/reindex", c.reindex, methods=["POST"]),
        Route("/sources/sync", c.source_sync, methods=["POST"]),
        Route("/jobs/{task_id}", c.job_page, methods=["GET"]),
        Route("/jobs/{task_id}/fragment", c.job_fragment, methods=["GET"]),
        Route("/answers", c.answers_page, methods=["GET"]),
        Route("/answers/correct", c.correct, methods=["POST"]),
        Route("/models", c.models_page, methods=["GET"]),
        Route("/models/confirm", c.confirm_page, methods=["GET"]),
        Route("/models/adapters", c.adapters, methods=["POST"]),
        Route("/access", c.access_page, methods=["GET"]),
        Route("/access/set", c.access_set, methods=["POST"]),
        Route("/access/reset", c.access_reset, methods=["POST"]),
        Route("/audit", c.audit_page, methods=["GET"]),
    ]
    if c.oidc is not None:
        out += c.oidc.routes(c)
    out.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    return out


def connect_redis(url: str):
    """A client that fails fast: one retry, no backoff, so a page says "Redis is down" at
    once instead of after redis-py's default retries (seconds per command)."""
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_lib.Redis.from_url(
        url, socket_timeout=3, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1)
    )


def build_app(settings: Settings, *, redis=None, gateway=None, oidc=None) -> Starlette:
    """The console application. ``redis`` and ``gateway`` default to the settings' Redis."""
    if redis is None:
        redis = connect_redis(settings.redis.effective_url)
    if gateway is None:
        from bot.gateway import WorkerGateway

        gateway = WorkerGateway(settings.redis.effective_url)
    if oidc is None and settings.console.oidc_issuer:
        from console.oidc import OidcSignIn

        oidc = OidcSignIn.from_settings(settings)
    audit = AuditLog(console_dir(settings) / "audit.log")
    revoked = RevokedSessions(console_dir(settings) / "revoked.json")
    console = Console(
        settings, redis=redis, gateway=gateway, audit=audit, revoked=revoked, oidc=oidc
    )
    secure = settings.console.cookie_secure
    app = Starlette(
        routes=routes(console),
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret_key(settings),
                # __Host-: the browser keeps it to this exact host, path / and HTTPS.
                session_cookie="__Host-lorebot-console" if secure else "lorebot-console",
                max_age=settings.console.session_max_age_s,
                same_site="lax",
                https_only=secure,
            ),
            Middleware(
                Guard,
                max_age_s=settings.console.session_max_age_s,
                audit=audit,
                revoked=revoked,
            ),
        ],
        exception_handlers={500: _server_error},
    )
    app.state.console = console
    return app


async def _server_error(request: Request, exc: Exception) -> Response:
    ref = new_id()
    log.error("console: error ref=%s on %s: %r", ref, request.url.path, exc, exc_info=exc)
    return _plain(500, f"internal error (reference {ref}; see the console log)")
