"""The real answer model (SmolLM2-135M-Instruct Q4_1 through llama-cpp-python).

Passages here are written for the test (a fictional company), so the facts cannot come
from the model's pre-training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lorebot.assets import answer_model_path
from lorebot.errors import AssetMissingError, GenerationError
from lorebot.settings import ModelSettings, RetrievalSettings
from lorebot.types import Question
from slm.serving.answer import answer_question
from slm.serving.generator import LlamaGenerator
from slm.serving.prompt import SYSTEM_PROMPT, build_messages
from slm.serving.retrievers import StaticRetriever
from tests.support.fakes import make_hit

pytestmark = pytest.mark.integration

LEAVE = make_hit(
    "Full-time employees of Quillfeather Ltd receive 27 days of paid annual leave per "
    "calendar year. Part-time staff receive leave in proportion to their contracted hours. "
    "Requests go to your line manager at least two weeks in advance.",
    title="Leave policy",
    heading="Annual leave",
    chunk_id="leave-1",
)
EXPENSES = make_hit(
    "Expense claims at Quillfeather Ltd must be submitted within 45 days of the purchase, "
    "with the receipt attached. Claims above 500 euros need approval from a director.",
    title="Expenses policy",
    heading="Deadlines",
    chunk_id="exp-1",
)


def messages_for(question: str, hits, gen: LlamaGenerator, system: str | None = None):
    msgs, _ = build_messages(question, hits, [], context_tokens=600, count_tokens=gen.count_tokens)
    if system is not None:
        msgs[0] = {"role": "system", "content": system}
    return msgs


def test_streams_pieces_that_add_up_to_the_answer(generator: LlamaGenerator) -> None:
    pieces: list[str] = []
    msgs = messages_for(
        "How many days of paid annual leave do full-time employees get?", [LEAVE], generator
    )
    out = generator.generate(msgs, max_tokens=32, on_token=pieces.append)
    assert len(pieces) >= 2
    assert "".join(pieces).strip() == out.text
    assert 1 <= out.completion_tokens <= 32
    assert out.prompt_tokens == len(generator.tokenize(generator.render(msgs)))
    assert {"prompt", "decode", "first_token", "total"} <= out.timings_ms.keys()


def test_max_tokens_caps_the_completion(generator: LlamaGenerator) -> None:
    msgs = messages_for("Describe the leave policy in detail.", [LEAVE], generator)
    out = generator.generate(msgs, max_tokens=3)
    assert out.completion_tokens <= 3
    assert out.finish_reason in {"length", "stop"}


def test_answers_a_grounded_question_with_the_fact_from_the_passage(
    generator: LlamaGenerator,
) -> None:
    answer = answer_question(
        Question(text="How many days of paid annual leave do full-time employees get?"),
        StaticRetriever([LEAVE, EXPENSES], version="t1"),
        generator,
        retrieval=RetrievalSettings(),
        model=ModelSettings(max_tokens=48, answer_mode="generate"),  # the generating path
    )
    assert not answer.abstained, answer.answer
    assert "27" in answer.answer
    assert answer.citations and answer.citations[0].chunk_id == "leave-1"
    assert answer.index_version == "t1" and answer.adapter is None
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


def test_reads_the_short_answer_first_then_quotes_its_sentence(
    generator: LlamaGenerator,
) -> None:
    """The default mode with the real model: the short answer is a phrase of the passage,
    shown first, and the sentence it comes from follows, quoted and cited."""
    answer = answer_question(
        Question(text="How many days of paid annual leave do full-time employees get?"),
        StaticRetriever([LEAVE, EXPENSES], version="t1"),
        generator,
        retrieval=RetrievalSettings(),
        model=ModelSettings(),
    )
    assert ModelSettings().answer_mode == "read"
    assert not answer.abstained, answer.answer
    short = answer.short_answer
    assert short and "27" in short and short in LEAVE.chunk.text, short
    first, _, quote = answer.answer.partition("\n")
    assert first.startswith(short) and quote.startswith("> ") and "27" in quote, answer.answer
    assert answer.citations and answer.citations[0].chunk_id == "leave-1"


def test_second_question_reuses_the_cached_system_prompt(generator: LlamaGenerator) -> None:
    # Evict the shared prefix with a different system prompt, then ask two questions.
    generator.generate(
        messages_for("Warm up?", [EXPENSES], generator, system="Be terse."), max_tokens=2
    )
    first = generator.generate(
        messages_for("How many days of leave?", [LEAVE], generator), max_tokens=8
    )
    second = generator.generate(
        messages_for("What is the deadline for expense claims?", [EXPENSES], generator),
        max_tokens=8,
    )
    system_tokens = len(
        generator.tokenize(generator.render([{"role": "system", "content": SYSTEM_PROMPT}]))
    )
    assert first.prompt_tokens_evaluated is not None and second.prompt_tokens_evaluated is not None
    # the first call evaluated (nearly) everything: only "<|im_start|>system\n" was shared
    assert first.prompt_tokens_evaluated >= first.prompt_tokens - 5
    # the second evaluated only what follows the system prompt
    assert second.prompt_tokens_evaluated <= second.prompt_tokens - system_tokens + 8
    assert second.prompt_tokens_evaluated < first.prompt_tokens_evaluated


def test_a_failing_token_callback_does_not_lose_the_answer(generator: LlamaGenerator) -> None:
    def boom(piece: str) -> None:
        raise RuntimeError("slack down")

    out = generator.generate(
        messages_for("How many days of leave?", [LEAVE], generator), max_tokens=12, on_token=boom
    )
    assert out.text and out.completion_tokens >= 1


def test_prompt_longer_than_the_context_window_is_a_generation_error() -> None:
    small = LlamaGenerator(answer_model_path(), n_threads=1, n_ctx=256)
    long_text = " ".join(["The office plants are watered every Tuesday."] * 60)
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": long_text}]
    with pytest.raises(GenerationError) as info:
        small.generate(msgs, max_tokens=8)
    assert "context window" in info.value.message and "\n" not in info.value.one_line()
    small.close()


def test_truncated_model_file_is_a_one_line_asset_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with answer_model_path().open("rb") as src:
        broken.write_bytes(src.read(1_000_000))  # a download cut short
    with pytest.raises(AssetMissingError) as info:
        LlamaGenerator(broken, n_threads=1).load()
    assert "cannot be loaded" in info.value.message
    assert "\n" not in info.value.one_line() and info.value.fix


def test_gguf_magic_followed_by_garbage_is_a_one_line_asset_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(AssetMissingError) as info:
        LlamaGenerator(junk, n_threads=1).generate(
            [{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert "\n" not in info.value.one_line()


def test_model_file_removed_after_configuration_is_an_asset_error(tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copyfile(answer_model_path(), copy)
    gen = LlamaGenerator(copy, n_threads=1)
    copy.unlink()
    with pytest.raises(AssetMissingError) as info:
        gen.count_tokens("hello")
    assert "does not exist" in info.value.message


def test_an_assistant_message_last_is_a_prefix_the_model_continues(
    generator: LlamaGenerator,
) -> None:
    msgs = messages_for(
        "How many days of paid annual leave do full-time employees get?", [LEAVE], generator
    )
    msgs.append({"role": "assistant", "content": "According to [1],"})
    pieces: list[str] = []
    out = generator.generate(msgs, max_tokens=24, on_token=pieces.append)
    assert out.text.startswith("According to [1],")
    assert pieces[0] == "According to [1],"
    assert generator.render(msgs).endswith("<|im_start|>assistant\nAccording to [1],")
