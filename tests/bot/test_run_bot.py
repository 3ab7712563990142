"""`lorebot bot`'s entry point: refuses to start half-configured, serves when configured."""

from __future__ import annotations

import threading
import time

import pytest

from bot.cli import run_bot
from lorebot.cli.stack import free_port
from lorebot.errors import ConfigError, ServiceUnavailableError
from tests.bot.conftest import mention, placeholders, queued, slack_settings_for
from tests.support.fake_slack import event_body, get, post, sign


def test_unconfigured_slack_is_a_one_line_config_error(tmp_path, redis_server):
    from tests.conftest import make_settings

    with pytest.raises(ConfigError) as err:
        run_bot(make_settings(tmp_path, redis_server.url))
    assert "LOREBOT_SLACK__BOT_TOKEN" in err.value.fix


def test_unreachable_redis_is_reported(tmp_path, fake_slack):
    settings = slack_settings_for(
        tmp_path, f"redis://127.0.0.1:{free_port()}/0", fake_slack.api_url
    )
    with pytest.raises(ServiceUnavailableError) as err:
        run_bot(settings)
    assert "not reachable" in err.value.message


def test_run_bot_serves_signed_events_until_stopped(
    tmp_path, redis_server, redis_client, fake_slack
):
    from bot.server import run_bot as serve

    port = free_port()
    settings = slack_settings_for(tmp_path, redis_server.url, fake_slack.api_url, http_port=port)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            serve(settings, stop=stop)
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not errors:
        try:
            if get(url + "/readyz").status == 200:
                break
        except OSError:
            time.sleep(0.05)
    assert not errors, errors
    body = event_body(mention("What is the travel policy?"), event_id="EvRUN1")
    resp = post(
        url + "/slack/events",
        body,
        sign(settings.slack.signing_secret.get_secret_value(), body),
        "application/json",
    )
    assert resp.status == 200
    fake_slack.wait_for(lambda f: placeholders(f), what="placeholder")
    deadline = time.monotonic() + 15
    while not queued(redis_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(queued(redis_client)) == 1
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive() and not errors
