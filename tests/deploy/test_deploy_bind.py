"""What the deployments expose: the bot's port on loopback only, workers' metrics unpublished."""

from __future__ import annotations

import re


def test_compose_publishes_the_bot_on_loopback_by_default(compose):
    bot = compose["services"]["bot"]
    (published,) = bot["ports"]
    m = re.fullmatch(r"\$\{BOT_BIND:-([^}]+)\}:\$\{BOT_PORT:-3000\}:3000", published)
    assert m and m.group(1) == "127.0.0.1", published
    assert bot["environment"]["LOREBOT_SLACK__HTTP_HOST"] == "0.0.0.0"  # container side


def test_compose_publishes_no_worker_metrics_and_binds_them_for_the_network(compose):
    for name in ("answer-worker", "ingest-worker", "train-worker"):
        svc = compose["services"][name]
        assert "ports" not in svc, name
        assert svc["environment"]["LOREBOT_METRICS__HOST"] == "0.0.0.0", name
