"""LoRA batching: every example once per epoch, and a batch's examples of similar length (so
short reader examples are not padded out to long RAFT prompts)."""

from __future__ import annotations

import itertools
import random

from slm.training.lora import batches


def _data(n: int, seed: int = 3) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    lengths = [rng.choice((rng.randint(40, 80), rng.randint(300, 420))) for _ in range(n)]
    return [([i + 1] * length, [-100] * length) for i, length in enumerate(lengths)]


def _epoch(stream, n: int) -> list[list[int]]:
    out, seen = [], 0
    while seen < n:
        ids = next(stream)["input_ids"]
        out.append([int(row[0]) - 1 for row in ids])
        seen += len(out[-1])
    return out


def test_each_example_once_per_epoch_and_little_padding():
    data = _data(200)
    real = sum(len(ids) for ids, _ in data)

    def padded(window: int) -> int:
        stream = batches(data, 8, 0, seed=1, window=window)
        epoch = _epoch(stream, len(data))
        assert sorted(itertools.chain.from_iterable(epoch)) == list(range(len(data)))
        return sum(len(b) * max(len(data[i][0]) for i in b) for b in epoch)

    plain, grouped = padded(1), padded(16)
    # Mixed short and long examples: random batches are mostly padding, grouped ones not.
    assert plain > 1.5 * real
    assert grouped < 1.15 * real


def test_batches_are_deterministic_and_masked():
    data = _data(30)
    a = [next(s) for s in [batches(data, 4, 0, seed=7)] for _ in range(10)]
    b = [next(s) for s in [batches(data, 4, 0, seed=7)] for _ in range(10)]
    for x, y in zip(a, b):
        assert x["input_ids"].equal(y["input_ids"])
        lengths = x["attention_mask"].sum(dim=1).tolist()
        firsts = [int(v) - 1 for v in x["input_ids"][:, 0]]
        assert lengths == [len(data[i][0]) for i in firsts]
        assert (x["labels"][x["attention_mask"] == 0] == -100).all()
