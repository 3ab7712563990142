"""Checks of tests/fixtures/staff_questions.json, the staff-question evaluation set.

The structural test always runs. The data test (marked ``shared_data``) checks every gold
page and key fact against the real handbooks in ../shared/data/corpora and skips cleanly
when that folder is absent.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "staff_questions.json"
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpora"

HANDBOOKS = ("18f-handbook", "sourcegraph-handbook")
SPLITS = ("tune", "test")
KINDS = ("fact", "yes_no", "who", "how")
ANSWERABLE_FIELDS = ("id", "question", "corpus", "document", "key_facts", "kind", "topic", "split")
UNANSWERABLE_FIELDS = ("id", "question", "corpus", "unanswerable", "topic", "split")


def _load() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def check_structure(data: dict) -> None:
    assert set(data) == {"description", "answerable", "unanswerable"}
    assert _nonempty_str(data["description"])
    answerable, unanswerable = data["answerable"], data["unanswerable"]

    assert len(answerable) == 60
    assert len(unanswerable) == 15

    ids = [item["id"] for item in answerable + unanswerable]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicate ids: {duplicates}"
    questions = [_norm(item["question"]) for item in answerable + unanswerable]
    assert len(set(questions)) == len(questions), "duplicate questions"

    for item in answerable:
        missing = [f for f in ANSWERABLE_FIELDS if f not in item]
        assert not missing, f"{item.get('id')}: missing {missing}"
        for field in ("id", "question", "document", "topic"):
            assert _nonempty_str(item[field]), f"{item['id']}: empty {field}"
        assert item["corpus"] in HANDBOOKS, item["id"]
        assert item["split"] in SPLITS, item["id"]
        assert item["kind"] in KINDS, item["id"]
        assert not item.get("unanswerable", False), item["id"]
        facts = item["key_facts"]
        assert isinstance(facts, list) and 1 <= len(facts) <= 2, item["id"]
        assert all(_nonempty_str(f) for f in facts), item["id"]
        assert not Path(item["document"]).is_absolute(), item["id"]
        assert item["document"].endswith(".md"), item["id"]
        if item["kind"] == "yes_no":
            assert item.get("yes_no") in ("yes", "no"), item["id"]
        else:
            assert "yes_no" not in item, item["id"]

    for item in unanswerable:
        missing = [f for f in UNANSWERABLE_FIELDS if f not in item]
        assert not missing, f"{item.get('id')}: missing {missing}"
        for field in ("id", "question", "topic"):
            assert _nonempty_str(item[field]), f"{item['id']}: empty {field}"
        assert item["unanswerable"] is True, item["id"]
        assert item["corpus"] in HANDBOOKS, item["id"]
        assert item["split"] in SPLITS, item["id"]
        for field in ("document", "key_facts", "kind", "yes_no"):
            assert field not in item, f"{item['id']}: unexpected {field}"

    per_split = Counter(item["split"] for item in answerable)
    assert per_split == {"tune": 30, "test": 30}
    per_handbook_split = Counter((item["corpus"], item["split"]) for item in answerable)
    for handbook in HANDBOOKS:
        for split in SPLITS:
            assert per_handbook_split[(handbook, split)] == 15, (handbook, split)
    assert Counter(item["split"] for item in unanswerable) == {"tune": 7, "test": 8}
    assert {item["corpus"] for item in unanswerable} == set(HANDBOOKS)


def check_against_corpora(data: dict, corpora: Path) -> None:
    problems = []
    for item in data["answerable"]:
        page = corpora / item["corpus"] / item["document"]
        if not page.is_file():
            problems.append(f"{item['id']}: no gold page {page}")
            continue
        text = _norm(page.read_text(encoding="utf-8", errors="replace"))
        for fact in item["key_facts"]:
            if _norm(fact) not in text:
                problems.append(f"{item['id']}: key fact {fact!r} not in {item['document']}")
    assert not problems, "\n".join(problems)


def test_staff_questions_structure():
    check_structure(_load())


@pytest.mark.shared_data
def test_staff_questions_gold_pages_contain_key_facts():
    if not CORPORA.is_dir():
        pytest.skip(f"{CORPORA} is absent (real data lives beside the repository)")
    check_against_corpora(_load(), CORPORA)
