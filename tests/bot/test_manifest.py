"""The Slack app manifest lists exactly what the bot listens to and needs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from slack_bolt.request import BoltRequest

from bot import app as bot_app
from tests.bot.conftest import ADMIN, CHANNEL, DM, USER
from tests.support.fake_slack import BOT_USER_ID, TEAM_ID

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "slack-manifest.yml"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def sample_event(name: str) -> dict:
    """A minimal event of the manifest's kind (message.<channel type> → a message event)."""
    ts = f"{time.time():.6f}"
    if name == "app_mention":
        return {
            "type": "app_mention",
            "user": USER,
            "text": f"<@{BOT_USER_ID}>",
            "ts": ts,
            "channel": CHANNEL,
        }
    if name.startswith("message."):
        kind = name.split(".", 1)[1]
        channel_type = {"channels": "channel", "groups": "group", "im": "im", "mpim": "mpim"}[kind]
        return {
            "type": "message",
            "user": USER,
            "text": "",
            "ts": ts,
            "channel_type": channel_type,
            "channel": DM if kind == "im" else CHANNEL,
        }
    return {"type": name, "user": USER, "ts": ts, "channel": CHANNEL}


def dispatch_event(app, event: dict) -> int:
    body = {
        "type": "event_callback",
        "team_id": TEAM_ID,
        "api_app_id": "A0000APP",
        "event": event,
        "event_id": "Ev" + event["ts"].replace(".", ""),
        "event_time": int(time.time()),
    }
    return app.dispatch(BoltRequest(body=body, mode="socket_mode")).status


def dispatch_command(app, command: str) -> int:
    body = {
        "command": command,
        "text": "help",
        "user_id": ADMIN,
        "channel_id": CHANNEL,
        "team_id": TEAM_ID,
        "response_url": "http://127.0.0.1:9/unused",
        "trigger_id": "1",
    }
    return app.dispatch(BoltRequest(body=body, mode="socket_mode")).status


def test_manifest_events_commands_scopes_and_interactivity_match_the_code(manifest):
    settings = manifest["settings"]
    assert sorted(settings["event_subscriptions"]["bot_events"]) == sorted(bot_app.BOT_EVENTS)
    assert sorted(c["command"] for c in manifest["features"]["slash_commands"]) == sorted(
        bot_app.COMMANDS
    )
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(bot_app.BOT_SCOPES)
    assert settings["interactivity"]["is_enabled"] is bool(bot_app.ACTIONS)
    assert settings["socket_mode_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True  # people can DM the bot


def test_every_manifest_event_and_command_reaches_a_listener(bot, manifest):
    for name in manifest["settings"]["event_subscriptions"]["bot_events"]:
        assert dispatch_event(bot.app, sample_event(name)) == 200, name
    for cmd in manifest["features"]["slash_commands"]:
        assert dispatch_command(bot.app, cmd["command"]) == 200, cmd["command"]


def test_nothing_beyond_the_manifest_is_handled(bot):
    """An event or command the manifest does not list finds no listener (bolt answers 404)."""
    assert dispatch_event(bot.app, sample_event("reaction_added")) == 404
    assert dispatch_event(bot.app, sample_event("member_joined_channel")) == 404
    assert dispatch_command(bot.app, "/other") == 404


def test_every_block_action_the_messages_render_has_a_listener(bot):
    from bot import render

    buttons = render.feedback_buttons("q1")["elements"]
    assert {b["action_id"] for b in buttons} == set(bot_app.ACTIONS)
    for action_id in bot_app.ACTIONS:
        body = {
            "type": "block_actions",
            "team": {"id": TEAM_ID},
            "user": {"id": USER},
            "channel": {"id": CHANNEL},
            "message": {"ts": "1.0", "text": "an answer"},
            "actions": [{"action_id": action_id, "value": "q1", "type": "button"}],
            "response_url": "http://127.0.0.1:9/unused",
            "api_app_id": "A0000APP",
        }
        assert bot.app.dispatch(BoltRequest(body=body, mode="socket_mode")).status == 200
