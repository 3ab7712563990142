"""A real question, end to end: real redis-server, real `lorebot worker` subprocess,
the real SmolLM2 model and MiniLM embeddings, over an index of the sample handbook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lorebot.types import Question

pytestmark = pytest.mark.integration

QA = json.loads((Path(__file__).parent.parent / "fixtures" / "sample_qa.json").read_text())


@pytest.fixture(scope="module")
def worker(sample_data_dir, redis_server, tmp_path_factory):
    from tests.conftest import WorkerProcess

    w = WorkerProcess(
        sample_data_dir, redis_server.url, tmp_path_factory.mktemp("wlog") / "worker.log"
    )
    yield w.wait_ready()
    w.stop()


@pytest.fixture(scope="module")
def ask(worker, sample_data_dir, redis_server):
    from lorebot.cli.ask import submit_question
    from tests.conftest import make_settings

    s = make_settings(sample_data_dir, redis_server.url)

    def _ask(text: str, **kw):
        return submit_question(s, Question(text=text, **kw), timeout=120)

    return _ask


@pytest.mark.parametrize("case", QA["answerable"][:4], ids=lambda c: c["source"])
def test_answer_cites_the_one_right_document(ask, case):
    # The real worker answers, the answer states the key fact (the short answer or the
    # quoted sentence it was read from; in generate mode the model's sentence or the quote),
    # and the first source is the one document that holds the answer.
    answer = ask(case["question"])
    assert not answer.abstained, answer.answer
    assert any(fact.lower() in answer.answer.lower() for fact in case["key_facts"]), answer.answer
    assert answer.citations, "an answer must carry citations"
    top = answer.citations[0]
    assert top.cited, answer.citations
    assert Path(top.source).name == case["source"], [c.source for c in answer.citations]
    assert answer.index_version
    assert answer.timings_ms["generate"] > 0 and answer.timings_ms["retrieve"] > 0


def test_question_outside_the_handbook_is_refused_with_nearest_sources(ask):
    answer = ask(QA["unanswerable"][0]["question"])
    assert answer.abstained
    assert all(not c.cited for c in answer.citations)


def test_collection_filter_reaches_the_worker(ask):
    answer = ask(QA["answerable"][0]["question"], collections=["no-such-collection"])
    assert answer.abstained
    assert answer.citations == []


def test_cli_ask_json_shape(worker, sample_data_dir, redis_server):
    import subprocess
    import sys

    from tests.conftest import child_env

    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "lorebot", "ask", "--json", QA["answerable"][0]["question"]],
        env=child_env(sample_data_dir, redis_server.url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert set(payload) >= {
        "question",
        "answer",
        "citations",
        "index_version",
        "adapter",
        "timings_ms",
    }
    assert set(payload["timings_ms"]) >= {"retrieve", "generate", "total"}
    first = payload["citations"][0]
    assert set(first) >= {"source", "title", "chunk_id", "score", "text"}
    assert_timings_add_up(payload["timings"], wall)


def assert_timings_add_up(t: dict, wall: float) -> None:
    """`ask --json`'s timings split the process's own wall time (no speed is asserted)."""
    top = ["startup_s", "settings_s", "connect_s", "queue_s", "worker_s", "other_s"]
    inside = ["index_load_s", "embedder_load_s", "model_load_s", "retrieve_s", "generate_s"]
    assert set(t) == {*top, *inside, "first_token_s", "total_s"}, t
    assert all(t[k] >= 0 for k in top[:-1] + inside), t
    # total_s is measured on its own (process start -> answer ready); the parts explain it.
    assert sum(t[k] for k in top) == pytest.approx(t["total_s"], abs=0.005)
    assert abs(t["other_s"]) <= 0.05 + 0.1 * t["total_s"], t
    assert 0 < t["total_s"] <= wall, (t, wall)
    assert t["startup_s"] > 0 and t["worker_s"] > 0
    assert sum(t[k] for k in inside) <= t["worker_s"] + 0.005, t
    assert t["first_token_s"] is not None and t["first_token_s"] <= t["worker_s"], t
