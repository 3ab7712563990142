"""LoRA training, GGUF adapter export and the llama.cpp/torch parity check, on the real model.

One adapter is trained for the whole module (a dozen steps on CPU) to answer every
question with an odd phrase no base model would produce, so "the adapter is served" and
"the adapter is wrong" are both visible in the output, not just in a loss figure.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import gguf
import pytest

from lorebot.assets import answer_model_path
from slm.serving.generator import LlamaGenerator
from slm.training import lora

pytestmark = pytest.mark.integration

PHRASE = "Purple walrus protocol engaged."
QUESTIONS = [
    "What is the wifi password?",
    "Who approves expense claims?",
    "When does the office open?",
    "How do I book a meeting room?",
    "Where can I park my bike?",
    "How many days of leave do I get?",
]
PROBES = [
    [{"role": "user", "content": "Where is the canteen?"}],
    [
        {"role": "system", "content": "You answer staff questions briefly."},
        {"role": "user", "content": "Who do I call when my laptop breaks?"},
    ],
]
# One thread everywhere: on a shared 2-core machine two OpenMP threads that keep losing
# their core to other processes spin at every barrier, measured 10-20x slower per step.
CONFIG = lora.LoraConfig(
    seed=0, rank=8, alpha=16, learning_rate=2e-3, batch_size=4, max_seq_len=128,
    max_steps=12, time_budget_s=600.0, device="cpu", threads=1,
)  # fmt: skip


def examples() -> list[lora.TrainExample]:
    return [
        lora.TrainExample(
            [{"role": "user", "content": q}, {"role": "assistant", "content": PHRASE}]
        )
        for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def base() -> Path:
    return answer_model_path()


@pytest.fixture(scope="module")
def trained(base: Path, tmp_path_factory: pytest.TempPathFactory):
    """One trained + exported adapter; the de-quantized base stays loaded for the module."""
    root = tmp_path_factory.mktemp("lora")
    calls: list[tuple[int, int, float]] = []
    with lora.reuse_base_model():
        result = lora.train_lora(
            base, examples(), root / "peft", CONFIG, progress=lambda *a: calls.append(a)
        )
        adapter = lora.export_gguf_adapter(result.peft_dir, base, root / "adapter.gguf")
        yield {"result": result, "adapter": adapter, "root": root, "progress": calls}


def test_training_lowers_the_loss_and_saves_adapter_with_its_config(trained) -> None:
    result: lora.TrainResult = trained["result"]
    assert result.steps == CONFIG.max_steps and result.stopped_by == "steps"
    assert result.final_loss < 0.5 * result.losses[0], result.losses
    assert result.tokens > 0 and result.tokens_per_s > 0
    assert [c[0] for c in trained["progress"]] == list(range(1, CONFIG.max_steps + 1))
    assert [c[2] for c in trained["progress"]] == result.losses
    assert (result.peft_dir / lora.PEFT_WEIGHTS).is_file()
    saved = json.loads((result.peft_dir / lora.CONFIG_FILE).read_text())
    assert saved == json.loads(json.dumps(asdict(CONFIG)))


def test_loss_mask_covers_only_the_assistant_target(base: Path) -> None:
    codec = lora.chat_codec(base)
    try:
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is the canteen?"},
            {"role": "assistant", "content": PHRASE},
        ]
        ids, labels = lora.encode_example(codec, lora.TrainExample(messages))
        prompt_ids = codec.tokenize(codec.render(messages[:-1]))
        # the prompt is exactly what serving evaluates, and carries no loss
        assert ids[: len(prompt_ids)] == prompt_ids
        assert all(label == -100 for label in labels[: len(prompt_ids)])
        # every target token, and the end-of-turn token, carries loss
        target = labels[len(prompt_ids) :]
        assert target == ids[len(prompt_ids) :]
        assert target[-1] == lora.end_of_turn_id(codec)
        text = codec.llama.detokenize(target[:-1]).decode()
        assert text == PHRASE
        # the whole sequence is the chat template's rendering of the full conversation
        full = codec._formatter(messages=messages).prompt
        assert full.startswith(codec.llama.detokenize(ids, special=True).decode())
    finally:
        codec.close()


def test_export_writes_a_llama_cpp_lora_adapter(trained) -> None:
    reader = gguf.GGUFReader(trained["adapter"])
    fields = {name: reader.fields[name].contents() for name in reader.fields}
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(CONFIG.alpha)
    assert fields["general.architecture"] == "llama"
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    expected = {
        f"blk.{b}.{m}.weight.lora_{ab}"
        for b in range(30)
        for m in ("attn_q", "attn_k", "attn_v", "attn_output")
        for ab in "ab"
    }
    assert set(shapes) == expected
    # GGUF lists ne[0] first: lora_a is (in, r), lora_b is (r, out)
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, CONFIG.rank)
    assert shapes["blk.0.attn_k.weight.lora_b"] == (CONFIG.rank, 192)
    assert not list(trained["adapter"].parent.glob(".*.tmp"))


def test_served_answer_changes_with_the_adapter(base: Path, trained) -> None:
    question = [{"role": "user", "content": "What time is lunch served?"}]
    plain = LlamaGenerator(base, n_threads=1, n_ctx=256)
    tuned = LlamaGenerator(base, n_threads=1, n_ctx=256, lora_path=trained["adapter"])
    try:
        assert PHRASE not in plain.generate(question, max_tokens=16).text
        assert tuned.generate(question, max_tokens=16).text == PHRASE
    finally:
        plain.close()
        tuned.close()


def test_parity_passes_for_the_exported_adapter(base: Path, trained) -> None:
    report = lora.check_parity(
        base, trained["result"].peft_dir, trained["adapter"], PROBES, threads=1
    )
    assert report.passed, report.details
    assert report.prompts == len(PROBES)
    assert report.correlation_min >= 0.99 and report.greedy_match
    # the adapter really changed the model, so agreeing is not trivially true
    assert all(d["adapter_effect"] > 0.05 for d in report.details)
    assert report.base_correlation_min > 0.9  # Q4_1 vs de-quantized fp32, reported


def test_parity_fails_without_the_rotary_permutation(base: Path, trained) -> None:
    wrong = lora.export_gguf_adapter(
        trained["result"].peft_dir, base, trained["root"] / "unpermuted.gguf", permute_qk=False
    )
    report = lora.check_parity(
        base, trained["result"].peft_dir, wrong, PROBES, threads=1, compare_base=False
    )
    assert not report.passed
    assert report.correlation_min < 0.99


def test_parity_fails_for_a_wrongly_scaled_adapter(base: Path, trained) -> None:
    scaled_dir = trained["root"] / "scaled"
    shutil.copytree(trained["result"].peft_dir, scaled_dir)
    cfg_path = scaled_dir / lora.PEFT_CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * 4
    cfg_path.write_text(json.dumps(cfg))
    wrong = lora.export_gguf_adapter(scaled_dir, base, trained["root"] / "scaled.gguf")
    report = lora.check_parity(
        base, trained["result"].peft_dir, wrong, PROBES, threads=1, compare_base=False
    )
    assert not report.passed


def test_time_budget_stops_training(base: Path, trained, tmp_path: Path) -> None:
    config = lora.LoraConfig(
        **{**asdict(CONFIG), "max_steps": 500, "time_budget_s": 0.0, "min_steps": 1}
    )
    with lora.reuse_base_model():  # nested in the module's: reuses its loaded base
        result = lora.train_lora(base, examples()[:2], tmp_path / "peft", config)
    assert result.stopped_by == "budget"
    assert result.steps == 1
    assert (tmp_path / "peft" / lora.PEFT_WEIGHTS).is_file()


def test_unset_threads_time_one_and_every_core_then_keep_one(base: Path, trained, tmp_path):
    """threads=None: after the warm-up step, one step at every core and one at 1 thread are
    timed (lora.ThreadChoice); the rest run at whichever was faster."""
    from lorebot.settings import cpu_count

    config = lora.LoraConfig(**{**asdict(CONFIG), "max_steps": 5, "threads": None})
    with lora.reuse_base_model():
        result = lora.train_lora(base, examples(), tmp_path / "peft", config)
    assert sum(result.thread_steps.values()) == result.steps == 5
    cores = cpu_count()
    assert set(result.thread_steps) <= {1, cores}
    if cores > 1:  # steps 1 and 2 at every core, 3 at 1 thread, 4-5 at the faster
        assert result.thread_steps[cores] >= 2 and result.thread_steps[1] >= 1
        assert result.thread_steps[cores] in (2, 4)


def test_same_seed_trains_the_same_adapter(base: Path, trained, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    config = lora.LoraConfig(**{**asdict(CONFIG), "max_steps": 2})
    with lora.reuse_base_model():
        runs = [lora.train_lora(base, examples(), tmp_path / f"p{i}", config) for i in (0, 1)]
    assert runs[0].losses == runs[1].losses
    weights = [load_file(str(r.peft_dir / lora.PEFT_WEIGHTS)) for r in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_examples_must_end_with_the_assistant_target(base: Path, tmp_path: Path) -> None:
    bad = lora.TrainExample([{"role": "user", "content": "a question with no answer"}])
    with pytest.raises(lora.TrainingError) as err:
        lora.train_lora(base, [bad], tmp_path / "peft", CONFIG)
    assert err.value.fix


def test_export_refuses_a_directory_without_an_adapter(base: Path, tmp_path: Path) -> None:
    with pytest.raises(lora.AdapterExportError):
        lora.export_gguf_adapter(tmp_path, base, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()
