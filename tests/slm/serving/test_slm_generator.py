"""The generator seam without loading a model: streaming with stop sequences, the fake,
and the checks that turn a bad model file into a one-line error before llama.cpp runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorebot.errors import AssetMissingError, GenerationError
from slm.serving.generator import LlamaGenerator, _Streamer, repetition_cut
from tests.support.fakes import FakeGenerator


def run_streamer(pieces: list[str], stop: list[str]) -> tuple[str, list[str], bool]:
    seen: list[str] = []
    s = _Streamer(stop, seen.append)
    stopped = False
    for p in pieces:
        if s.feed(p):
            stopped = True
            break
    return s.finish(), seen, stopped


def test_streamer_cuts_at_a_stop_sequence_split_across_pieces_without_leaking_it() -> None:
    text, seen, stopped = run_streamer(
        ["It is 25", " days [1].", "\n", "\nQuestion: more"], ["\n\n"]
    )
    assert stopped
    assert text == "It is 25 days [1]."
    assert "".join(seen) == text
    assert all("\n" not in p for p in seen)


def test_streamer_releases_held_text_that_turned_out_not_to_be_a_stop() -> None:
    text, seen, stopped = run_streamer(["a\n", "b", "\nQ", "x"], ["\n\n", "\nQuestion:"])
    assert not stopped
    assert text == "a\nb\nQx"
    assert "".join(seen) == text


def test_streamer_stop_inside_one_piece() -> None:
    text, _, stopped = run_streamer(["yes<|im_end|>junk"], ["<|im_end|>"])
    assert stopped and text == "yes"


def test_streamer_survives_a_failing_callback() -> None:
    def boom(piece: str) -> None:
        raise RuntimeError("slack down")

    s = _Streamer(["\n\n"], boom)
    s.feed("one ")
    s.feed("two")
    assert s.finish() == "one two"


def test_fake_generator_streams_words_records_messages_and_caps_tokens() -> None:
    gen = FakeGenerator(["alpha beta gamma delta", "second"], adapter="x1")
    pieces: list[str] = []
    msgs = [{"role": "user", "content": "hi there"}]
    out = gen.generate(msgs, max_tokens=3, on_token=pieces.append)
    assert pieces == ["alpha ", "beta ", "gamma "]
    assert out.text == "alpha beta gamma"
    assert out.completion_tokens == 3 and out.finish_reason == "length"
    assert out.prompt_tokens == 2
    assert gen.calls == [msgs]
    assert gen.generate(msgs, max_tokens=10).text == "second"
    with pytest.raises(GenerationError):
        gen.generate(msgs, max_tokens=10)
    assert gen.adapter == "x1"


def test_fake_generator_reply_function_sees_the_messages() -> None:
    gen = FakeGenerator(lambda messages: f"echo {messages[-1]['content']}")
    assert gen.generate([{"role": "user", "content": "ping"}], max_tokens=5).text == "echo ping"


def test_missing_model_file_is_an_asset_error(tmp_path: Path) -> None:
    gen = LlamaGenerator(tmp_path / "nope.gguf", n_threads=1)
    with pytest.raises(AssetMissingError) as info:
        gen.generate([{"role": "user", "content": "hi"}], max_tokens=4)
    assert "does not exist" in info.value.message
    assert "\n" not in info.value.one_line() and info.value.fix


def test_a_file_that_is_not_gguf_is_an_asset_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(AssetMissingError) as info:
        LlamaGenerator(bad, n_threads=1).load()
    assert "not a GGUF file" in info.value.message


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read anything")
def test_unreadable_model_file_is_an_asset_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    bad.chmod(0)
    with pytest.raises(AssetMissingError) as info:
        LlamaGenerator(bad, n_threads=1).load()
    assert "not readable" in info.value.message


def test_missing_lora_adapter_is_an_asset_error(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(AssetMissingError) as info:
        LlamaGenerator(model, n_threads=1, lora_path=tmp_path / "adapter.gguf").load()
    assert "LoRA adapter" in info.value.message


def test_importing_slm_does_not_import_llama_cpp() -> None:
    serving = ("answer", "citations", "evidence", "generator", "grounding", "prompt", "retrievers")
    code = (
        "import sys, slm, " + ", ".join(f"slm.serving.{name}" for name in serving) + ";"
        "print('llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_n_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LlamaGenerator(tmp_path / "m.gguf", n_threads=0)


def test_repetition_cut_keeps_one_copy_of_a_loop() -> None:
    text = "The norm is preserved under the norm of the norm of the norm of the norm"
    cut = repetition_cut(text)
    assert cut is not None
    assert text[:cut] == "The norm is preserved under the norm of the norm"
    assert repetition_cut("Staff get 27 days of leave per year [1].") is None
    assert repetition_cut("ha ha ha") is None  # too short a unit to be a loop
