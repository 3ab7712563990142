"""Issue 16, item 4: a question thumbs-downed with a correction today is answered with the
corrected fact after the next refresh (real model, real refresh, small budget).

The fact is one the documents hold (the grounding check keeps only what a passage says)
but the base model's answer leaves out: the test first asserts that, so it could fail.
Then the user's 👎 with a suggested answer, the admin's review (``lorebot feedback review``'s
export and apply), one nightly refresh (the code the worker runs: pairs, RAFT examples,
LoRA, GGUF export, parity, the gate unchanged, registry) and the same question through the
answer path with the adapter the gate promoted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorebot import assets
from lorebot.types import Question
from tests.conftest import make_settings

# It does not pass yet (December 3, see README "Feedback"): with 8 steps the candidate does
# not state the correction; and the answer path drops the base model's own sentence naming
# the Finance Director as "not informative" beside the deadline quote. Strict: it must be
# unmarked once it passes. Slow: ~3.5 min at load 2-7, > 15 min at load 16-20.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xfail(strict=True, reason="the correction is not yet stated after 8 LoRA steps"),
]

#: Two handbook pages: the one holding the fact and another (distractor passages).
DOCS = ("expenses.md", "remote_work.md")
QUESTION = "What happens if I submit a claim late?"
#: What the corrected answer must state (and the base answer does not).
FACT = "Finance Director"
CORRECTION = (
    "Claims older than 45 days need written approval from the Finance Director and may be rejected."
)

#: The nightly settings under a small budget: extraction-only pairs, a few LoRA steps.
TRAINING = {
    "collections": ["handbook"],
    "questions_per_chunk": 0,
    "extract_pairs": True,
    "batch_size": 4,
    "min_steps": 8,
    "max_steps": 8,
    "time_budget_s": 10,
    "learning_rate": 1e-3,
    "max_seq_len": 384,
    "eval_limit": 4,
    "xquad_path": None,
    # Ten more answers per model; tests/slm/test_leaks.py measures it with the real model.
    "injection_check": False,
}


def _answer(settings, reader, question: Question, adapter=None):
    from slm.serving.answer import answer_question
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator.from_settings(
        settings,
        lora_path=adapter.path if adapter else None,
        adapter=adapter.version if adapter else None,
    )
    try:
        return answer_question(
            question, reader, gen, retrieval=settings.retrieval, model=settings.model
        )
    finally:
        gen.close()


def _has(text: str, fact: str) -> bool:
    return " ".join(fact.lower().split()) in " ".join(text.lower().split())


def test_a_corrected_answer_is_stated_after_the_next_refresh(tmp_path, embedder):
    from ingest import Source, build_index
    from ingest.store import open_index
    from lorebot.feedback import FeedbackStore, feedback_path, review_apply, review_export
    from slm.training import registry
    from slm.training.pairs import read_pairs
    from slm.training.refresh import REVIEWED_REPEATS, run_refresh

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in DOCS:
        shutil.copy(assets.sample_docs_dir() / name, docs / name)
    s = make_settings(tmp_path / "data", model={"max_tokens": 64}, training=TRAINING)
    build_index(s, [Source(path=docs, collection="handbook")], progress=False, embedder=embedder)
    question = Question(question_id="q-late-claim", text=QUESTION, collections=["handbook"])

    reader = open_index(s, embedder=embedder)
    try:
        before = _answer(s, reader, question)
    finally:
        reader.close()
    assert before.adapter is None
    assert not _has(before.answer, FACT), before.answer  # the base model misses it

    # Today: the user's 👎 with the right answer, then the admin accepts it.
    store = FeedbackStore(feedback_path(s))
    store.record(
        question_id=question.question_id,
        user="U1",
        vote=-1,
        channel="C1",
        team="T1",
        message_ts="1.0",
        answer=before.model_dump(mode="json"),
    )
    assert store.suggest(question_id=question.question_id, user="U1", suggestion=CORRECTION)
    pending = tmp_path / "pending.jsonl"
    assert review_export(s, pending) == 1
    rows = [json.loads(line) | {"decision": "accept"} for line in pending.read_text().splitlines()]
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert review_apply(s, reviewed, "ops-admin")["accepted"] == 1

    # Tonight: the refresh, its gate as configured for production.
    report = run_refresh(s, embedder=embedder)
    assert report.status == "promoted", (report.reason, report.metrics, report.training)
    assert registry.current_version(s) == report.version
    (pair,) = [
        p for p in read_pairs(Path(report.files["pairs"])) if p.teacher == "feedback:correction"
    ]
    assert pair.question == QUESTION and _has(pair.answer, FACT)
    assert pair.scores["reviewer"] == "ops-admin" and pair.scores["user"] == "U1"
    examples = [
        json.loads(line)
        for line in open(report.files["examples"], encoding="utf-8")
        if json.loads(line)["pair_id"] == pair.pair_id
    ]
    # Trained on (never held out), with its passage, REVIEWED_REPEATS times.
    assert len(examples) == REVIEWED_REPEATS and {e["kind"] for e in examples} == {"gold"}
    assert report.examples["reviewed"] == REVIEWED_REPEATS
    assert report.metrics["candidate"]["feedback_f1"] > report.metrics["base"]["feedback_f1"]

    # The next day: the same question, the real answer path, the promoted adapter.
    reader = open_index(s, embedder=embedder)
    try:
        after = _answer(s, reader, question, registry.current_adapter(s))
    finally:
        reader.close()
    assert after.adapter == report.version and not after.abstained
    assert _has(after.answer, FACT), after.answer
