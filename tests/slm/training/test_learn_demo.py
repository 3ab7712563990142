"""``lorebot demo --learn``'s work for real: before answers, one refresh of the sample
handbook under a tiny budget (real pairs, LoRA steps, GGUF export, parity, gate and
registry), after answers from the candidate, and the printed verdict."""

from __future__ import annotations

import shutil

import pytest

from lorebot import messages
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_learn_demo_refreshes_the_sample_handbook_and_answers_before_and_after(
    tmp_path, sample_data_dir, embedder
):
    from rich.console import Console

    from slm.training import registry
    from slm.training.learn_demo import run_learn_demo

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    s = make_settings(data, model={"max_tokens": 48})
    steps: list[str] = []
    questions = messages.LEARN_QUESTIONS[:2]
    result = run_learn_demo(
        s,
        questions,
        budget_s=5,
        progress=lambda step, message, detail: None if detail else steps.append(step),
        embedder=embedder,
    )
    r = result.report
    assert r.status in ("promoted", "rejected"), (r.status, r.reason)
    assert steps[:2] == ["before", "prepare"] and steps[-1] == "after"
    assert {"train", "export", "parity", "gate", "commit"} <= set(steps)
    assert r.pairs["kept"] >= 8 and r.training["steps"] >= 2
    assert r.metrics["candidate"]["score"] is not None
    assert result.before_adapter is None and result.after_adapter == r.version
    assert len(result.before) == len(result.after) == 2
    assert all(a.adapter is None for a in result.before)
    assert all(a.adapter == r.version for a in result.after)
    # The registry says what the verdict says.
    assert registry.current_version(s) == (r.version if r.status == "promoted" else None)

    out = Console(width=200, record=True)
    out.print(messages.learn_table(result))
    out.print(messages.learn_verdict(result, 100.0))
    text = out.export_text()
    assert questions[0] in text and r.status.upper() in text and r.reason[:30] in text
