"""The honest judge (bench/refresh_gain.py): the refresh it runs never sees the QA file.

The bench indexes a SQuAD file's passages and runs the nightly refresh on that index, then
asks the file's questions. If the refresh could read those questions or answers (through
its pair generator, its training examples or its gate), the judge would grade the adapter
on what it was taught. Here the file's questions and answers carry canary words that no
passage holds, and the refresh stage is watched: every file it opens (a Python audit hook),
every prompt its teacher is sent, every pair and training example it writes, and every
question and reference its gate is handed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import make_settings

QUESTION_CANARY = "ZORBLAXIAN"
ANSWER_CANARY = "QUOKKAMARINE"

# Written for this test: short policy paragraphs whose sentences the extractor can use.
ARTICLES = {
    "Travel policy": [
        "Staff book trains through the travel desk. The travel desk is the team that buys "
        "tickets and hotel rooms for staff. Travellers must keep every receipt for six "
        "months. First class is allowed on journeys longer than four hours.",
        "Mileage is paid for private cars used on company business. The mileage rate is "
        "forty cents per kilometre. Claims must be filed within thirty days of the trip.",
        "Hotel stays are capped at one hundred and fifty euros a night in most cities. "
        "The cap is two hundred euros in London and Paris.",
    ],
    "Equipment policy": [
        "Every new starter receives a laptop on the first day. The laptop is a fourteen "
        "inch model with thirty two gigabytes of memory. Staff may choose Linux or macOS.",
        "A broken screen is replaced by the help desk within two working days. The help "
        "desk is the team that repairs and replaces equipment.",
        "Monitors and keyboards can be ordered through the equipment portal. Orders "
        "above five hundred euros need a manager's approval.",
    ],
}


def write_qa(path: Path) -> Path:
    data = []
    n = 0
    for title, paragraphs in ARTICLES.items():
        paras = []
        for text in paragraphs:
            qas = []
            for k in range(2):
                n += 1
                qas.append(
                    {
                        "id": f"q{n}",
                        "question": f"Which {QUESTION_CANARY} rule number {n} applies here?",
                        "answers": [{"text": f"{ANSWER_CANARY} {k}", "answer_start": 0}],
                    }
                )
            paras.append({"context": text, "qas": qas})
        data.append({"title": title, "paragraphs": paras})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


class RecordingTeacher:
    """Writes a question, then answers with the passage's first sentence; records prompts."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        text = "\n".join(m["content"] for m in messages)
        self.prompts.append(text)
        if messages[-1]["role"] == "assistant":
            return " What does the policy allow for travel?"
        passage = messages[-1]["content"].split("\n", 2)[-1]
        return passage.split(". ")[0].split("] ", 1)[-1] + "."

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1


class StopBeforeTraining(Exception):
    pass


def _bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    import refresh_gain

    return refresh_gain


def test_the_refresh_sees_the_index_never_the_qa_file(tmp_path, embedder, monkeypatch):
    import slm.training.gate as gate
    import slm.training.lora as lora
    from slm.evals.evalset import EVAL_COLLECTION, prepare_eval
    from slm.evals.squad import load_squad

    bench = _bench()
    qa = write_qa(tmp_path / "qa.json")
    opened: list[str] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and isinstance(args[0], str | Path):
            if Path(args[0]).name == qa.name:
                opened.append(str(args[0]))

    sys.addaudithook(hook)  # cannot be removed; inert while not watching
    # The hook does see the file being read (so its silence below means something).
    watching[0] = True
    load_squad(qa)
    watching[0] = False
    assert opened, "the audit hook missed a read of the QA file"
    opened.clear()

    settings = make_settings(tmp_path / "scratch")
    eval_set = prepare_eval(settings, qa, abstain=1, embedder=embedder, progress=False)
    try:
        rs = bench.refresh_settings(
            settings,
            eval_set.workdir / "data",
            EVAL_COLLECTION,
            budget_s=30,
            teacher_questions=1,
        )
        rs = rs.model_copy(
            update={
                "training": rs.training.model_copy(
                    update={"min_train_pairs": 1, "heldout_share": 0.5, "injection_check": False}
                )
            }
        )
        assert rs.training.xquad_path is None and rs.training.golden_set is None
        gate_inputs: list = []
        examples: list = []

        class RecordingInputs(gate.GateInputs):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                gate_inputs.append(self)

        def stop(base, train_examples, *a, **kw):
            examples.extend(train_examples)
            raise StopBeforeTraining

        monkeypatch.setattr(gate, "GateInputs", RecordingInputs)
        monkeypatch.setattr(lora, "train_lora", stop)
        teacher = RecordingTeacher()
        watching[0] = True
        try:
            with pytest.raises(StopBeforeTraining):
                bench.run_bench_refresh(rs, teacher=teacher, embedder=embedder, verbose=False)
        finally:
            watching[0] = False
        written = [
            f.read_text(encoding="utf-8") for f in (eval_set.workdir / "data").rglob("*.jsonl")
        ]
    finally:
        eval_set.close()

    assert opened == [], f"the refresh opened the QA file: {opened}"
    # Positive controls: the teacher read passages, pairs and examples were made, the gate
    # got held-out questions, so the absence of canaries below is not an empty check.
    assert any("forty cents" in p or "travel desk" in p for p in teacher.prompts)
    assert examples and gate_inputs and gate_inputs[0].heldout
    seen = list(teacher.prompts)
    seen += [m["content"] for e in examples for m in e.messages]
    for inputs in gate_inputs:
        assert inputs.xquad_set is None and not inputs.golden and not inputs.feedback
        seen += [p.question for p in inputs.heldout] + [p.reference or "" for p in inputs.heldout]
        seen += [p.question for p in inputs.no_gold]
        seen += [h.chunk.text for p in inputs.no_gold for h in p.hits]
    assert written and any(ln.strip() for f in written for ln in f.splitlines())
    seen += written  # the pairs, rejected pairs and examples on disk
    for text in seen:
        assert QUESTION_CANARY not in text and ANSWER_CANARY not in text
