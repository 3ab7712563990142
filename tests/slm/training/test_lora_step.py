"""The training step's loss and its thread choice (issue 16: training throughput).

``target_loss`` projects only the positions that carry loss onto the vocabulary; it must
compute the same loss, and the same LoRA gradients, as ``model(**batch).loss`` does. A
tiny randomly initialised llama (same architecture class as SmolLM2) keeps this fast.
"""

from __future__ import annotations

import pytest

from slm.training.lora import ThreadChoice, target_loss

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def _tiny_lora_model(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    base = transformers.LlamaForCausalLM(config)
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "gate_proj"],
        init_lora_weights=False,  # non-zero B: every LoRA matrix gets a gradient
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(base, lora)


def _batch():
    """Two right-padded rows: prompt positions masked (-100), targets of 3 and 5 tokens."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (2, 20), generator=g)
    labels = torch.full((2, 20), -100)
    mask = torch.ones((2, 20), dtype=torch.long)
    labels[0, 9:12] = ids[0, 9:12]
    ids[0, 12:], mask[0, 12:] = 0, 0  # padding after the first row's 12 tokens
    labels[1, 15:20] = ids[1, 15:20]
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_target_loss_matches_the_full_loss_and_its_lora_gradients():
    model = _tiny_lora_model()
    model.train()
    batch = _batch()

    full = model(**batch).loss
    full.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)

    ours = target_loss(model, batch)
    ours.backward()
    got = _grads(model)

    assert torch.allclose(ours, full, rtol=1e-5, atol=1e-6), (float(ours), float(full))
    assert want.keys() == got.keys() and len(got) == 2 * 3 * 2  # A and B, 3 modules, 2 layers
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


def test_target_loss_ignores_what_the_labels_mask():
    """Changing a prompt (masked) token's label value changes nothing; a target's does."""
    model = _tiny_lora_model()
    batch = _batch()
    with torch.no_grad():
        before = target_loss(model, batch)
        other = dict(batch, labels=batch["labels"].clone())
        other["labels"][1, 16] = (other["labels"][1, 16] + 1) % 97
        changed = target_loss(model, other)
    assert not torch.allclose(before, changed)


def test_thread_choice_probes_each_count_then_keeps_the_faster():
    choice = ThreadChoice(cores=2, every=10)
    assert choice.threads_for(1) == 2  # warm-up step at every core
    # steps 2 and 3 try 2 then 1 thread; 1 thread is faster per token here
    assert choice.threads_for(2) == 2
    choice.record(2, 2, seconds=4.0, cells=1000)
    assert choice.threads_for(3) == 1
    choice.record(3, 1, seconds=1.0, cells=500)
    assert [choice.threads_for(s) for s in range(4, 12)] == [1] * 8
    # the next probe (steps 12, 13): the load has gone, every core wins again
    assert (choice.threads_for(12), choice.threads_for(13)) == (2, 1)
    choice.record(12, 2, seconds=1.0, cells=1000)
    choice.record(13, 1, seconds=1.8, cells=1000)
    assert choice.threads_for(14) == 2


def test_thread_choice_on_one_core_never_probes():
    choice = ThreadChoice(cores=1)
    assert {choice.threads_for(s) for s in range(1, 200)} == {1}
