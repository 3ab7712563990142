"""``lorebot demo --learn``: the command's arguments and what it prints (fast: the ingest
and the refresh, minutes of work, are stood in for), and the demo's refresh settings."""

from __future__ import annotations

from types import SimpleNamespace

from typer.testing import CliRunner

from lorebot import messages
from lorebot.types import Answer


def _answer(text: str, abstained: bool = False) -> Answer:
    return Answer(question_id="q", question="?", answer=text, abstained=abstained)


def _result(questions, status: str = "rejected"):
    from slm.training.learn_demo import LearnResult

    report = SimpleNamespace(
        status=status,
        reason="score 0.310 does not beat base 0.305 by the margin +0.010",
        version="v20261203-1",
        metrics={"base": {"score": 0.305}, "candidate": {"score": 0.31}},
        split={"heldout": 9},
        pairs={"kept": 120},
        examples={"train": 150},
        training={"steps": 4, "train_s": 55.0, "first_loss": 2.5, "final_loss": 1.9},
        durations_s={"pairs": 3.0, "train": 80.0, "gate": 60.0},
    )
    return LearnResult(
        questions=list(questions),
        before=[_answer("You get 27 days [1].") for _ in questions],
        after=[
            _answer("27 days of paid annual leave [1].", i == 1) for i, _ in enumerate(questions)
        ],
        report=report,
        before_adapter=None,
        after_adapter="v20261203-1",
        seconds={"before": 10.0, "refresh": 150.0, "after": 10.0},
    )


def test_demo_learn_passes_budget_and_questions_and_prints_before_after_and_verdict(
    tmp_path, monkeypatch
):
    import ingest.cli
    import slm.training.learn_demo as learn_demo
    from lorebot.cli import app
    from lorebot.cli.root import State

    calls = {}

    def fake_ingest(settings, directory):
        calls["ingest"] = directory
        return SimpleNamespace(version="v1", documents=18, chunks=99, seconds=1.0)

    def fake_run(settings, questions, *, budget_s, progress):
        calls["run"] = (list(questions), budget_s)
        progress("pairs", "writing questions for 3 chunks", False)
        progress("pairs", "3/3 chunks read", True)
        progress("train", "LoRA rank 8", False)
        return _result(questions)

    monkeypatch.setattr(ingest.cli, "ingest_sample", fake_ingest)
    monkeypatch.setattr(learn_demo, "run_learn_demo", fake_run)
    monkeypatch.setattr(messages, "ingest_done", lambda report: "ingested")
    monkeypatch.setenv("LOREBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(State, "settings", None)
    runner = CliRunner()
    out = runner.invoke(app, ["demo", "--learn", "--budget-s", "7", "Where is the VPN guide?"])
    assert out.exit_code == 0, out.output
    assert calls["run"] == (["Where is the VPN guide?"], 7)
    assert "sample_docs" in str(calls["ingest"])
    text = " ".join(out.output.split())
    assert "Where is the VPN guide?" in text
    assert "before (base model)" in text and "after (adapter v20261203-1)" in text
    assert "REJECTED" in text and "does not beat base" in text
    assert "candidate 0.310, base 0.305" in text
    assert "4 LoRA steps" in text and "pairs kept 120" in text

    # Default questions: the demo's own, plus one.
    monkeypatch.setattr(State, "settings", None)
    out = runner.invoke(app, ["demo", "--learn"])
    assert out.exit_code == 0, out.output
    assert calls["run"] == (messages.LEARN_QUESTIONS, 60)
    assert runner.invoke(app, ["demo", "--learn", "--budget-s", "0"]).exit_code != 0


def test_learn_settings_keep_the_nightly_code_under_a_small_budget(tmp_path):
    from lorebot.settings import Settings
    from slm.training.learn_demo import EVAL_LIMIT, learn_settings

    s = Settings(data_dir=tmp_path)
    t = learn_settings(s, budget_s=30).training
    assert t.time_budget_s == 30 and t.min_steps == 2 and t.max_steps <= 60
    assert t.questions_per_chunk == 0 and t.extract_pairs  # no teacher-model calls
    assert t.collections == ["handbook"] and t.eval_limit == EVAL_LIMIT
    assert t.xquad_path is None
    # the rest is the nightly configuration, and the caller's settings are untouched
    assert t.margin == s.training.margin and t.heldout_share == s.training.heldout_share
    assert s.training.time_budget_s == 1800 and s.training.questions_per_chunk == 1
