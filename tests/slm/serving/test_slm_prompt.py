"""The grounded prompt: numbering, the context token budget, bounded history."""

from __future__ import annotations

import re

from lorebot.types import Turn
from slm.serving.prompt import (
    HISTORY_TURN_TOKENS,
    MIN_PASSAGE_TOKENS,
    NOT_FOUND,
    SYSTEM_PROMPT,
    build_messages,
    focus_passage,
    is_not_found,
    select_passages,
    split_sentences,
    truncate_to_tokens,
)
from tests.support.fakes import FakeGenerator, make_hit, make_hits

count = FakeGenerator([]).count_tokens  # one token per word


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def passage_blocks(user_content: str) -> list[str]:
    body = user_content.split("Passages:\n", 1)[1].split("\n\nQuestion:", 1)[0]
    return body.split("\n\n")


def test_passages_are_numbered_with_title_and_heading_and_question_comes_last() -> None:
    hits = [
        make_hit("Annual leave is 25 days.", title="Leave policy", heading="Annual leave"),
        make_hit("Claims within 30 days.", title="Expenses", heading=""),
    ]
    messages, used = build_messages(
        "How much leave?", hits, [], context_tokens=500, count_tokens=count
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    user = messages[1]["content"]
    blocks = passage_blocks(user)
    assert blocks[0] == "[1] Leave policy > Annual leave\nAnnual leave is 25 days."
    assert blocks[1] == "[2] Expenses\nClaims within 30 days."
    assert user.index("Question: How much leave?") > user.index("[2] Expenses")
    assert used == hits


def test_system_prompt_is_identical_for_every_question_so_the_kv_cache_can_reuse_it() -> None:
    a, _ = build_messages("Q one?", make_hits(["x y"]), [], context_tokens=100, count_tokens=count)
    b, _ = build_messages(
        "Another question entirely?",
        make_hits(["p q r"]),
        [Turn(role="user", text="hi"), Turn(role="assistant", text="hello")],
        context_tokens=100,
        count_tokens=count,
    )
    assert a[0] == b[0] == {"role": "system", "content": SYSTEM_PROMPT}


def test_whole_passages_fit_first_then_the_last_one_is_truncated() -> None:
    hits = make_hits([words(40, "a"), words(40, "b"), words(40, "c"), words(40, "d")])
    budget = 43 * 2 + 3 + 30  # a block is 3 header words ("[1] Doc 1") + 40
    messages, used = build_messages("q?", hits, [], context_tokens=budget, count_tokens=count)
    blocks = passage_blocks(messages[1]["content"])
    assert [h.chunk.chunk_id for h in used] == ["c1", "c2", "c3"]
    assert len(blocks) == 3
    assert sum(count(b) for b in blocks) <= budget
    assert blocks[0].endswith("a39") and blocks[1].endswith("b39")
    assert blocks[2].startswith("[3] Doc 3\nc0 c1") and blocks[2].endswith("c28 …")
    assert "d0" not in messages[1]["content"]


def test_a_remainder_too_small_to_be_useful_is_dropped() -> None:
    hits = make_hits([words(40, "a"), words(40, "b")])
    budget = 43 + 3 + 1 + MIN_PASSAGE_TOKENS - 1  # header 3 words, ellipsis 1
    blocks, used = select_passages(hits, context_tokens=budget, count_tokens=count)
    assert len(used) == 1 and len(blocks) == 1


def test_the_top_passage_is_always_included_even_when_it_alone_exceeds_the_budget() -> None:
    hits = make_hits([words(300, "a"), words(10, "b")])
    blocks, used = select_passages(hits, context_tokens=50, count_tokens=count)
    assert [h.chunk.chunk_id for h in used] == ["c1"]
    assert count(blocks[0]) <= 50
    assert "b0" not in blocks[0]


def test_truncate_to_tokens_respects_a_non_word_tokenizer() -> None:
    def chars(text: str) -> int:  # a tokenizer where every character is a token
        return len(text)

    out = truncate_to_tokens("alpha beta gamma delta", 12, chars)
    assert out == "alpha beta"
    assert truncate_to_tokens("alpha", 0, chars) == ""
    assert truncate_to_tokens("short", 100, chars) == "short"


def test_history_is_bounded_cut_short_and_stripped_of_old_citation_marks() -> None:
    history = [
        Turn(role="user", text="first question?"),
        Turn(role="assistant", text="first answer [1]."),
        Turn(role="user", text="second question about leave?"),
        Turn(role="assistant", text="It is 25 days [2][3]. " + words(200, "x")),
    ]
    messages, _ = build_messages(
        "and for contractors?", make_hits(["p"]), history, context_tokens=100, count_tokens=count
    )
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "second question about leave?"
    assert messages[2]["content"].startswith("It is 25 days.")
    assert "[2]" not in messages[2]["content"]
    assert count(messages[2]["content"]) <= HISTORY_TURN_TOKENS
    assert "first" not in " ".join(m["content"] for m in messages)
    assert "Question: and for contractors?" in messages[3]["content"]


def test_history_never_makes_two_user_turns_in_a_row() -> None:
    history = [Turn(role="assistant", text="hello"), Turn(role="user", text="unanswered")]
    messages, _ = build_messages(
        "q?", make_hits(["p"]), history, context_tokens=100, count_tokens=count
    )
    assert [m["role"] for m in messages] == ["system", "user"]


def test_passage_text_whitespace_is_flattened() -> None:
    hits = [make_hit("line one\n\n\nline   two", title="T")]
    messages, _ = build_messages("q?", hits, [], context_tokens=100, count_tokens=count)
    assert "[1] T\nline one line two" in messages[1]["content"]
    # blank lines separate passages only, so a passage cannot fake a new [n] block
    assert len(re.findall(r"^\[\d+\]", messages[1]["content"], re.MULTILINE)) == 1


def test_is_not_found_recognises_the_fixed_phrase_and_close_variants() -> None:
    assert is_not_found(NOT_FOUND)
    assert is_not_found("Sorry, the passages do not mention it.")
    assert is_not_found("This is not mentioned in the documents.")
    assert not is_not_found("Annual leave is 25 days [1].")


def test_split_sentences_handles_prose_and_list_items() -> None:
    text = "Leave is 25 days. It starts in January! Ask HR?\n- item one\n- item two\n\nNew para"
    assert split_sentences(text) == [
        "Leave is 25 days.",
        "It starts in January!",
        "Ask HR?",
        "- item one",
        "- item two",
        "New para",
    ]
    assert split_sentences("Version 2.5 is out. See v3.") == ["Version 2.5 is out.", "See v3."]


def test_focus_keeps_the_sentences_sharing_most_words_with_the_question_in_order() -> None:
    text = (
        "The office is in Leeds. Parking is free. The canteen opens at noon. "
        "Annual leave for staff is 27 days. Leave requests go to your manager."
    )
    out = focus_passage(text, "How many days of annual leave do staff get?", keep=2)
    assert out == "Annual leave for staff is 27 days. Leave requests go to your manager."
    assert focus_passage("One. Two.", "anything", keep=3) == "One. Two."


def test_build_messages_focuses_passages_unless_told_not_to() -> None:
    text = "Sentence about parking. Sentence about lunch. Leave is 27 days. Sentence about desks."
    hits = [make_hit(text, title="Handbook")]
    focused, _ = build_messages(
        "How long is leave?", hits, [], context_tokens=200, count_tokens=count, focus=1
    )
    whole, _ = build_messages(
        "How long is leave?", hits, [], context_tokens=200, count_tokens=count, focus=None
    )
    assert "[1] Handbook\nLeave is 27 days.\n" in focused[1]["content"]
    assert "parking" not in focused[1]["content"]
    assert "Sentence about parking. Sentence about lunch. Leave is 27 days." in whole[1]["content"]


def test_user_message_ends_with_the_question_and_no_not_found_reminder() -> None:
    messages, _ = build_messages(
        "How long is leave?", make_hits(["p"]), [], context_tokens=50, count_tokens=count
    )
    assert messages[1]["content"].endswith("Question: How long is leave?")
    assert NOT_FOUND not in messages[1]["content"]
