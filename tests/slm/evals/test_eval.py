"""The evaluation harness over a real temporary index (real MiniLM, real unstructured parse).

A tiny SQuAD v1.1 file written here (three invented passages, five questions) keeps it
fast. Where the scores themselves are the point, an "oracle" fake generator answers with
the gold answer exactly when the gold passage is in its prompt, so every figure has a
known right value; the real SmolLM2 model runs once to prove the harness works with it.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

from slm.evals.evalset import EVAL_COLLECTION, HELDOUT_COLLECTION, prepare_eval
from slm.evals.evaluate import eval_command
from slm.evals.history import history_path, read_history
from slm.evals.runner import run_eval
from slm.serving.prompt import NOT_FOUND
from tests.conftest import make_settings
from tests.support.fakes import FakeGenerator

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY = {
    "version": "1.1",
    "data": [
        {
            "title": "Kestrel_Point_Lighthouse",
            "paragraphs": [
                {
                    "context": (
                        "The Kestrel Point lighthouse was built in 1887 by the engineer Miriam "
                        "Holt. Its lamp stands 41 metres above the sea and can be seen from 22 "
                        "nautical miles away. The old keeper's cottage now houses a small museum "
                        "about shipwrecks on the north coast."
                    ),
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Who built the Kestrel Point lighthouse?",
                            "answers": [
                                {"text": "Miriam Holt", "answer_start": 0},
                                {"text": "the engineer Miriam Holt", "answer_start": 0},
                            ],
                        },
                        {
                            "id": "q2",
                            "question": "From how far away can the Kestrel Point lamp be seen?",
                            "answers": [{"text": "22 nautical miles", "answer_start": 0}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Vellmoor_Cooperative",
            "paragraphs": [
                {
                    "context": (
                        "The Vellmoor apple cooperative has 130 member farms in the valley. "
                        "Members deliver their harvest to the pressing hall in October, and the "
                        "cider is bottled the following March. The best-known variety grown by "
                        "the cooperative is the Amber Pippin."
                    ),
                    "qas": [
                        {
                            "id": "q3",
                            "question": (
                                "How many member farms does the Vellmoor apple cooperative have?"
                            ),
                            "answers": [{"text": "130", "answer_start": 0}],
                        },
                        {
                            "id": "q4",
                            "question": "In which month is the Vellmoor cider bottled?",
                            "answers": [{"text": "March", "answer_start": 0}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Northern_Comet",
            "paragraphs": [
                {
                    "context": (
                        "The Northern Comet sleeper train leaves Aldgrave every evening at 21:40 "
                        "and reaches the coast at 06:15. Each of its carriages has twelve cabins "
                        "with two berths, and breakfast is served in the dining car."
                    ),
                    "qas": [
                        {
                            "id": "q5",
                            "question": "At what time does the Northern Comet leave Aldgrave?",
                            "answers": [{"text": "21:40", "answer_start": 0}],
                        },
                    ],
                }
            ],
        },
    ],
}


def _gold() -> dict[str, tuple[str, str]]:
    """question -> (first gold answer, the start of its passage)."""
    out = {}
    for article in TINY["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                out[q["question"]] = (q["answers"][0]["text"], p["context"][:40])
    return out


def oracle() -> FakeGenerator:
    """Answers "<gold> [n]" when the gold passage is passage [n] of the prompt, else NOT_FOUND."""
    gold = _gold()

    def reply(messages: list[dict[str, str]]) -> str:
        prompt = "\n".join(m["content"] for m in messages)
        question = next(q for q in gold if q in prompt)
        answer, passage_start = gold[question]
        at = prompt.find(passage_start)
        if at < 0:
            return NOT_FOUND
        marks = re.findall(r"\[(\d+)\]", prompt[:at])
        return f"{answer} [{marks[-1]}]" if marks else answer

    return FakeGenerator(reply)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def eval_set(qa_file, embedder, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("prep"))
    prepared = prepare_eval(s, qa_file, abstain=1, embedder=embedder, progress=False)
    yield prepared
    prepared.close()


@pytest.fixture()
def settings(tmp_path):  # no Redis needed here
    # The metrics are checked against known answers: the oracle's reply alone, without the
    # evidence quote the bot adds (model.quote_evidence), which the real-model tests keep.
    return make_settings(tmp_path / "data", model={"quote_evidence": False})


def test_prepare_indexes_one_document_per_passage_and_hides_the_heldout(eval_set) -> None:
    stats = eval_set.retriever.stats()
    assert stats["documents"] == 3
    assert stats["collections"][EVAL_COLLECTION]["documents"] == 2
    assert stats["collections"][HELDOUT_COLLECTION]["documents"] == 1
    assert len(eval_set.questions) == 5
    (held,) = eval_set.heldout
    # The held-out question's passage cannot be found from the collection it may search...
    hits = eval_set.retriever.search(held.question, k=5, collections=[EVAL_COLLECTION])
    assert hits and all(eval_set.source_to_pid[h.chunk.source] != held.pid for h in hits)
    # ...but every other question sees it, titled after the article.
    hits = eval_set.retriever.search(held.question, k=5)
    assert eval_set.source_to_pid[hits[0].chunk.source] == held.pid
    assert hits[0].chunk.title == eval_set.passages[held.pid].title
    assert "_" not in hits[0].chunk.title


def test_an_oracle_scores_perfectly_on_every_metric(eval_set, settings, embedder) -> None:
    report = run_eval(
        settings,
        eval_set.qa_path,
        eval_set=eval_set,
        generator=oracle(),
        embedder=embedder,
        progress=False,
    )
    assert report.answers["n"] == 5
    assert report.retrieval["recall@1"] == 1.0 and report.retrieval["recall@5"] == 1.0
    assert report.answers["em"] == 1.0
    assert report.answers["f1"] == pytest.approx(1.0)
    assert report.answers["contains"] == 1.0
    assert report.answers["cited_gold"] == 1.0
    assert report.answers["abstained"] == 0.0 and report.answers["errors"] == 0
    assert report.similarity["acceptable"] == 1.0
    assert report.abstention == {
        "n": 1,
        "correct": 1.0,
        "before_model": report.abstention["before_model"],
    }
    assert all(item.bucket == "acceptable" for item in report.items if item.kind == "answerable")
    for key in ("total", "retrieve", "prompt_build", "generate", "first_token"):
        assert report.latency_ms[key]["n"] == 5, key
    assert report.tokens["mean_prompt"] > 0
    assert report.config["answer_mode"] == "generate"  # the oracle writes, it cannot read
    assert report.summary()["answer_mode"] == "generate"
    # the full report and the history line were written
    data = report.to_dict()
    assert len(data["items"]) == 6 and json.dumps(data)
    assert "items" not in report.to_dict(items=False)
    (line,) = read_history(history_path(settings))
    assert line["f1"] == 1.0 and line["recall@5"] == 1.0 and line["correct_abstention"] == 1.0
    assert len(list((settings.data_dir / "eval" / "runs").glob("eval-*.json"))) == 1


def test_wrong_answers_score_zero_and_history_is_plotted(eval_set, settings, embedder) -> None:
    wrong = FakeGenerator(lambda messages: "Purple elephants dance on Tuesdays [1].")
    first = run_eval(
        settings,
        eval_set.qa_path,
        eval_set=eval_set,
        generator=wrong,
        embedder=embedder,
        progress=False,
        label="wrong",
    )
    assert (
        first.answers["em"] == 0.0
        and first.answers["f1"] == 0.0
        and first.answers["contains"] == 0.0
    )
    assert first.similarity["unacceptable"] == 1.0
    assert not (settings.data_dir / "eval" / "history.png").exists()  # one run: nothing to compare
    run_eval(
        settings,
        eval_set.qa_path,
        eval_set=eval_set,
        generator=oracle(),
        embedder=embedder,
        progress=False,
    )
    runs = read_history(history_path(settings))
    assert [r["label"] for r in runs] == ["wrong", None]
    assert [r["f1"] for r in runs] == [0.0, 1.0]
    assert (settings.data_dir / "eval" / "history.png").read_bytes()[:8] == PNG_MAGIC


def test_the_real_model_runs_through_the_harness(eval_set, embedder, tmp_path) -> None:
    # Short answers: this checks the harness with the real model, not the model's quality.
    settings = make_settings(tmp_path / "data", model={"max_tokens": 24})
    report = run_eval(
        settings, eval_set.qa_path, eval_set=eval_set, embedder=embedder, progress=False
    )
    assert report.config["max_tokens"] == 24
    assert report.config["answer_mode"] == "read"  # the default, which the real model can do
    assert report.config["model"].endswith(".gguf") and report.config["threads"] >= 1
    assert report.answers["n"] == 5 and report.abstention["n"] == 1
    assert 0.0 <= report.answers["f1"] <= 1.0
    assert sum(report.similarity.values()) == pytest.approx(1.0)
    assert report.latency_ms["total"]["p50"] > 0 and report.latency_ms["retrieve"]["p50"] > 0
    if report.tokens["model_calls"]:
        assert report.latency_ms["first_token"]["p50"] > 0
    # Read mode scores phrases with the model and writes no tokens: Answer.prompt_tokens is
    # only counted when the model generates.
    assert report.tokens["mean_prompt"] in (0, None)
    chart = report.write_chart(tmp_path / "out" / "chart.png")
    assert chart.read_bytes()[:8] == PNG_MAGIC
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(report.table())
    text = console.export_text()
    assert "recall@5" in text and "acceptable" in text and "correct abstentions" in text


def test_current_index_counts_chunks_holding_the_answer(eval_set, embedder, tmp_path) -> None:
    # The prepared set's temporary index is an ordinary data dir: evaluate it as "current".
    current = make_settings(eval_set.workdir / "data")
    report = run_eval(
        current,
        eval_set.qa_path,
        index="current",
        generator=oracle(),
        embedder=embedder,
        progress=False,
        history=False,
    )
    assert report.index_mode == "current" and report.index_version == eval_set.index_version
    assert report.retrieval["relevance"] == "chunk contains a gold answer"
    assert report.retrieval["recall@5"] == 1.0
    assert report.abstention["n"] == 0 and report.abstention["correct"] is None
    assert report.answers["cited_gold"] is None  # no passage ids to check citations against
    assert eval_set.workdir.is_dir()  # a borrowed index is never deleted


def test_eval_command_prints_json_builds_and_removes_its_temp_index(
    qa_file, settings, embedder, tmp_path, capsys
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("lorebot-eval-*"))
    chart = tmp_path / "chart.png"
    report = eval_command(
        settings, qa_file, limit=3, as_json=True, chart=chart, generator=oracle(), embedder=embedder
    )
    data = json.loads(capsys.readouterr().out)
    assert data["answers"]["n"] == 3 and data["answers"]["em"] == 1.0
    assert data["index"]["mode"] == "temp" and data["index"]["version"] == report.index_version
    assert "items" not in data
    assert chart.read_bytes()[:8] == PNG_MAGIC
    assert set(Path(tempfile.gettempdir()).glob("lorebot-eval-*")) - before == set()


def test_eval_command_reports_a_bad_file_as_a_domain_error(settings, tmp_path) -> None:
    from lorebot.errors import LorebotError

    with pytest.raises(LorebotError) as err:
        eval_command(settings, tmp_path / "missing.json", generator=oracle())
    assert "does not exist" in err.value.one_line()
    with pytest.raises(LorebotError) as err:
        eval_command(settings, tmp_path / "missing.json", index="elsewhere", generator=oracle())
    assert "--index" in err.value.one_line()


@pytest.mark.shared_data
@pytest.mark.slow
def test_xquad_sample_with_the_real_model(shared_data, embedder, tmp_path) -> None:
    qa = shared_data / "qa" / "xquad-en" / "xquad.en.json"
    if not qa.is_file():
        pytest.skip(f"{qa} is absent")
    settings = make_settings(tmp_path / "data", model={"max_tokens": 32})
    report = run_eval(settings, qa, limit=10, abstain=3, embedder=embedder, progress=False)
    assert report.questions_in_file > 1000
    assert report.answers["n"] == 10 and report.abstention["n"] == 3
    assert len(report.items) == 13
    # XQuAD-en's passages are easy to retrieve (0.985 recall@5 in BASELINES.md).
    assert report.retrieval["recall@5"] >= 0.8
    assert report.answers["errors"] == 0


def test_lorebot_eval_cli_with_the_real_model(qa_file, tmp_path) -> None:
    """The console command end to end: real MiniLM, real SmolLM2, JSON on stdout, a PNG."""
    import subprocess
    import sys

    from tests.conftest import child_env

    env = child_env(tmp_path / "data", "redis://127.0.0.1:1/0", LOREBOT_MODEL__MAX_TOKENS="24")
    chart = tmp_path / "run.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorebot",
            "eval",
            str(qa_file),
            "--limit",
            "2",
            "--json",
            "--chart",
            str(chart),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data["answers"]["n"] == 2 and data["answers"]["errors"] == 0
    assert 0.0 <= data["retrieval"]["recall@5"] <= 1.0
    assert chart.read_bytes()[:8] == PNG_MAGIC
    missing = subprocess.run(
        [sys.executable, "-m", "lorebot", "eval", str(tmp_path / "nope.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
