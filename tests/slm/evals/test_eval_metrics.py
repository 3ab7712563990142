"""The evaluation metrics against values worked out by hand, and the QA-file helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm.evals import metrics as m
from slm.evals.squad import (
    EvalDataError,
    Passage,
    QAItem,
    choose_heldout,
    load_squad,
    sample_questions,
)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an   apple, a pear ", "apple pear"),
        ("Theatre", "theatre"),  # "the" inside a word is not an article
        ("$1,000.50", "100050"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert m.normalize_answer(text) == expected


def test_strip_citations_removes_only_numbered_marks() -> None:
    assert m.strip_citations("Staff get 25 days [1].") == "Staff get 25 days."
    assert m.strip_citations("Two sources [1, 3] and [2-4]") == "Two sources and"
    assert m.strip_citations("an [a] array") == "an [a] array"


# ----------------------------------------------------------------------------- EM / F1
def test_exact_match_after_normalisation_and_over_several_golds() -> None:
    assert m.exact_match("the Broncos.", "Broncos") == 1.0
    assert m.exact_match("Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert m.exact_match("Denver", ["Broncos", "Denver Broncos"]) == 0.0


def test_token_f1_hand_computed() -> None:
    # prediction tokens: denver broncos won ; gold: denver broncos
    # overlap 2, precision 2/3, recall 2/2 -> F1 = 2*(2/3*1)/(2/3+1) = 0.8
    assert m.token_f1("The Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count once per occurrence: pred "x y y" vs gold "y y z":
    # overlap 2 (y, y), P = 2/3, R = 2/3 -> F1 = 2/3
    assert m.token_f1("x y y", "y y z") == pytest.approx(2 / 3)
    # best gold wins: 0.8 against "Denver Broncos", 0 against "Carolina"
    assert m.token_f1("The Denver Broncos won", ["Carolina", "Denver Broncos"]) == pytest.approx(
        0.8
    )
    assert m.token_f1("Carolina Panthers", "Denver Broncos") == 0.0


def test_token_f1_empty_rules() -> None:
    assert m.token_f1("", "Broncos") == 0.0
    assert m.token_f1("the", "a") == 1.0  # both normalise to nothing: SQuAD counts agreement


def test_contains_answer_on_word_boundaries() -> None:
    assert m.contains_answer("They scored 308 points [1].", ["308"])
    assert not m.contains_answer("They scored 3080 points.", ["308"])
    assert m.contains_answer("It was the Denver Broncos.", ["Denver Broncos"])
    assert not m.contains_answer("anything", [""])


# ----------------------------------------------------------------------------- retrieval
def test_recall_at_k() -> None:
    ranked = ["p3", "p7", "p1", "p9", "p2", "p5"]
    assert m.recall_at_k(ranked, "p3", 1) == 1.0
    assert m.recall_at_k(ranked, "p7", 1) == 0.0
    assert m.recall_at_k(ranked, "p2", 5) == 1.0
    assert m.recall_at_k(ranked, "p5", 5) == 0.0
    assert m.recall_at_k(ranked, {"p5", "p1"}, 3) == 1.0  # any of several relevant ids
    assert m.recall_at_k(ranked, "p3", 0) == 0.0
    assert m.recall_at_k([], "p3", 5) == 0.0


def test_first_relevant_rank() -> None:
    assert m.first_relevant_rank([False, False, True, True]) == 3
    assert m.first_relevant_rank([False]) is None


# ----------------------------------------------------------------------------- similarity
@pytest.mark.parametrize(
    ("cos", "bucket"),
    [
        (0.93, "acceptable"),
        (0.5, "acceptable"),
        (0.49, "somewhat"),
        (0.4, "somewhat"),
        (0.399, "unacceptable"),
        (-0.2, "unacceptable"),
    ],
)
def test_similarity_bucket_edges(cos: float, bucket: str) -> None:
    assert m.similarity_bucket(cos) == bucket


def test_bucket_shares() -> None:
    shares = m.bucket_shares([0.9, 0.55, 0.45, 0.1, 0.3])
    assert shares == {
        "acceptable": pytest.approx(0.4),
        "somewhat": pytest.approx(0.2),
        "unacceptable": pytest.approx(0.4),
    }
    assert m.bucket_shares([]) == {"acceptable": 0.0, "somewhat": 0.0, "unacceptable": 0.0}


def test_cosine() -> None:
    assert m.cosine([1, 0], [0, 1]) == 0.0
    assert m.cosine([3, 4], [6, 8]) == pytest.approx(1.0)
    # (1,1)·(1,0) = 1; |(1,1)| = sqrt 2 -> 1/sqrt 2
    assert m.cosine([1, 1], [1, 0]) == pytest.approx(2**-0.5)
    assert m.cosine([0, 0], [1, 0]) == 0.0


# ----------------------------------------------------------------------------- percentiles
def test_percentiles_hand_computed() -> None:
    values = [40, 10, 30, 20]  # sorted 10 20 30 40
    assert m.percentile(values, 50) == pytest.approx(25.0)  # halfway between 20 and 30
    # p95: position 0.95 * 3 = 2.85 -> 30 + 0.85 * 10
    assert m.percentile(values, 95) == pytest.approx(38.5)
    assert m.percentile(values, 0) == 10 and m.percentile(values, 100) == 40
    assert m.percentile([7], 95) == 7
    assert m.percentile([], 50) is None
    with pytest.raises(ValueError):
        m.percentile(values, 101)


def test_latency_summary() -> None:
    s = m.latency_summary([100, 200, 300])
    assert s == {"n": 3, "p50": 200.0, "p95": pytest.approx(290.0), "mean": 200.0}
    assert m.latency_summary([])["p50"] is None


# ----------------------------------------------------------------------------- the QA file
def _squad(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_squad_reads_passages_questions_and_deduplicated_answers(tmp_path: Path) -> None:
    path = _squad(
        tmp_path,
        {
            "data": [
                {
                    "title": "Night_Trains",
                    "paragraphs": [
                        {
                            "context": "The sleeper leaves at 21:40.",
                            "qas": [
                                {
                                    "id": "a",
                                    "question": "When does the  sleeper leave?",
                                    "answers": [
                                        {"text": "21:40"},
                                        {"text": "21:40"},
                                        {"text": "at 21:40"},
                                    ],
                                },
                                {"id": "b", "question": "Impossible?", "answers": []},
                            ],
                        },
                        {"context": "   ", "qas": []},
                    ],
                }
            ]
        },
    )
    passages, items = load_squad(path)
    assert passages == [Passage("p00000", "Night Trains", "The sleeper leaves at 21:40.")]
    assert items == [QAItem("a", "When does the sleeper leave?", ("21:40", "at 21:40"), "p00000")]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"rows": []}', "no 'data' list"),
        ('{"data": [{"title": "x"}]}', "SQuAD v1.1"),
    ],
)
def test_load_squad_rejects_bad_files_with_a_fix(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    path = tmp_path / "qa.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalDataError) as err:
        load_squad(path)
    assert needle in err.value.message
    assert err.value.fix


def _items(n: int) -> list[QAItem]:
    return [QAItem(f"q{i}", f"question {i}", (f"answer{i}",), f"p{i}") for i in range(n)]


def test_sample_questions_is_deterministic_and_complete_without_limit() -> None:
    items = _items(50)
    first = sample_questions(items, 10, seed=0)
    assert first == sample_questions(items, 10, seed=0)
    assert first != sample_questions(items, 10, seed=1)
    assert len({i.qid for i in first}) == 10
    assert sample_questions(items, None, seed=0) == items
    assert sample_questions(items, 500, seed=3) == items
    with pytest.raises(EvalDataError):
        sample_questions(items, 0, seed=0)


def test_choose_heldout_skips_answers_found_in_other_passages() -> None:
    passages = [
        Passage("p0", "A", "The lamp was lit in 1887 by Miriam Holt."),
        Passage("p1", "B", "The cooperative has 130 farms; it was founded in 1887."),
        Passage("p2", "C", "The train leaves at 21:40."),
    ]
    items = [
        QAItem("q0", "When was the lamp lit?", ("1887",), "p0"),  # 1887 also in p1: never held out
        QAItem("q1", "How many farms?", ("130",), "p1"),
        QAItem("q2", "When does the train leave?", ("21:40",), "p2"),
        QAItem("q3", "Who lit the lamp?", ("Miriam Holt",), "p0"),
    ]
    for seed in range(5):
        chosen = choose_heldout(passages, items, 10, seed)
        assert "q0" not in {c.qid for c in chosen}
        assert len({c.pid for c in chosen}) == len(chosen) == 3  # one per passage
    assert choose_heldout(passages, items, 0, 0) == []
    assert len(choose_heldout(passages, items, 2, 0)) == 2
