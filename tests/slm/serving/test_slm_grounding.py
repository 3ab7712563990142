"""The check that an answer names no number or name its passages do not contain."""

from __future__ import annotations

import pytest

from slm.serving.grounding import GroundingCheck, unsupported_terms

PASSAGE = (
    "Full-time employees of Quillfeather Ltd receive 27 days of paid annual leave. "
    "Requests go to your line manager two weeks in advance. Claims above 1,500 euros need "
    "approval from Dana O'Neill's office in Leeds."
)


@pytest.mark.parametrize(
    "answer",
    [
        "Full-time employees receive 27 days of paid annual leave [1].",
        "Requests go to the line manager 2 weeks in advance [1].",
        "Claims above 1500 euros need approval from Dana O'Neill [1].",
        "Claims above 1,500 euros need approval [2].",
        "According to Source 1, Quillfeather's office in Leeds approves them.",
        "Employees get 27 days. Leave requests go to the line manager.",
        "Yes, it is in the passage [1].",
    ],
)
def test_answers_using_only_passage_facts_pass(answer: str) -> None:
    assert unsupported_terms(answer, [PASSAGE]) == []


@pytest.mark.parametrize(
    ("answer", "missing"),
    [
        ("The wifi password is 123456.", ["123456"]),
        ("Employees get 27 days, up to 100 days in total [1].", ["100"]),
        ("Claims are approved by the CEO, James Parker.", ["CEO", "James", "Parker"]),
        ("Leave is 27 days, set by the Berlin office.", ["Berlin"]),
        ("It costs 2.5 million.", ["2.5"]),
    ],
)
def test_invented_numbers_and_names_are_reported(answer: str, missing: list[str]) -> None:
    assert unsupported_terms(answer, [PASSAGE]) == missing


def test_the_question_counts_as_a_source() -> None:
    assert unsupported_terms("Leave for the Zephyr team is 27 days.", [PASSAGE]) == ["Zephyr"]
    assert (
        unsupported_terms(
            "Leave for the Zephyr team is 27 days.", [PASSAGE, "How much leave does Zephyr get?"]
        )
        == []
    )


def test_a_capitalised_word_starting_a_sentence_is_not_checked() -> None:
    assert unsupported_terms("Unfortunately, leave is 27 days. Sadly so.", [PASSAGE]) == []


def test_supported_prefix_cuts_at_the_clause_before_the_first_invention() -> None:
    check = GroundingCheck([PASSAGE])
    assert (
        check.supported_prefix(
            "Full-time employees receive 27 days of paid annual leave, up to 100 days in all."
        )
        == "Full-time employees receive 27 days of paid annual leave."
    )
    assert (
        check.supported_prefix(
            "Requests go to your line manager two weeks ahead [1]. The CEO signs them."
        )
        == "Requests go to your line manager two weeks ahead [1]."
    )
    assert check.supported_prefix("The wifi password is 123456.") is None  # nothing worth keeping
    assert (
        check.supported_prefix("Employees receive 27 days of paid annual leave.") is None
    )  # nothing to cut
