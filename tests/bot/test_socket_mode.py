"""Socket Mode: a local websocket server plays Slack's side of the connection.

The fake Web API answers ``apps.connections.open`` with the local ``ws://`` URL; the
websocket server says hello, sends envelopes, and records the acks the app returns.
Same handlers as HTTP: the envelope's question gets a placeholder and a queued task.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid

import pytest

from bot import messages
from tests.bot.conftest import CHANNEL, USER, mention, placeholders, queued, slack_settings_for
from tests.support.fake_slack import TEAM_ID

websockets_server = pytest.importorskip(
    "websockets.sync.server",
    reason="the websockets package (installed with langchain-core's langsmith) is missing",
)


class FakeSocketModeServer:
    def __init__(self) -> None:
        self.outbox: queue.Queue[dict] = queue.Queue()
        self.acks: list[dict] = []
        self.connected = threading.Event()
        self._cond = threading.Condition()
        self._server = websockets_server.serve(self._handler, "127.0.0.1", 0, compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/link/?ticket=test"

    def start(self) -> FakeSocketModeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def _handler(self, conn) -> None:
        conn.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": "A0000APP"},
                    "debug_info": {"host": "local"},
                }
            )
        )
        self.connected.set()
        while True:
            try:
                envelope = self.outbox.get_nowait()
                conn.send(json.dumps(envelope))
            except queue.Empty:
                pass
            try:
                raw = conn.recv(timeout=0.05)
            except TimeoutError:
                continue
            except Exception:
                return
            with self._cond:
                self.acks.append(json.loads(raw))
                self._cond.notify_all()

    def send(self, envelope_type: str, payload: dict) -> str:
        envelope_id = str(uuid.uuid4())
        self.outbox.put(
            {
                "envelope_id": envelope_id,
                "type": envelope_type,
                "payload": payload,
                "accepts_response_payload": envelope_type != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ack in self.acks:
                    if ack.get("envelope_id") == envelope_id:
                        return ack
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no ack for envelope {envelope_id}; acks: {self.acks}")
                self._cond.wait(left)


@pytest.fixture()
def socket_bot(tmp_path, redis_server, redis_client, fake_slack):
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import build_app

    ws = FakeSocketModeServer().start()
    fake_slack.ws_url = ws.url
    # Socket Mode needs no signing secret: only the bot token and the app-level token.
    settings = slack_settings_for(
        tmp_path,
        redis_server.url,
        fake_slack.api_url,
        signing_secret=None,
        app_token="xapp-test-token",
    )
    assert settings.slack.configured
    app = build_app(settings, redis=redis_client)
    handler = SocketModeHandler(
        app, settings.slack.app_token.get_secret_value(), web_client=app.client
    )
    handler.connect()
    assert ws.connected.wait(10), "the app never opened the websocket"
    yield app, ws
    handler.close()  # slack_sdk's built-in client takes ~3 s to wind down its threads
    ws.stop()


def test_envelope_is_acked_and_the_question_handled(socket_bot, fake_slack, redis_client):
    app, ws = socket_bot
    ev = mention("How do I book annual leave?")
    payload = {
        "team_id": TEAM_ID,
        "api_app_id": "A0000APP",
        "event": ev,
        "type": "event_callback",
        "event_id": "EvSOCKET1",
        "event_time": int(time.time()),
    }
    envelope_id = ws.send("events_api", payload)
    ack = ws.wait_ack(envelope_id)
    assert ack == {"envelope_id": envelope_id}

    (ph,) = fake_slack.wait_for(lambda f: placeholders(f), what="placeholder")
    assert ph.args["channel"] == CHANNEL and ph.args["thread_ts"] == ev["ts"]
    deadline = time.monotonic() + 15
    while not queued(redis_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    (task,) = queued(redis_client)
    assert task["kwargs"]["question"]["text"] == "How do I book annual leave?"
    # the apps.connections.open call used the app-level token
    assert fake_slack.calls_to("apps.connections.open")[0].token == "xapp-test-token"


def test_redelivered_envelope_is_acked_but_answered_once(socket_bot, fake_slack, redis_client):
    app, ws = socket_bot
    payload = {
        "team_id": TEAM_ID,
        "api_app_id": "A0000APP",
        "event": mention("Where is the office?"),
        "type": "event_callback",
        "event_id": "EvSOCKET2",
        "event_time": int(time.time()),
    }
    first = ws.send("events_api", payload)
    second = ws.send("events_api", payload)
    ws.wait_ack(first)
    ws.wait_ack(second)
    app.listener_runner.listener_executor.shutdown(wait=True)
    assert len(queued(redis_client)) == 1


def test_slash_command_over_socket_mode_acks_with_the_reply(socket_bot):
    app, ws = socket_bot
    envelope_id = ws.send(
        "slash_commands",
        {
            "command": "/lorebot",
            "text": "status",
            "user_id": USER,
            "channel_id": CHANNEL,
            "team_id": TEAM_ID,
            "response_url": "http://127.0.0.1:9/unused",
            "trigger_id": "1.2",
        },
    )
    ack = ws.wait_ack(envelope_id)
    assert ack["payload"]["text"] == messages.ADMIN_ONLY
