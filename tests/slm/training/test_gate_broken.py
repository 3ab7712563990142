"""The gate rejects a deliberately broken adapter, and the serving adapter stays.

Two real broken adapters, turned into GGUF by the refresh's own exporter and loaded by
llama.cpp: one with scrambled weights (random A and B, far larger than training makes
them; fast, no training), and one trained (real LoRA steps, slow) on wrong answers. The
serving adapter is a real one too (LoRA with B = 0: the base model's answers, as a freshly
initialised adapter gives). The refresh's own gate step (``refresh._gate``: base, current
and candidate asked the same held-out and abstention questions through the answer path,
real model) and commit step decide; the candidate must be recorded as rejected with the
current one still serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorebot import assets
from lorebot.types import SearchHit
from slm.training import lora, refresh, registry
from slm.training.gate import AbstentionProbe, GateInputs, Probe
from slm.training.pairs import iter_chunks
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

#: Held-out questions on the small corpus's handbook, with the documents' own answers.
HELDOUT = [
    Probe("How many days of paid annual leave do full-time employees receive?", "27 days"),
    Probe("How many days per week may I work from home?", "up to three days per week"),
    Probe("Within how many days must an expense claim be submitted?", "within 45 days"),
    Probe("What is the extension of the absence line?", "extension 2417"),
]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
RANK = 8


def peft_dir(root: Path, base: Path, *, scale: float, seed: int = 0) -> Path:
    """A peft LoRA directory on every attention projection: A, B ~ N(0, scale²); scale 0
    gives B = 0 (an adapter that changes nothing)."""
    from safetensors.numpy import save_file

    meta = lora.read_gguf_metadata(base)
    arch = meta["general.architecture"]
    n_embd = int(meta[f"{arch}.embedding_length"])
    n_head = int(meta[f"{arch}.attention.head_count"])
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    out_dim = {
        "q_proj": n_embd,
        "k_proj": n_embd // n_head * n_kv,
        "v_proj": n_embd // n_head * n_kv,
        "o_proj": n_embd,
    }
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(int(meta[f"{arch}.block_count"])):
        for module in TARGETS:
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, max(scale, 0.01), (RANK, n_embd))
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, scale, (out_dim[module], RANK))
    root.mkdir(parents=True)
    save_file({k: v.astype(np.float32) for k, v in tensors.items()}, str(root / lora.PEFT_WEIGHTS))
    (root / lora.PEFT_CONFIG).write_text(
        json.dumps({"r": RANK, "lora_alpha": 2 * RANK, "target_modules": list(TARGETS)})
    )
    return root


def _settings(refresh_data: Path):
    # Both adapters break what the model writes (garbage sentences, a not-found reply), and
    # what each test expects of the gate follows from the generating path: pinned to it.
    return make_settings(
        refresh_data,
        model={"max_tokens": 32, "n_threads": 2, "answer_mode": "generate"},
        training={"injection_check": False, "use_feedback": False, "margin": 0.01},
    )


def _serving_adapter(s, base: Path) -> str:
    """A real adapter promoted through the registry: LoRA with B = 0 (the base's answers)."""
    version, build = registry.start_version(s)
    lora.export_gguf_adapter(
        peft_dir(build / "peft", base, scale=0.0), base, build / registry.ADAPTER_FILE
    )
    registry.commit_version(s, version, build, {"status": "candidate", "reason": "test"})
    registry.promote(s, version, reason="the adapter serving before the refresh")
    return version


def _gate_and_commit(s, embedder, base: Path, version: str, build: Path, heldout) -> Any:
    """The refresh's own gate and commit steps on a candidate built in ``build``."""
    from ingest.store import open_index

    reader = open_index(s, embedder=embedder)
    try:
        chunks = list(iter_chunks(reader, ["handbook"]))
        expenses = [c for c in chunks if "expense" in c.source.lower()][:3]
        assert expenses
        inputs = GateInputs(
            heldout=heldout,
            # A leave question shown only the expenses policy: the right reply is "not found".
            no_gold=[
                AbstentionProbe(
                    HELDOUT[0].question,
                    [SearchHit(chunk=c, score=0.9, dense_score=0.9) for c in expenses],
                )
            ],
        )
        report = refresh.RefreshReport(run=f"test-{version}", version=version)
        run = refresh._Run(
            s,
            report,
            refresh._Steps(report, None, None),
            teacher=None,
            embedder=embedder,
            closing=[],
            reader=reader,
            collections=["handbook"],
            inputs=inputs,
            base=base,
            version=version,
            build=build,
            config=refresh.lora_config(s),
            adapter=build / registry.ADAPTER_FILE,
        )
        promote, reason = refresh._gate(run)
        refresh._commit(run, promote, reason)
    finally:
        reader.close()
    return promote, reason, report


def _still_serving(s, serving: str, rejected: str) -> None:
    assert registry.current_version(s) == serving
    assert registry.current_adapter(s).version == serving
    assert registry.read_card(s, serving)["status"] == "promoted"
    assert registry.read_card(s, rejected)["status"] == "rejected"


def test_a_scrambled_adapter_is_not_promoted_and_the_serving_one_stays(refresh_data, embedder):
    """Fast: no training. Its every sentence is garbage (llama.cpp does load it), which the
    answer path's grounding check drops, so its answers fall back to the quoted evidence
    alone: never better than the serving adapter's, and not promoted."""
    s = _settings(refresh_data)
    base = assets.answer_model_path(s.model.path)
    serving = _serving_adapter(s, base)
    broken, build = registry.start_version(s)
    lora.export_gguf_adapter(
        peft_dir(build / "peft", base, scale=1.0), base, build / registry.ADAPTER_FILE
    )
    promote, reason, report = _gate_and_commit(s, embedder, base, broken, build, HELDOUT[:2])
    m = report.metrics
    assert set(m) == {"base", "current", "candidate"}
    assert m["candidate"]["heldout_f1"] <= m["current"]["heldout_f1"], m
    assert not promote and "does not beat current" in reason, reason
    assert report.status == "rejected"
    _still_serving(s, serving, broken)


@pytest.mark.slow
def test_an_adapter_trained_on_wrong_answers_is_rejected_on_its_score(refresh_data, embedder):
    """A real LoRA training run on wrong targets: the serving prompt (handbook passages
    that answer the question) with the not-found reply as the answer. The gate sees it
    refuse answerable questions and rejects it on its score; the serving adapter stays."""
    from slm.serving.prompt import NOT_FOUND, build_messages
    from slm.training.pairs import extract_pairs

    s = _settings(refresh_data)
    base = assets.answer_model_path(s.model.path)
    serving = _serving_adapter(s, base)
    count = refresh._token_counter(s)
    from ingest.store import open_index

    reader = open_index(s, embedder=embedder)
    try:
        chunks = list(iter_chunks(reader, ["handbook"]))
    finally:
        reader.close()
    examples = []
    for chunk in chunks:
        for pair in extract_pairs(chunk, run="wrong")[:2]:
            hit = SearchHit(chunk=chunk, score=0.9, dense_score=0.9)
            messages, _ = build_messages(
                pair.question, [hit], [], context_tokens=200, count_tokens=count
            )
            examples.append(
                lora.TrainExample([*messages, {"role": "assistant", "content": NOT_FOUND}])
            )
    assert len(examples) >= 8
    config = lora.LoraConfig(
        seed=0, rank=8, alpha=16, learning_rate=2e-3, batch_size=2, max_seq_len=384,
        max_steps=10, min_steps=10, time_budget_s=600.0, device="cpu", threads=2,
    )  # fmt: skip
    broken, build = registry.start_version(s)
    with lora.reuse_base_model():
        result = lora.train_lora(base, examples[:20], build / "peft", config)
    lora.export_gguf_adapter(result.peft_dir, base, build / registry.ADAPTER_FILE)

    promote, reason, report = _gate_and_commit(s, embedder, base, broken, build, HELDOUT)
    m = report.metrics
    assert m["current"]["heldout_f1"] > 0.1, m  # the questions are answerable
    assert m["candidate"]["heldout_abstained"] > m["current"]["heldout_abstained"], m
    assert m["candidate"]["heldout_f1"] < m["current"]["heldout_f1"] - 0.1, m
    assert not promote and "does not beat current" in reason, reason
    _still_serving(s, serving, broken)
