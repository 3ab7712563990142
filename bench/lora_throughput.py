"""LoRA training throughput (tokens/s) on the answer model, plus export time and adapter size.

    python bench/lora_throughput.py                         # CPU, 2 threads, batch 8x256, 4 steps
    python bench/lora_throughput.py --steps 10 --device cuda --batch 8 --seq 512

The shape follows /work/shared/BASELINES.md (peft r=16 on q,k,v,o,gate,up,down, AdamW,
~190 tokens/s on 2 CPU cores at batch 8x256): every example is padded out with handbook
text to exactly ``--seq`` tokens, so a step processes ``batch x seq`` tokens. The first
step (allocator and kernel warm-up) is left out of the steady-state figure. The base is
loaded once, outside the timed loop; the export of the trained adapter to GGUF is timed
separately. The machine is shared, so the load average before and after is recorded.

Beside it, in the same run and process, a plain peft training loop (the base model wrapped
by ``peft.get_peft_model``, AdamW, ``model(**batch).loss.backward()``, nothing else) trains
on the same token batches with the same thread count, and the ratio of our tokens/s to its
is printed: a figure from another machine is no baseline on a shared one.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import console, exit_cleanly_on_sigterm, loadavg, save
from rich.table import Table

from lorebot.assets import answer_model_path, sample_docs_dir
from slm.training import lora

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ANSWER = "Full-time staff receive 27 days of paid annual leave per calendar year [1]."


def handbook_text() -> str:
    docs = sample_docs_dir()
    return "\n\n".join(
        p.read_text(encoding="utf-8", errors="ignore")
        for p in sorted(docs.iterdir())
        if p.suffix in (".md", ".txt")
    )


def fixed_length_examples(base: Path, n: int, seq: int) -> list[lora.TrainExample]:
    """``n`` distinct examples of exactly ``seq`` tokens each (prompt + target)."""
    codec = lora.chat_codec(base)
    try:
        words = handbook_text().split()
        out: list[lora.TrainExample] = []
        for i in range(n):
            start = (i * 97) % max(1, len(words) - 400)
            passage = " ".join(words[start : start + 400])
            ids = codec.llama.tokenize(passage.encode(), add_bos=False, special=False)
            for take in range(seq, 0, -1):
                text = codec.llama.detokenize(ids[:take]).decode("utf-8", errors="ignore")
                example = lora.TrainExample(
                    [
                        {"role": "user", "content": f"{text}\n\nQuestion {i}: how much leave?"},
                        {"role": "assistant", "content": ANSWER},
                    ]
                )
                length = len(lora.encode_example(codec, example)[0])
                if length <= seq:
                    break
            if length < seq - 4:
                raise SystemExit(f"could not build a {seq}-token example (got {length})")
            out.append(example)
        return out
    finally:
        codec.close()


def plain_peft_loop(base: Path, examples, config: lora.LoraConfig, steps: int) -> dict:
    """tokens/s (wall, steps 2..) and tokens per CPU-second of a textbook peft loop."""
    import peft
    import torch

    codec = lora.chat_codec(base)
    try:
        data, _ = lora.build_dataset(codec, examples, config.max_seq_len)
        pad = lora.end_of_turn_id(codec)
    finally:
        codec.close()
    torch.manual_seed(config.seed)
    with lora.torch_threads(config.threads):
        model = peft.get_peft_model(
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
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
        stream = lora.batches(data, config.batch_size, pad, config.seed, window=1)
        walls, cpus, tokens = [], [], []
        for _ in range(steps):
            batch = next(stream)
            w, c = time.perf_counter(), time.process_time()
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
            tokens.append(int(batch["attention_mask"].sum()))
    per_step = statistics.mean(tokens[1:] or tokens)
    return {
        "tokens_per_s_steady": round(per_step / statistics.median(walls[1:] or walls), 1),
        "tokens_per_cpu_s": round(per_step / statistics.median(cpus[1:] or cpus), 1),
        "step_seconds": [round(x, 2) for x in walls],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (first is warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256, help="tokens per example")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--modules", nargs="+", default=list(ALL_MODULES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--name", default="lora_throughput", help="results file name")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    started_load = loadavg()

    base = answer_model_path()
    examples = fixed_length_examples(base, args.batch, args.seq)
    config = lora.LoraConfig(
        rank=args.rank,
        alpha=2 * args.rank,
        target_modules=tuple(args.modules),
        batch_size=args.batch,
        max_seq_len=args.seq,
        max_steps=args.steps,
        time_budget_s=3600.0,
        device=args.device,
        threads=args.threads,
    )
    stamps: list[float] = []
    cpu_stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lorebot-lora-bench-") as tmp, lora.reuse_base_model():
        t0 = time.perf_counter()
        lora.load_base_model(base)  # warm the cache: loading is reported, not timed in tok/s
        load_s = time.perf_counter() - t0
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
        result = lora.train_lora(
            base,
            examples,
            Path(tmp) / "peft",
            config,
            progress=lambda step, total, loss: (
                stamps.append(time.perf_counter()),
                cpu_stamps.append(time.process_time()),
                console.print(f"step {step}/{total} loss {loss:.3f}"),
            ),
        )
        t0 = time.perf_counter()
        adapter = lora.export_gguf_adapter(result.peft_dir, base, Path(tmp) / "adapter.gguf")
        export_s = time.perf_counter() - t0
        adapter_bytes = adapter.stat().st_size
        peft_bytes = (result.peft_dir / lora.PEFT_WEIGHTS).stat().st_size
        plain = plain_peft_loop(base, examples, config, args.steps)

    tokens_per_step = result.tokens / result.steps
    step_s = [b - a for a, b in itertools.pairwise(stamps[1:])]  # steps 2.. (1 is warm-up)
    steady = tokens_per_step / statistics.median(step_s) if step_s else result.tokens_per_s
    # CPU seconds per step: on a shared machine, wall time measures the neighbours too;
    # tokens per CPU-second x threads is what the same code gets from idle cores.
    cpu_s = [b - a for a, b in itertools.pairwise(cpu_stamps[1:])]
    per_cpu = tokens_per_step / statistics.median(cpu_s) if cpu_s else None
    row = {
        "device": result.device,
        "threads": args.threads,
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "modules": list(args.modules),
        "steps": result.steps,
        "tokens_per_step": tokens_per_step,
        "step_seconds": [round(s, 2) for s in step_s],
        "tokens_per_s_steady": round(steady, 1),
        "tokens_per_s_all_steps": round(result.tokens_per_s, 1),
        "step_cpu_seconds": [round(s, 2) for s in cpu_s],
        "tokens_per_cpu_s": round(per_cpu, 1) if per_cpu else None,
        "base_load_s": round(load_s, 1),
        "export_s": round(export_s, 3),
        "adapter_gguf_bytes": adapter_bytes,
        "peft_safetensors_bytes": peft_bytes,
        "losses": [round(v, 4) for v in result.losses],
        "baseline_tokens_per_s": 190 if result.device == "cpu" and args.threads == 2 else None,
        "plain_peft": plain,
        "ratio_to_plain_peft": round(steady / plain["tokens_per_s_steady"], 3),
    }

    table = Table(title=f"LoRA training throughput ({result.device}, {args.threads} threads)")
    for col in (
        "shape", "r / modules", "steps", "tok/s (steady)", "tok/CPU-s", "plain peft tok/s",
        "ours / plain", "export", "adapter",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row(
        f"{args.batch}x{args.seq}",
        f"{args.rank} / {','.join(m.removesuffix('_proj') for m in args.modules)}",
        str(result.steps),
        f"{steady:,.0f}",
        f"{per_cpu:,.0f}" if per_cpu else "–",
        f"{plain['tokens_per_s_steady']:,.0f}",
        f"{row['ratio_to_plain_peft']:.2f}×",
        f"{export_s * 1000:,.0f} ms",
        f"{adapter_bytes / 1e6:.1f} MB",
    )
    console.print(table)
    console.print(f"[dim]base model de-quantized in {load_s:.1f} s; load average {loadavg()}[/]")
    save(args.name, {"result": row}, started_load=started_load)


if __name__ == "__main__":
    main()
