"""A local HTTP server speaking the subset of the Slack Web API lorebot uses.

It keeps messages per channel the way Slack does (``chat.postMessage`` creates,
``chat.update`` replaces, ``conversations.replies`` lists a thread), records every call
with its arguments and arrival time, and can be told to answer the next calls to a
method with an HTTP 429 and a ``Retry-After`` header. ``response_url`` posts (slash
command follow-ups) land on ``/response/<id>`` and are recorded too. Files added with
``add_file`` are described by ``files.info`` and served at their ``url_private_download``
(to the bot token only; without it, Slack's HTML sign-in page), recorded as ``files.download``.
``views.open`` takes a trigger id the fake issued (:meth:`FakeSlack.new_trigger`, as a click
payload carries one) once, within Slack's 3 seconds, and keeps the opened modal in ``views``.

Also here: signing a request exactly as Slack does, and posting it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_USER_ID = "UBOT00001"
BOT_ID = "BBOT00001"
TEAM_ID = "T0000TEAM"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float  # time.time() when the request arrived
    status: int = 200


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    user: str | None = BOT_USER_ID
    bot_id: str | None = BOT_ID
    updates: int = 0


class FakeSlack:
    """Start with ``FakeSlack().start()``; point WebClient's base_url at ``api_url``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.responses: list[dict[str, Any]] = []  # response_url posts
        self.messages: dict[tuple[str, str], Message] = {}
        self.thread_messages: dict[
            tuple[str, str], list[dict[str, Any]]
        ] = {}  # extra user messages
        self.ws_url: str | None = None
        self.uploads: dict[str, bytes] = {}  # file id -> bytes sent to its upload URL
        self.uploaded: list[dict[str, Any]] = []  # files_upload_v2: id, title, channel_id, data
        self.files: dict[str, dict[str, Any]] = {}  # file id -> files.info record + content
        # users.info: user id -> e-mail ("" = no e-mail); when set, other ids are not found
        self.user_emails: dict[str, str] = {}
        self.views: list[dict[str, Any]] = []  # modals opened by views.open, with their id
        self._triggers: dict[str, float | None] = {}  # trigger id -> when issued; None: used
        self._ratelimit: dict[str, list[float]] = {}
        self._fail: dict[str, list[str]] = {}
        self._ts = 0
        self._lock = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _args(self) -> dict[str, Any]:
                parts = urllib.parse.urlsplit(self.path)
                args: dict[str, Any] = {
                    k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()
                }
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                ctype = self.headers.get("Content-Type", "")
                if raw and "json" in ctype:
                    args.update(json.loads(raw))
                elif raw:
                    args.update({k: v[0] for k, v in urllib.parse.parse_qs(raw).items()})
                for key in ("blocks", "attachments", "metadata"):
                    if isinstance(args.get(key), str):
                        try:
                            args[key] = json.loads(args[key])
                        except ValueError:
                            pass
                return args

            def _download(self, path: str, at: float) -> None:
                """url_private_download: the bytes with the bot token, else the sign-in page."""
                auth = self.headers.get("Authorization", "")
                token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
                file_id = path.split("/")[2].rsplit("-", 1)[-1]
                with fake._lock:
                    record = fake.files.get(file_id)
                    fake.calls.append(Call("files.download", {"file": file_id}, token, at))
                    fake._lock.notify_all()
                if record is None:
                    data, ctype, status = b"not found", "text/plain", 404
                elif not token:  # Slack answers an unauthorised download with HTML, 200
                    data, ctype, status = b"<html>sign in</html>", "text/html", 200
                else:
                    data, ctype, status = record["content"], record["mimetype"], 200
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._route()

            def do_POST(self) -> None:
                self._route()

            def _route(self) -> None:
                at = time.time()
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/upload/"):  # step 2 of files_upload_v2: raw bytes
                    data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    with fake._lock:
                        fake.uploads[path.rsplit("/", 1)[1]] = data
                    self._reply(200, {"ok": True})
                    return
                args = self._args()
                if path.startswith("/response/"):
                    with fake._lock:
                        fake.responses.append({"id": path.rsplit("/", 1)[1], "at": at, **args})
                        fake._lock.notify_all()
                    self._reply(200, {"ok": True})
                    return
                if path.startswith("/files-pri/"):
                    self._download(path, at)
                    return
                if not path.startswith("/api/"):
                    self._reply(404, {"ok": False, "error": "unknown_path"})
                    return
                method = path[len("/api/") :]
                auth = self.headers.get("Authorization", "")
                token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else args.get("token")
                status, payload, headers = fake._handle(method, args, token)
                with fake._lock:
                    fake.calls.append(Call(method, args, token, at, status))
                    fake._lock.notify_all()
                self._reply(status, payload, headers)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    def response_url(self, ident: str = "r1") -> str:
        return f"{self.base_url}/response/{ident}"

    # ------------------------------------------------------------------ scripting
    def rate_limit(self, method: str, retry_after: float = 1.0, times: int = 1) -> None:
        """The next `times` calls to `method` get HTTP 429 with this Retry-After."""
        with self._lock:
            self._ratelimit.setdefault(method, []).extend([retry_after] * times)

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next `times` calls to `method` answer ok=false with this error code."""
        with self._lock:
            self._fail.setdefault(method, []).extend([error] * times)

    def clear_failures(self) -> None:
        with self._lock:
            self._fail.clear()
            self._ratelimit.clear()

    def add_file(
        self,
        file_id: str,
        name: str,
        content: bytes,
        *,
        mimetype: str = "application/octet-stream",
        filetype: str = "binary",
    ) -> dict[str, Any]:
        """Store a file; returns the file object a ``file_share`` message event carries."""
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.base_url}/files-pri/{TEAM_ID}-{file_id}/download/{quoted}"
        info = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "size": len(content),
            "mode": "hosted",
            "is_external": False,
            "url_private": url,
            "url_private_download": url,
        }
        with self._lock:
            self.files[file_id] = {**info, "content": content}
        return dict(info)

    def new_trigger(self) -> str:
        """A trigger id as Slack puts in an interaction payload (good once, for 3 s)."""
        with self._lock:
            trigger = f"{len(self._triggers) + 1}.{int(time.time())}.{uuid.uuid4().hex[:12]}"
            self._triggers[trigger] = time.monotonic()
        return trigger

    def add_thread_message(
        self, channel: str, thread_ts: str, ts: str, text: str, user: str
    ) -> None:
        with self._lock:
            self.thread_messages.setdefault((channel, thread_ts), []).append(
                {"type": "message", "ts": ts, "thread_ts": thread_ts, "text": text, "user": user}
            )

    def _next_ts(self) -> str:
        # Like Slack: microsecond timestamps, increasing, close to the wall clock.
        self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
        s = str(self._ts)
        return f"{s[:10]}.{s[10:]}"

    def _handle(self, method: str, args: dict[str, Any], token: str | None):
        with self._lock:
            waits = self._ratelimit.get(method)
            if waits:
                wait = waits.pop(0)
                return (
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(int(wait) if wait == int(wait) else wait)},
                )
            errors = self._fail.get(method)
            if errors:
                return 200, {"ok": False, "error": errors.pop(0)}, {}
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        handler: Callable | None = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        with self._lock:
            return 200, handler(args), {}

    # ------------------------------------------------------------------ Web API methods
    def _api_auth_test(self, args):
        return {
            "ok": True,
            "url": "https://example.slack.test/",
            "team": "Example",
            "user": "lorebot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_bots_info(self, args):
        return {"ok": True, "bot": {"id": BOT_ID, "user_id": BOT_USER_ID, "name": "lorebot"}}

    def _api_users_info(self, args):
        uid = args.get("user")
        if self.user_emails and uid not in self.user_emails:
            return {"ok": False, "error": "user_not_found"}
        user = {"id": uid, "name": "someone", "is_bot": False, "profile": {}}
        if self.user_emails.get(uid):
            user["profile"]["email"] = self.user_emails[uid]  # needs users:read.email
        return {"ok": True, "user": user}

    def _api_apps_connections_open(self, args):
        if not self.ws_url:
            return {"ok": False, "error": "socket_mode_not_enabled"}
        return {"ok": True, "url": self.ws_url}

    def _api_chat_postMessage(self, args):
        ts = self._next_ts()
        msg = Message(
            args["channel"],
            ts,
            args.get("text", ""),
            args.get("blocks") or [],
            args.get("thread_ts"),
        )
        self.messages[(msg.channel, ts)] = msg
        return {
            "ok": True,
            "channel": msg.channel,
            "ts": ts,
            "message": {"text": msg.text, "ts": ts},
        }

    def _api_chat_update(self, args):
        key = (args["channel"], args["ts"])
        msg = self.messages.get(key)
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        msg.text = args.get("text", msg.text)
        if "blocks" in args:
            msg.blocks = args["blocks"] or []
        msg.updates += 1
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}

    def _api_chat_postEphemeral(self, args):
        return {"ok": True, "message_ts": self._next_ts()}

    def _api_files_getUploadURLExternal(self, args):
        file_id = f"FU{len(self.uploads) + 1:07d}"
        self.uploads.setdefault(file_id, b"")
        return {"ok": True, "file_id": file_id, "upload_url": f"{self.base_url}/upload/{file_id}"}

    def _api_files_completeUploadExternal(self, args):
        files = args.get("files")
        if isinstance(files, str):
            files = json.loads(files)
        done = []
        for f in files or []:
            record = {
                "id": f["id"],
                "title": f.get("title"),
                "channel_id": args.get("channel_id"),
                "thread_ts": args.get("thread_ts"),
                "initial_comment": args.get("initial_comment"),
                "data": self.uploads.get(f["id"], b""),
            }
            self.uploaded.append(record)
            done.append({"id": f["id"], "title": f.get("title")})
        return {"ok": True, "files": done}

    def _api_reactions_add(self, args):
        return {"ok": True}

    def _api_views_open(self, args):
        trigger = args.get("trigger_id") or ""
        view = args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if trigger not in self._triggers:
            return {"ok": False, "error": "invalid_trigger_id"}
        issued = self._triggers[trigger]
        if issued is None:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if time.monotonic() - issued > 3.0:
            return {"ok": False, "error": "expired_trigger_id"}
        self._triggers[trigger] = None
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("title"):
            return {"ok": False, "error": "invalid_arguments"}
        opened = {**view, "id": f"V{len(self.views) + 1:08d}", "team_id": TEAM_ID}
        self.views.append(opened)
        return {"ok": True, "view": opened}

    def _api_files_info(self, args):
        record = self.files.get(args.get("file", ""))
        if record is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": {k: v for k, v in record.items() if k != "content"}}

    def _api_conversations_replies(self, args):
        channel, ts = args["channel"], args["ts"]
        found = [
            m
            for m in self.messages.values()
            if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
        ]
        out = [
            {
                "type": "message",
                "ts": m.ts,
                "text": m.text,
                "user": m.user,
                "bot_id": m.bot_id,
                "thread_ts": m.thread_ts,
            }
            for m in found
        ]
        out += self.thread_messages.get((channel, ts), [])
        out.sort(key=lambda m: float(m["ts"]))
        if not out:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": out, "has_more": False}

    # ------------------------------------------------------------------ inspection
    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.status == 200]

    def wait_for(
        self,
        predicate: Callable[[FakeSlack], Any],
        timeout: float = 15.0,
        what: str = "condition",
    ):
        """Block until `predicate(self)` is truthy (it is re-checked on every call)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    methods = [c.method for c in self.calls]
                    raise AssertionError(f"timed out waiting for {what}; calls so far: {methods}")
                self._lock.wait(timeout=min(left, 0.2))

    def wait_call(self, method: str, n: int = 1, timeout: float = 15.0) -> list[Call]:
        return self.wait_for(
            lambda f: (lambda cs: cs if len(cs) >= n else None)(f.calls_to(method)),
            timeout,
            f"{n} × {method}",
        )

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            return self.messages[(channel, ts)]


# ---------------------------------------------------------------------- signing
def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds: v0 HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@dataclass
class HttpResult:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def post(url: str, body: str, headers: dict[str, str], content_type: str) -> HttpResult:
    req = urllib.request.Request(
        url, data=body.encode(), method="POST", headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return HttpResult(resp.status, resp.read().decode(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, err.read().decode(), dict(err.headers))


def get(url: str) -> HttpResult:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return HttpResult(resp.status, resp.read().decode(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, err.read().decode(), dict(err.headers))


def event_body(event: dict[str, Any], *, event_id: str, team: str = TEAM_ID) -> str:
    """An Events API ``event_callback`` envelope as Slack posts it."""
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": team,
            "api_app_id": "A0000APP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER_ID, "is_bot": True}],
        }
    )


def command_body(
    command: str, text: str, *, user: str, channel: str, response_url: str, team: str = TEAM_ID
) -> str:
    """A slash command, form-encoded as Slack posts it."""
    return urllib.parse.urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": team,
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": "someone",
            "command": command,
            "text": text,
            "api_app_id": "A0000APP",
            "response_url": response_url,
            "trigger_id": "1.2.3",
        }
    )


def action_body(
    action_id: str,
    value: str,
    *,
    user: str,
    channel: str,
    message: dict[str, Any],
    response_url: str,
    team: str = TEAM_ID,
    trigger_id: str = "1.2.3",
) -> str:
    """A block_actions payload (button click), form-encoded as ``payload=<json>``."""
    payload = {
        "type": "block_actions",
        "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A0000APP",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": "general"},
        "message": message,
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"feedback:{value}",
                "value": value,
                "type": "button",
                "action_ts": str(time.time()),
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def view_submission_body(
    view: dict[str, Any], values: dict[str, dict[str, str]], *, user: str, team: str = TEAM_ID
) -> str:
    """A modal's ``view_submission`` payload, form-encoded as ``payload=<json>``: the view as
    opened (``FakeSlack.views``) with ``values[block_id][action_id]`` typed into its inputs."""
    state = {
        block: {
            action: {"type": "plain_text_input", "value": value} for action, value in acts.items()
        }
        for block, acts in values.items()
    }
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
        "api_app_id": "A0000APP",
        "token": "legacy-verification-token",
        "trigger_id": f"9.{int(time.time())}.{uuid.uuid4().hex[:12]}",
        "view": {
            **view,
            "state": {"values": state},
            "hash": uuid.uuid4().hex[:16],
            "app_id": "A0000APP",
            "bot_id": BOT_ID,
            "root_view_id": view.get("id"),
            "previous_view_id": None,
        },
        "response_urls": [],
        "is_enterprise_install": False,
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})
