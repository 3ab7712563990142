"""The training budget bounds optimiser steps, not model loading (issue 16).

The first real bench/refresh_gain.py run with ``--budget-s 600`` took ONE optimiser step:
the budget clock started before the base model was de-quantized and the examples
tokenised, which on a loaded two-core machine took about the whole budget. Here loading is
slowed past the budget on purpose; training must still take its minimum steps and the
refresh report must show loading apart from training.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import pytest
from rich.console import Console

from lorebot.assets import answer_model_path
from slm.training import lora, refresh
from slm.training.raft import RaftExample
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

SLOW_LOAD_S = 3.0
CONFIG = lora.LoraConfig(
    seed=0, rank=4, alpha=8, learning_rate=1e-3, batch_size=2, max_seq_len=128,
    max_steps=40, min_steps=4, time_budget_s=1.0, device="cpu", threads=1,
)  # fmt: skip


def examples() -> list[RaftExample]:
    return [
        RaftExample(
            messages=[
                {"role": "user", "content": f"How many days of leave in year {i}?"},
                {"role": "assistant", "content": f"{20 + i} days [1]."},
            ],
            pair_id=f"p{i}",
            kind="gold",
        )
        for i in range(6)
    ]


@pytest.fixture()
def slow_loading(monkeypatch):
    """De-quantizing the base model takes SLOW_LOAD_S longer than it does (> the budget)."""
    load = lora.load_base_model

    def slow(base_gguf: Path):
        time.sleep(SLOW_LOAD_S)
        return load(base_gguf)

    monkeypatch.setattr(lora, "load_base_model", slow)


def test_loading_does_not_eat_the_budget_and_min_steps_run(slow_loading, tmp_path):
    report = refresh.RefreshReport(run="r-budget")
    run = refresh._Run(
        make_settings(tmp_path / "data"),
        report,
        refresh._Steps(report, None, None),
        teacher=None,
        embedder=None,
        closing=[],
    )
    run.config, run.examples = CONFIG, examples()
    run.base, run.build = answer_model_path(), tmp_path / "build"
    with lora.reuse_base_model():
        result = refresh._train(run)
        assert result.steps >= CONFIG.min_steps and result.stopped_by == "budget"
        assert result.load_seconds >= SLOW_LOAD_S > CONFIG.time_budget_s
        training = report.training
        assert training["steps"] == result.steps
        assert training["load_s"] >= SLOW_LOAD_S
        assert 0 < training["train_s"] < training["seconds"]
        assert training["load_s"] + training["train_s"] <= training["seconds"] + 0.2
        report.durations_s["train"] = training["seconds"]
        console = Console(record=True, width=120)
        console.print(report.table())
        shown = console.export_text()
        assert "loading the model" in shown and "optimiser steps" in shown

        # The task's hard limit wins over min_steps: one step (a trained adapter), then stop.
        hard = lora.train_lora(
            run.base,
            [lora.TrainExample(e.messages) for e in examples()],
            tmp_path / "peft-deadline",
            CONFIG,
            deadline=time.monotonic(),
        )
        # min_steps never takes more than max_steps.
        capped = lora.train_lora(
            run.base,
            [lora.TrainExample(e.messages) for e in examples()],
            tmp_path / "peft-capped",
            lora.LoraConfig(**{**asdict(CONFIG), "max_steps": 3, "min_steps": 50}),
        )
    assert hard.steps == 1 and hard.stopped_by == "deadline"
    assert (tmp_path / "peft-deadline" / lora.PEFT_WEIGHTS).is_file()
    assert capped.steps == 3 and capped.stopped_by == "steps"
