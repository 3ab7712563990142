"""Prometheus metrics: the bot's /metrics over HTTP, ingest/refresh counters, the dashboard.

The answer workers' endpoints are scraped after real questions in test_fleet.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lorebot import telemetry
from tests.conftest import make_settings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lorebot-dashboard.json"


def value(body: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_bot_serves_metrics_with_live_queue_depth(tmp_path, redis_server, redis_client):
    from bot.app import build_app
    from bot.server import BotServer
    from tests.bot.conftest import slack_settings_for
    from tests.support.fake_slack import FakeSlack

    fake = FakeSlack().start()
    try:
        settings = slack_settings_for(tmp_path, redis_server.url, fake.api_url)
        app = build_app(settings, redis=redis_client)
        server = BotServer(app, redis_client, host="127.0.0.1", port=0).start()
        try:
            for _ in range(3):
                redis_client.lpush("answer", b"{}")
            redis_client.lpush("ingest", b"{}")
            started = time.perf_counter()
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
                body = resp.read().decode()
                ctype = resp.headers["Content-Type"]
            print(f"bot scrape: {(time.perf_counter() - started) * 1000:.1f} ms, {len(body)} bytes")
            assert resp.status == 200 and ctype.startswith("text/plain")
            assert value(body, "lorebot_queue_depth", queue="answer") == 3
            assert value(body, "lorebot_queue_depth", queue="ingest") == 1
            assert value(body, "lorebot_queue_depth", queue="train") == 0
            assert "# TYPE lorebot_questions_total counter" in body
            assert value(body, "process_resident_memory_bytes") > 0
            redis_client.delete("answer")
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
                assert value(resp.read().decode(), "lorebot_queue_depth", queue="answer") == 0
        finally:
            server.stop()
    finally:
        fake.stop()


def _scrape_local() -> str:
    body, _ = telemetry.exposition(telemetry.registry())
    return body.decode()


def test_ingest_failures_are_counted_by_reason_from_a_real_build(tmp_path, embedder):
    from ingest import Source, build_index
    from workers.app import _count_ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Parking\n\nVisitors park in lot B next to the reception.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n%%EOF")
    before = value(_scrape_local(), "lorebot_ingest_failures_total") or 0.0
    report = build_index(
        make_settings(tmp_path / "data"),
        [Source(path=docs, collection="general")],
        progress=False,
        embedder=embedder,
    )
    failed = [f for f in report.files if f.status == "failed"]
    assert len(failed) == 1
    _count_ingest({"status": "ok", "report": report.to_dict()})
    _count_ingest({"status": "failed", "message": "no recorded sources for x (fix: ...)"})
    body = _scrape_local()
    reason = telemetry.failure_reason(failed[0].reason)
    assert value(body, "lorebot_ingest_failures_total", reason=reason) >= 1
    assert value(body, "lorebot_ingest_failures_total", reason="run_failed") >= 1
    total = sum(
        s.value
        for fam in text_string_to_metric_families(body)
        for s in fam.samples
        if s.name == "lorebot_ingest_failures_total"
    )
    assert total - before == 2


def test_refresh_results_and_failure_reasons():
    before = value(_scrape_local(), "lorebot_refresh_total", decision="rejected")
    assert before is not None  # known decisions exist from the start
    telemetry.record_refresh("rejected")
    assert value(_scrape_local(), "lorebot_refresh_total", decision="rejected") == before + 1
    assert telemetry.failure_reason("timeout: parsing big.pdf") == "timeout"
    assert telemetry.failure_reason("parse error: bad xref") == "parse_error"
    assert telemetry.failure_reason(None) == "unknown"


def test_dashboard_parses_and_queries_only_existing_series():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and dash["title"] and dash["uid"]
    used = {m for e in exprs for m in re.findall(r"\blorebot_[a-z_]+", e)}
    known = telemetry.series_names()
    assert used <= known, used - known
    # ...and every lorebot family is on the dashboard.
    families = {
        n.removesuffix("_total").removesuffix("_bucket")
        for n in known
        if not n.endswith(("_created", "_count", "_sum"))
    }
    shown = {
        n.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for n in used
    }
    assert families <= shown, families - shown
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["gridPos"]["w"] > 0


@pytest.mark.parametrize("outcome", ["answered", "abstained", "failed"])
def test_question_outcomes_start_at_zero(outcome):
    assert value(_scrape_local(), "lorebot_questions_total", outcome=outcome) is not None
