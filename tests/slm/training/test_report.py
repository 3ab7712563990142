"""The refresh report: the rich table, the score-history chart, and the post to the admin
channel (against the local fake Slack Web API, file upload included); `adapters` through the
task function."""

from __future__ import annotations

from rich.console import Console

from slm.training import registry
from slm.training.refresh import RefreshReport, plot_history
from tests.conftest import make_settings
from tests.support.fake_slack import FakeSlack
from workers.tasks.refresh import adapters_impl, post_report, report_text


def _report() -> RefreshReport:
    return RefreshReport(
        run="r20260101-020000-abcd",
        status="rejected",
        version="a20260101-020000-abcd",
        reason="score 0.310 does not beat current 0.330 by the margin +0.010",
        durations_s={"prepare": 1.0, "pairs": 60.0, "train": 300.0},
        pairs={
            "generated": 50,
            "kept": 20,
            "dropped": {"format": 10, "supported": 12, "duplicate": 3, "round_trip": 5},
        },
        split={"train": 16, "heldout": 4},
        metrics={
            "base": {"score": 0.30, "heldout_f1": 0.30, "abstention": 0.1},
            "current": {"score": 0.33, "heldout_f1": 0.33, "abstention": 0.4},
            "candidate": {"score": 0.31, "heldout_f1": 0.31, "abstention": 0.5},
        },
    )


def _card(s, status, base, current, cand):
    version, build = registry.start_version(s)
    (build / "adapter.gguf").write_bytes(b"GGUF")
    metrics = {"base": {"score": base}, "current": {"score": current}, "candidate": {"score": cand}}
    registry.commit_version(
        s, version, build, {"status": status, "reason": "t", "metrics": metrics}
    )


def test_table_and_text_carry_metrics_decision_and_durations():
    report = _report()
    console = Console(record=True, width=140)
    console.print(report.table())
    out = console.export_text()
    for needle in (
        "heldout_f1",
        "0.310",
        "0.330",
        "round_trip",
        "REJECTED",
        "does not beat",
        "train",
        "300.0",
    ):
        assert needle in out
    text = report_text(report)
    assert "rejected" in text and "heldout_f1" in text and "pairs: 50 written, 20 kept" in text
    assert report.summary()["candidate_score"] == 0.31 and report.summary()["status"] == "rejected"


def test_report_and_chart_posted_to_the_admin_channel(tmp_path):
    s0 = make_settings(tmp_path / "data")
    _card(s0, "rejected", 0.30, 0.30, 0.28)
    _card(s0, "candidate", 0.30, 0.30, 0.35)
    png = plot_history(s0, tmp_path / "history.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    slack = FakeSlack().start()
    try:
        s = make_settings(
            tmp_path / "data",
            slack={"bot_token": "xoxb-t", "api_url": slack.api_url, "admin_channel": "CADMIN"},
        )
        report = _report()
        report.files["chart"] = str(png)
        assert post_report(s, report)
        posted = [c for c in slack.calls_to("chat.postMessage") if c.args["channel"] == "CADMIN"]
        assert len(posted) == 1 and "does not beat" in posted[0].args["text"]
        assert len(slack.uploaded) == 1
        f = slack.uploaded[0]
        assert f["channel_id"] == "CADMIN" and f["data"] == png.read_bytes()
        # No admin channel configured: nothing is posted, nothing fails.
        assert not post_report(make_settings(tmp_path / "data"), report)
    finally:
        slack.stop()


def test_adapters_commands(tmp_path):
    s = make_settings(tmp_path / "data")
    assert "base model" in adapters_impl(s, "list")["text"]
    _card(s, "candidate", 0.3, 0.3, 0.4)
    version = registry.list_adapters(s)[0]["version"]
    out = adapters_impl(s, "promote", version)
    assert out["current"] == version and registry.current_version(s) == version
    listed = adapters_impl(s, "list")
    assert listed["current"] == version and version in listed["text"]
    assert adapters_impl(s, "rollback")["current"] is None
    assert "error" in adapters_impl(s, "rollback")  # nothing left to roll back
    assert "error" in adapters_impl(s, "promote", "a20990101-000000-beef")
    assert "error" in adapters_impl(s, "explode")


def test_adapters_task_runs_on_the_control_queue_worker(tmp_path, redis_server, celery_worker_proc):
    """What `/lorebot adapters ...` sends: registered, routed to `control`, away from long jobs."""
    from lorebot.contracts import QUEUE_CONTROL, TASK_ADAPTERS, TASK_QUEUES
    from workers.client import make_client

    s = make_settings(tmp_path / "data", redis_server.url)
    _card(s, "candidate", 0.3, 0.3, 0.4)
    version = registry.list_adapters(s)[0]["version"]
    celery_worker_proc(s.data_dir, redis_server.url, "control")
    client = make_client(redis_server.url)
    assert TASK_QUEUES[TASK_ADAPTERS] == QUEUE_CONTROL

    def call(action, v=None):
        return client.send_task(
            TASK_ADAPTERS, kwargs={"action": action, "version": v}, queue=QUEUE_CONTROL
        ).get(timeout=60)

    assert call("promote", version)["current"] == version
    assert registry.current_version(s) == version
    listed = call("list")
    assert listed["current"] == version and version in listed["text"]
    assert call("rollback")["current"] is None and registry.current_adapter(s) is None
