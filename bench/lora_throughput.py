"""LoRA training throughput: our training step against a plain peft loop, in turns, same run.

    python bench/lora_throughput.py                          # CPU, 2 threads, batch 8x256
    python bench/lora_throughput.py --threads 1 --rounds 6 --batch 4 --seq 256
    python bench/lora_throughput.py --lengths mixed          # lengths 30-100 % of --seq
    python bench/lora_throughput.py --variants plain ours ours-bf16
    python bench/lora_throughput.py --threads 0              # plain on every core, ours picks

The shape follows /work/shared/BASELINES.md (peft r=16 on q,k,v,o,gate,up,down, AdamW,
~190 tokens/s on 2 CPU cores at batch 8x256, measured on a faster, quiet machine). The
examples are handbook text with a short cited answer, like a RAFT example: a long prompt
that carries no loss and a short target that does. ``--lengths fixed`` makes every
example exactly ``--seq`` tokens (no padding anywhere); ``--lengths mixed`` spreads them
over 30-100 % of ``--seq`` so that how batches are formed (padding) counts too.

The loops compared, each with its own copy of the same de-quantized model, the same LoRA
config, batch size, examples and torch thread count:

* ``plain``: a textbook peft loop: ``peft.get_peft_model``, AdamW, random batches
  right-padded to the longest, ``model(**batch).loss.backward()``;
* ``ours``: :class:`slm.training.lora.LoraTrainer`'s step, the very step ``train_lora``
  (the nightly refresh) takes;
* ``ours-bf16``: the same with bf16 autocast (``LoraConfig.precision="bf16"``).

``--threads 0`` runs plain on every core and lets ours choose per step as the refresh
does when no thread count is set (:class:`slm.training.lora.ThreadChoice`: 1 thread or
every core, whichever steps faster now).

They run in alternating rounds (``--steps-per-round`` steps each; the order flips every
round) after one warm-up step each, so a change of load on the shared machine hits all of
them alike. Reported per loop: tokens/s (wall), tokens per CPU-second (process CPU time:
on a shared machine wall time also measures the neighbours), and the ratio to ``plain``,
overall and as the median of the per-round ratios. Tokens are the non-padding tokens of
the batches. The load average before and after is recorded; the base is de-quantized
once, outside the timed rounds, and ours' adapter export is timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

from lorebot.assets import answer_model_path, sample_docs_dir
from slm.training import lora

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ANSWER = "Full-time staff receive 27 days of paid annual leave per calendar year [1]."
VARIANTS = ("plain", "ours", "ours-bf16")


def handbook_text() -> str:
    docs = sample_docs_dir()
    return "\n\n".join(
        p.read_text(encoding="utf-8", errors="ignore")
        for p in sorted(docs.iterdir())
        if p.suffix in (".md", ".txt")
    )


def _example(codec, ids: list[int], take: int, i: int) -> tuple[lora.TrainExample, int]:
    """The example whose prompt holds the first ``take`` passage tokens, and its length."""
    text = codec.llama.detokenize(ids[:take]).decode("utf-8", errors="ignore")
    example = lora.TrainExample(
        [
            {"role": "user", "content": f"{text}\n\nQuestion {i}: how much leave?"},
            {"role": "assistant", "content": ANSWER},
        ]
    )
    return example, len(lora.encode_example(codec, example)[0])


def sized_examples(base: Path, lengths: list[int]) -> list[lora.TrainExample]:
    """One example per entry of ``lengths``, each (prompt + target) that many tokens or at
    most 8 fewer."""
    codec = lora.chat_codec(base)
    try:
        words = handbook_text().split()
        out: list[lora.TrainExample] = []
        for i, seq in enumerate(lengths):
            start = (i * 97) % max(1, len(words) - 400)
            passage = " ".join(words[start : start + 400])
            ids = codec.llama.tokenize(passage.encode(), add_bos=False, special=False)
            lo, hi = 1, min(seq, len(ids))  # the longest passage prefix that fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _example(codec, ids, mid, i)[1] <= seq:
                    lo = mid
                else:
                    hi = mid - 1
            example, length = _example(codec, ids, lo, i)
            if length > seq or length < seq - 8:
                raise SystemExit(f"could not build a {seq}-token example (got {length})")
            out.append(example)
        return out
    finally:
        codec.close()


def example_lengths(kind: str, n: int, seq: int) -> list[int]:
    if kind == "fixed":
        return [seq] * n
    # Spread evenly over 30-100 % of seq, in a scrambled order.
    return [int(seq * (0.3 + 0.7 * ((i * 37) % n) / max(1, n - 1))) for i in range(n)]


class PlainLoop:
    """The textbook peft loop the bench holds ours against."""

    def __init__(self, base: Path, examples, config: lora.LoraConfig) -> None:
        import peft
        import torch

        codec = lora.chat_codec(base)
        try:
            data, _ = lora.build_dataset(codec, examples, config.max_seq_len)
            pad = lora.end_of_turn_id(codec)
        finally:
            codec.close()
        torch.manual_seed(config.seed)
        self.model = peft.get_peft_model(
            lora.load_base_model(base),
            peft.LoraConfig(
                r=config.rank,
                lora_alpha=config.alpha,
                target_modules=list(config.target_modules),
                lora_dropout=0.0,
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        self.stream = lora.batches(data, config.batch_size, pad, config.seed, window=1)

    def step(self) -> tuple[float, int]:
        batch = next(self.stream)
        loss = self.model(**batch).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), int(batch["attention_mask"].sum())


def timed(loop, steps: int) -> dict[str, float]:
    tokens, losses = 0, []
    w, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss, held = loop.step()
        tokens += held
        losses.append(loss)
    return {
        "wall": time.perf_counter() - w,
        "cpu": time.process_time() - c,
        "tokens": tokens,
        "loss": statistics.mean(losses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per loop")
    parser.add_argument("--steps-per-round", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (all loops); 0: ours chooses"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256, help="tokens per example (the longest)")
    parser.add_argument("--lengths", choices=["fixed", "mixed"], default="fixed")
    parser.add_argument("--examples", type=int, default=0, help="distinct examples (0: 16 batches)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--modules", nargs="+", default=list(ALL_MODULES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["plain", "ours"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--name", default="lora_throughput", help="results file name")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps_per_round < 1 or args.batch < 1 or args.seq < 64:
        raise SystemExit("--rounds, --steps-per-round and --batch must be >= 1, --seq >= 64")
    if "plain" not in args.variants or len(set(args.variants)) < 2:
        raise SystemExit("--variants must name plain (the yardstick) and at least one of ours")
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    import torch

    base = answer_model_path()
    n = args.examples or args.batch * 16
    examples = sized_examples(base, example_lengths(args.lengths, n, args.seq))
    config = lora.LoraConfig(
        rank=args.rank,
        alpha=2 * args.rank,
        target_modules=tuple(args.modules),
        batch_size=args.batch,
        max_seq_len=args.seq,
        max_steps=10**6,
        time_budget_s=10**6,
        device=args.device,
        threads=args.threads or None,
        precision="fp32" if args.device == "cpu" else "auto",
    )
    rounds: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    with (
        tempfile.TemporaryDirectory(prefix="lorebot-lora-bench-") as tmp,
        lora.reuse_base_model(),
        lora.torch_threads(args.threads or None) as threads,
    ):
        t0 = time.perf_counter()
        loaded = lora.load_base_model(base)  # de-quantize once; each loop gets a copy
        load_s = time.perf_counter() - t0
        dtypes: dict[str, int] = {}
        for p in loaded.parameters():
            dtypes[str(p.dtype)] = dtypes.get(str(p.dtype), 0) + p.numel()
        del loaded
        loops = {}
        for name in args.variants:
            if name == "plain":
                loops[name] = PlainLoop(base, examples, config)
            else:
                precision = "bf16" if name == "ours-bf16" else config.precision
                loops[name] = lora.LoraTrainer(base, examples, replace(config, precision=precision))
        for loop in loops.values():  # warm-up: allocator, kernels (not counted)
            torch.set_num_threads(threads)
            loop.step()
        order = list(args.variants)
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else reversed(order):
                torch.set_num_threads(threads)  # ours may have chosen fewer in its turn
                rounds[name].append(timed(loops[name], args.steps_per_round))
            line = "  ".join(
                f"{name} {rounds[name][-1]['tokens'] / rounds[name][-1]['wall']:,.0f} tok/s"
                for name in order
            )
            console.print(f"round {r + 1}/{args.rounds}: {line}  (load {loadavg()})")
        ours = loops.get("ours") or loops["ours-bf16"]
        ours.save(Path(tmp) / "peft")
        t0 = time.perf_counter()
        adapter = lora.export_gguf_adapter(Path(tmp) / "peft", base, Path(tmp) / "adapter.gguf")
        export_s = time.perf_counter() - t0
        adapter_bytes = adapter.stat().st_size

    def totals(name: str) -> dict[str, float]:
        rows = rounds[name]
        wall = sum(x["wall"] for x in rows)
        cpu = sum(x["cpu"] for x in rows)
        tokens = sum(x["tokens"] for x in rows)
        return {
            "tokens": tokens,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "tokens_per_s": round(tokens / wall, 1),
            "tokens_per_cpu_s": round(tokens / cpu, 1) if cpu > 0 else None,
            "round_tokens_per_s": [round(x["tokens"] / x["wall"], 1) for x in rows],
            "mean_loss": round(statistics.mean(x["loss"] for x in rows), 4),
        }

    result = {name: totals(name) for name in args.variants}
    plain = result["plain"]
    for name in args.variants:
        if name == "plain":
            continue
        per_round = [
            (a["tokens"] / a["wall"]) / (b["tokens"] / b["wall"])
            for a, b in zip(rounds[name], rounds["plain"], strict=True)
        ]
        result[name]["ratio_to_plain"] = round(
            result[name]["tokens_per_s"] / plain["tokens_per_s"], 3
        )
        result[name]["ratio_to_plain_cpu"] = round(
            result[name]["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"], 3
        )
        result[name]["ratio_to_plain_median_round"] = round(statistics.median(per_round), 3)

    shape = f"{args.batch}x{args.seq} {args.lengths}"
    table = Table(
        title=f"LoRA training throughput ({args.device}, "
        f"{args.threads or 'plain: all, ours: chosen'} threads, {shape}, "
        f"r={args.rank} on {','.join(m.removesuffix('_proj') for m in args.modules)}; "
        f"{args.rounds} rounds x {args.steps_per_round} steps)"
    )
    for col in ("loop", "tok/s", "tok/CPU-s", "× plain (wall)", "× plain (CPU)", "median round ×"):
        table.add_column(col, justify="right")
    for name in args.variants:
        row = result[name]
        table.add_row(
            name,
            f"{row['tokens_per_s']:,.1f}",
            f"{row['tokens_per_cpu_s']:,.1f}",
            f"{row.get('ratio_to_plain', 1.0):.2f}×",
            f"{row.get('ratio_to_plain_cpu', 1.0):.2f}×",
            f"{row.get('ratio_to_plain_median_round', 1.0):.2f}×",
        )
    console.print(table)
    console.print(
        f"[dim]base model de-quantized in {load_s:.1f} s; ours' adapter exported in "
        f"{export_s * 1000:,.0f} ms ({adapter_bytes / 1e6:.1f} MB); base parameters by dtype "
        f"{dtypes}; torch "
        f"{torch.__version__}; load average {loadavg()}[/]"
    )
    save(
        args.name,
        {
            "shape": {
                "batch": args.batch,
                "seq": args.seq,
                "lengths": args.lengths,
                "examples": n,
                "threads": args.threads,
                "rank": args.rank,
                "modules": list(args.modules),
                "device": args.device,
                "rounds": args.rounds,
                "steps_per_round": args.steps_per_round,
            },
            "loops": result,
            "ours_thread_steps": {
                name: loop.thread_steps for name, loop in loops.items() if name != "plain"
            },
            "base_load_s": round(load_s, 1),
            "base_parameters_by_dtype": dtypes,
            "export_s": round(export_s, 3),
            "adapter_gguf_bytes": adapter_bytes,
        },
        started_load=started_load,
    )


if __name__ == "__main__":
    main()
