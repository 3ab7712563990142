"""The gate's answer cache: a greedy model asked the same request again is not run again,
the scores are the same, and a changed model file, adapter file or sampling model is
asked afresh. (Fake generator and retriever: the cache wraps whatever generator it gets.)"""

from __future__ import annotations

from pathlib import Path

from lorebot.settings import Settings
from slm.training.gate import AbstentionProbe, AnswerCache, GateInputs, Probe, run_gate
from tests.support.fakes import FakeGenerator, make_hit

PASSAGE = "Staff get 27 days of paid annual leave a year. Claims are due within 45 days."
OTHER = "The office opens at 08:00 and the canteen serves lunch from 12:00."


class FileModel(FakeGenerator):
    """A fake that names its files, like LlamaGenerator, and counts what it is asked."""

    def __init__(self, model: Path, lora: Path | None, temperature: float = 0.0) -> None:
        super().__init__(self.reply, adapter=lora.stem if lora else None)
        self.model_path, self.lora_path, self.temperature = model, lora, temperature
        self.n_ctx, self.stop = 2048, ("\n\n",)
        self.closed = False

    @staticmethod
    def reply(messages) -> str:
        question = messages[-1]["content"]
        if "leave" in question:
            return "Staff get 27 days [1]."
        return "The documents do not say."

    def close(self) -> None:
        self.closed = True


def _inputs() -> GateInputs:
    return GateInputs(
        heldout=[
            Probe("How much annual leave do staff get?", "27 days of paid annual leave"),
            Probe("When are expense claims due?", "within 45 days"),
        ],
        no_gold=[AbstentionProbe("How much annual leave do staff get?", [make_hit(OTHER)])],
    )


def _gate(tmp_path: Path, models: dict[str, FileModel]):
    from slm.serving.retrievers import StaticRetriever

    cache = AnswerCache(tmp_path / "cache")
    scores = run_gate(
        Settings(data_dir=tmp_path / "data"),
        _inputs(),
        [(label, lambda m=m: m) for label, m in models.items()],
        retriever=StaticRetriever([make_hit(PASSAGE, collection="handbook")]),
        embedder=None,
        collections=["handbook"],
        cache=cache,
    )
    return scores


def test_a_greedy_model_asked_the_same_again_is_not_run_again(tmp_path):
    base_file, adapter_file = tmp_path / "base.gguf", tmp_path / "a1.gguf"
    base_file.write_bytes(b"GGUF base weights")
    adapter_file.write_bytes(b"GGUF adapter one")

    first = {"base": FileModel(base_file, None), "current": FileModel(base_file, adapter_file)}
    one = _gate(tmp_path, first)
    assert len(first["base"].calls) == len(first["current"].calls) == 3
    assert one["base"].model_calls == 3 and one["base"].cached_calls == 0
    assert all(m.closed for m in first.values())

    again = {"base": FileModel(base_file, None), "current": FileModel(base_file, adapter_file)}
    two = _gate(tmp_path, again)
    assert again["base"].calls == [] and again["current"].calls == []
    assert two["base"].cached_calls == 3 and two["base"].flat()["replies_cached"] == 3
    for label in ("base", "current"):
        a, b = one[label].flat(), two[label].flat()
        assert a.pop("replies_cached", None) is None and b.pop("replies_cached") == 3
        assert a == b and a["heldout_f1"] > 0

    # A retrained adapter is another model: asked afresh; a sampling model is never cached.
    adapter_file.write_bytes(b"GGUF adapter two")
    third = {
        "current": FileModel(base_file, adapter_file),
        "sampling": FileModel(base_file, None, temperature=0.7),
    }
    three = _gate(tmp_path, third)
    assert len(third["current"].calls) == 3 and len(third["sampling"].calls) == 3
    assert three["current"].cached_calls == 0 and three["sampling"].cached_calls == 0
    # Only what the last run asked is kept: one file, the retrained adapter's.
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
