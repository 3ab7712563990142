"""Who can reach the bot's HTTP server: loopback unless Slack must reach it; metrics need a
token beyond loopback; the workers' metrics server listens on loopback by default."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from lorebot.settings import MetricsSettings, SlackSettings
from tests.support.fake_slack import get

TOKEN = "scrape-me-0123456789"


def test_defaults_listen_on_loopback_unless_the_http_events_api_needs_a_public_address():
    assert SlackSettings(bot_token="xoxb-1", app_token="xapp-1").bind_host == "127.0.0.1"
    assert SlackSettings(bot_token="xoxb-1", signing_secret="s").bind_host == "0.0.0.0"
    assert SlackSettings(signing_secret="s", http_host="10.1.2.3").bind_host == "10.1.2.3"
    assert MetricsSettings().host == "127.0.0.1"
    assert MetricsSettings().token is None


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture()
def public_server(slack_settings, redis_client, fake_slack):
    """A server on every interface, as in HTTP Events mode; ``token`` set per test."""
    from bot.app import build_app
    from bot.server import BotServer

    app = build_app(slack_settings, redis=redis_client)
    servers = []

    def start(token: str | None):
        server = BotServer(app, redis_client, host="0.0.0.0", port=0, metrics_token=token)
        servers.append(server.start())
        return server

    yield start
    for s in servers:
        s.stop()


def test_metrics_on_a_public_interface_are_refused_without_a_token(public_server):
    server = public_server(None)
    status, body = fetch(server.url + "/metrics")
    assert status == 403 and "LOREBOT_METRICS__TOKEN" in body
    ready = get(server.url + "/readyz")
    assert ready.status == 200 and ready.json() == {"ready": True}  # status only, no detail
    assert get(server.url + "/healthz").status == 200


def test_metrics_on_a_public_interface_need_the_bearer_token(public_server):
    server = public_server(TOKEN)
    assert fetch(server.url + "/metrics")[0] == 401
    assert fetch(server.url + "/metrics", "wrong-token")[0] == 401
    status, body = fetch(server.url + "/metrics", TOKEN)
    assert status == 200 and "lorebot_queue_depth" in body
    status, body = fetch(server.url + "/readyz", TOKEN)
    assert status == 200 and '"redis":true' in body.replace(" ", "")


def test_loopback_server_serves_metrics_and_detail_without_a_token(bot):
    status, body = fetch(bot.url + "/metrics")
    assert status == 200 and "lorebot_queue_depth" in body
    assert get(bot.url + "/readyz").json()["redis"] is True


def test_socket_mode_bot_listens_on_loopback_only(tmp_path, redis_server, fake_slack):
    """run_bot in Socket Mode (no signing secret) binds 127.0.0.1: the port is not
    reachable on the machine's other addresses."""
    from bot.server import BotServer
    from tests.bot.conftest import slack_settings_for

    settings = slack_settings_for(
        tmp_path, redis_server.url, fake_slack.api_url, signing_secret=None, app_token="xapp-1"
    )
    assert settings.slack.bind_host == "127.0.0.1"
    assert BotServer.__init__.__kwdefaults__["host"] == "127.0.0.1"
