"""Issue 16, item 4: a question thumbs-downed with a correction today is answered with the
corrected fact after the next refresh (real model, real refresh, small budget).

On the read path (the default answer mode) the reader copies a phrase of one passage
sentence. For "What happens if I submit a claim late?" it reads the 45-day deadline, not
that older claims need the Finance Director's approval: the test first asserts that, so
it could fail. Then the user's 👎 with a suggested answer, the admin's review
(``lorebot feedback review``'s export and apply), one nightly refresh (the code the worker
runs: publishing reviewed answers, pairs, RAFT examples, LoRA, GGUF export, parity, the
gate, the registry) and the same question through the answer path as the worker calls it:
the adapter now serving (if the gate promoted one) and the reviewed answers the refresh
published. The answer reads the correction, cites it as a reviewed answer with its
provenance and the handbook passage that states it; the correction also became training
examples. Asked where the correction was not given (another collection), it is not shown.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorebot import assets
from lorebot.types import Question
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

#: The page holding the fact (collection "handbook") and one in another collection.
DOCS = {"expenses.md": "handbook", "remote_work.md": "remote"}
QUESTION = "What happens if I submit a claim late?"
#: What the corrected answer must state (and the base answer does not).
FACT = "Finance Director"
CORRECTION = (
    "Claims older than 45 days need written approval from the Finance Director and may be rejected."
)

#: The nightly settings under a small budget: extraction-only pairs, a few LoRA steps, a
#: small gate. What the answer shows after the refresh does not depend on what the adapter
#: learnt in these steps (the reviewed answer is published whatever the gate decides).
TRAINING = {
    "collections": ["handbook"],
    "questions_per_chunk": 0,
    "extract_pairs": True,
    "batch_size": 2,
    "min_steps": 2,
    "max_steps": 2,
    "time_budget_s": 10,
    "learning_rate": 1e-3,
    "max_seq_len": 256,
    "eval_limit": 2,
    "xquad_path": None,
    # Ten more answers per model; tests/slm/test_leaks.py measures it with the real model.
    "injection_check": False,
}


def _answer(settings, reader, question: Question, adapter=None, reviewed=None):
    """The answer path as the answer task calls it (workers/tasks/answer.py)."""
    from slm.serving.answer import answer_question
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator.from_settings(
        settings,
        lora_path=adapter.path if adapter else None,
        adapter=adapter.version if adapter else None,
    )
    try:
        return answer_question(
            question,
            reader,
            gen,
            retrieval=settings.retrieval,
            model=settings.model,
            reviewed=reviewed,
        )
    finally:
        gen.close()


def _has(text: str, fact: str) -> bool:
    return " ".join(fact.lower().split()) in " ".join(text.lower().split())


def test_a_corrected_answer_is_stated_after_the_next_refresh(tmp_path, embedder):
    from ingest import Source, build_index
    from ingest.store import open_index
    from lorebot.feedback import FeedbackStore, feedback_path, review_apply, review_export
    from slm.serving.reviewed import for_settings
    from slm.training import registry
    from slm.training.pairs import read_pairs
    from slm.training.refresh import REVIEWED_REPEATS, run_refresh

    sources = []
    for name, collection in DOCS.items():
        folder = tmp_path / "docs" / collection
        folder.mkdir(parents=True)
        shutil.copy(assets.sample_docs_dir() / name, folder / name)
        sources.append(Source(path=folder, collection=collection))
    s = make_settings(tmp_path / "data", training=TRAINING)
    assert s.model.answer_mode == "read"  # the default answer path
    build_index(s, sources, progress=False, embedder=embedder)
    question = Question(question_id="q-late-claim", text=QUESTION, collections=["handbook"])

    reader = open_index(s, embedder=embedder)
    try:
        before = _answer(s, reader, question, reviewed=for_settings(s))
    finally:
        reader.close()
    assert before.adapter is None and not before.abstained
    assert not _has(before.answer, FACT), before.answer  # the reader quotes another sentence

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
    assert report.status in ("promoted", "rejected"), (report.reason, report.training)
    assert report.reviewed == {"published": 1, "unscoped": 0, "withheld": 0}
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

    # The next day: the same question, the answer path as the worker runs it.
    adapter = registry.current_adapter(s)
    assert (adapter is not None) == (report.status == "promoted")
    reader = open_index(s, embedder=embedder)
    try:
        after = _answer(s, reader, question, adapter, for_settings(s))
        elsewhere = _answer(
            s, reader, question.model_copy(update={"collections": ["remote"]}), None,
            for_settings(s),
        )  # fmt: skip
    finally:
        reader.close()
    assert after.adapter == (adapter.version if adapter else None) and not after.abstained
    assert _has(after.answer, FACT), after.answer
    assert after.short_answer and _has(CORRECTION, after.short_answer)  # a phrase the model read
    cited = [c for c in after.citations if c.cited]
    assert cited[0].title == "Reviewed answer" and QUESTION in cited[0].heading
    assert "accepted by ops-admin" in cited[0].source and "suggested by U1" in cited[0].source
    # the handbook passages that state it (the documents agree) are cited beside it
    assert len(cited) >= 2 and all(c.source == "expenses.md" for c in cited[1:])
    # Not where it was not given: a "remote" asker gets no reviewed answer.
    assert all(c.title != "Reviewed answer" for c in elsewhere.citations)
    assert not _has(elsewhere.answer, FACT)
