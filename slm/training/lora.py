"""LoRA fine-tuning of the answer model, its export to llama.cpp, and the parity check between them.

The nightly refresh trains on the very GGUF that serves answers: transformers de-quantizes
it into torch (``gguf_file=``), peft adds LoRA matrices, and the trained matrices are
written back as a llama.cpp LoRA adapter. Three things have to agree for that to be worth
anything, and this module owns all three:

* **Prompts.** Training examples are rendered and tokenized by :class:`LlamaGenerator`
  itself (the GGUF's chat template, llama.cpp's tokenizer), so the model is trained on
  exactly the token ids it will see when serving.
* **Tensor layout.** llama.cpp stores the q/k projections of llama-architecture models
  with their rows permuted for its rotary embedding; transformers undoes that permutation
  when loading, so the q/k ``B`` matrices trained in torch must be permuted again on export.
* **Numbers.** :func:`check_parity` runs the exported adapter in llama.cpp and the peft
  adapter in torch on the same token ids and compares logits and greedy continuations; the
  refresh stops when they disagree, because a silently wrong adapter would still "work".

The training code is kept nanoGPT-plain: a config dataclass saved beside every adapter,
pure builders for the data and the model, and one loop. torch, transformers and peft are
imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorebot.errors import LorebotError
from lorebot.settings import cpu_count

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
Progress = Callable[[int, int, float], None]

#: File names inside a trained adapter directory (peft writes the first two).
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
CONFIG_FILE = "config.json"

#: peft (HF llama) module names → llama.cpp tensor names are looked up with gguf's own
#: tensor map; these are the modules LoRA can target in a llama block.
SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: Greedy continuations of llama.cpp (Q4_1 weights, 8-bit activations) and torch
#: (de-quantized fp32) may part where two tokens are nearly tied. Measured on 12 grounded
#: prompts of the sample handbook, the *base* model alone parted in 3 of 12, at torch logit
#: gaps of 0.05, 0.10 and 0.21, while logit correlations stayed >= 0.9992; an adapter with
#: unpermuted q/k matrices drops the correlation to ~0.89. A parting within this many
#: logits is therefore a tie, not a fault.
TIE_MARGIN = 0.25
#: A greedy parting whose lead is within this many standard deviations of the two runtimes'
#: logit difference at that step is arithmetic, not a fault (see ``_greedy_ok``).
NOISE_LEADS = 2.0


# ----------------------------------------------------------------------------- types
@dataclass
class LoraConfig:
    """Everything that determines a training run; saved as config.json beside the adapter."""

    seed: int = 0
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 3e-4
    batch_size: int = 4
    max_seq_len: int = 512
    max_steps: int = 200
    #: Seconds of optimiser steps; the clock starts at the first step, not at the call.
    time_budget_s: float = 1800.0
    #: Steps taken even past the budget (at most max_steps), deadline permitting.
    min_steps: int = 10
    device: str = "auto"  # "cpu" | "cuda" | "auto"
    #: torch threads; None: whichever of 1 and every core steps faster, timed now and then
    #: while training (:class:`ThreadChoice`).
    threads: int | None = None
    #: "auto": bf16 autocast on CUDA, fp32 on CPU; "fp32" or "bf16" force one (the weights
    #: and LoRA matrices stay fp32 either way, autocast only changes the matmuls).
    precision: str = "auto"


@dataclass
class TrainExample:
    """Chat messages whose last message (role "assistant") is the training target."""

    messages: list[dict[str, str]]


@dataclass
class TrainResult:
    peft_dir: Path
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    final_loss: float
    losses: list[float]
    stopped_by: str  # "steps" | "budget" | "deadline"
    device: str = "cpu"
    examples_used: int = 0
    examples_skipped: int = 0
    #: Before the first step: tokenising the examples, de-quantizing and wrapping the model.
    load_seconds: float = 0.0
    #: The optimiser steps alone, what ``time_budget_s`` bounds.
    train_seconds: float = 0.0
    #: Steps taken at each torch thread count.
    thread_steps: dict[int, int] = field(default_factory=dict)


@dataclass
class ParityReport:
    correlation_min: float
    greedy_match: bool  # every continuation matched, near-ties (TIE_MARGIN) allowed
    prompts: int
    passed: bool
    details: list[dict]
    greedy_exact: bool = True  # every continuation identical token for token
    #: The same comparison without the adapter: how far llama.cpp's Q4_1 arithmetic and
    #: torch's de-quantized fp32 already differ, so the adapter's figure can be read.
    base_correlation_min: float = float("nan")
    base_greedy_match: bool = True
    seconds: float = 0.0
    #: Prompts the base model was compared on (see ``check_parity``'s ``base_prompts``).
    base_prompts: int = 0


class TrainingError(LorebotError):
    """LoRA training could not run (no usable examples, bad config)."""


class AdapterExportError(LorebotError):
    """A peft adapter could not be written as a llama.cpp adapter."""


class ParityError(LorebotError):
    """llama.cpp with the exported adapter does not compute what torch + peft computes."""


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> str:
    """Map "auto" to CUDA when torch sees a GPU, else CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"unknown training device {name!r}", fix='use "cpu", "cuda" or "auto"')
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "training device cuda was asked for but torch sees no GPU",
            fix='set the training device to "auto" or "cpu"',
        )
    return name


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Set torch's intra-op threads for a block and restore them (the setting is global)."""
    import torch

    before = torch.get_num_threads()
    n = n or cpu_count()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def chat_codec(base_gguf: Path, n_ctx: int = 2048) -> Any:
    """The serving generator used only to render and tokenize: training prompts are then
    the same token ids llama.cpp evaluates when it answers."""
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator(Path(base_gguf), n_threads=1, n_ctx=n_ctx)
    gen.load()
    return gen


def end_of_turn_id(codec: Any) -> int:
    """The token that ends an assistant turn (<|im_end|> for ChatML); the target ends with it
    so the adapter learns to stop."""
    return int(codec.llama.token_eos())


# ----------------------------------------------------------------------------- data
def encode_example(codec: Any, example: TrainExample) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: -100 on the prompt, the target's ids after it.

    The prompt and the target are tokenized separately, as they are when serving: llama.cpp
    tokenizes the rendered prompt, then the model produces the answer token by token.
    """
    messages = example.messages
    if not messages or messages[-1].get("role") != "assistant":
        raise TrainingError(
            "a training example must end with the assistant's message (the target)",
            fix="append {'role': 'assistant', 'content': ...} to each example",
        )
    prompt_ids = codec.tokenize(codec.render(messages[:-1]))
    target = messages[-1]["content"]
    target_ids = codec.llama.tokenize(target.encode("utf-8"), add_bos=False, special=False)
    target_ids = list(target_ids) + [end_of_turn_id(codec)]
    ids = list(prompt_ids) + target_ids
    labels = [-100] * len(prompt_ids) + target_ids
    return ids, labels


def build_dataset(
    codec: Any, examples: Sequence[TrainExample], max_seq_len: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encoded examples that fit ``max_seq_len`` and how many did not.

    An example that does not fit is skipped, not truncated: cutting the prompt would train
    on prompts the server never builds, cutting the target would teach the model to stop
    mid-sentence.
    """
    data, skipped = [], 0
    for example in examples:
        ids, labels = encode_example(codec, example)
        if len(ids) > max_seq_len:
            skipped += 1
            continue
        data.append((ids, labels))
    return data, skipped


#: Batches are drawn from windows of this many batches' worth of shuffled examples, sorted
#: by length inside the window, so the examples of one batch have similar lengths.
LENGTH_WINDOW = 16


def batches(
    data: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    seed: int,
    *,
    window: int = LENGTH_WINDOW,
) -> Iterator[dict[str, Any]]:
    """Endless shuffled batches (a new permutation each epoch), right-padded to the longest.

    Every example is seen once per epoch. Inside each window of ``window`` batches the
    examples are grouped by length and the batches' order shuffled again: a short reader
    example (~60 tokens) then shares its batch with other short ones instead of being
    padded to a 400-token RAFT prompt, which wasted most of a mixed batch's compute.
    ``window=1`` is plain random batching.
    """
    import torch

    rng = random.Random(seed)
    queue: list[list[int]] = []
    while True:
        if not queue:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            span = batch_size * max(1, window)
            for start in range(0, len(perm), span):
                part = sorted(perm[start : start + span], key=lambda i: len(data[i][0]))
                groups = [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
                rng.shuffle(groups)
                queue.extend(groups)
        take = queue.pop(0)
        rows = [data[i] for i in take]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, lab) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            mask[r, : len(ids)] = 1
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


# ----------------------------------------------------------------------------- model
_base_cache: dict[tuple, Any] | None = None


@contextlib.contextmanager
def reuse_base_model() -> Iterator[None]:
    """Keep the de-quantized base model in memory for the block.

    De-quantizing the GGUF takes ~20 s on two cores (most of it parsing the vocabulary);
    a refresh loads it for training and again for the parity check. Inside this block the
    second load is a copy. Outside, nothing is kept, so a long-lived worker does not hold
    half a gigabyte of fp32 weights between nightly runs.
    """
    global _base_cache
    outer = _base_cache
    if outer is None:
        _base_cache = {}
    try:
        yield
    finally:
        if outer is None:
            _base_cache = None


def load_base_model(base_gguf: Path) -> Any:
    """The GGUF model de-quantized into a torch ``LlamaForCausalLM`` (fp32, CPU, eval mode)."""
    from transformers import AutoModelForCausalLM

    base_gguf = Path(base_gguf)
    stat = base_gguf.stat()
    key = (str(base_gguf.resolve()), stat.st_size, stat.st_mtime_ns)
    if _base_cache is not None and key in _base_cache:
        return copy.deepcopy(_base_cache[key])
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(base_gguf.parent), gguf_file=base_gguf.name, local_files_only=True
    )
    model.eval()
    log.info("de-quantized %s into torch in %.1f s", base_gguf.name, time.perf_counter() - started)
    if _base_cache is not None:
        _base_cache.clear()
        _base_cache[key] = model
        return copy.deepcopy(model)
    return model


def build_lora_model(base: Any, config: LoraConfig) -> Any:
    """Wrap the base model with trainable LoRA matrices; everything else is frozen."""
    import peft

    unknown = set(config.target_modules) - set(SUPPORTED_MODULES)
    if unknown:
        raise TrainingError(
            f"LoRA target modules {sorted(unknown)} are not supported",
            fix=f"choose from {', '.join(SUPPORTED_MODULES)}",
        )
    peft_config = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(base, peft_config)


# ----------------------------------------------------------------------------- training
def target_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the target tokens, the vocabulary projection computed only there.

    What ``model(**batch).loss`` computes, without its largest waste: the logits of every
    prompt position. A RAFT example is ~250 prompt tokens and ~15 target tokens, and the
    projection onto SmolLM2's 49,152-token vocabulary (with its softmax, forward and
    backward) is a fifth of the model's arithmetic per position and most of its memory
    traffic. Only positions whose next token is a target carry loss, so only those are
    projected.
    """
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(inner, "model", None), getattr(inner, "lm_head", None)
    if body is None or head is None:  # not a decoder + head: let the model compute it
        return model(**batch).loss
    hidden = body(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


#: With ``threads`` unset, one step at each candidate thread count is timed after the
#: warm-up step and again every this many steps (the load of a shared machine changes
#: over a night).
THREAD_PROBE_EVERY = 50


class ThreadChoice:
    """Whether 1 thread or every core trains faster on this machine now.

    On an idle machine every core should win. On a shared one, torch's OpenMP threads
    wait for each other at every barrier, and a thread that has lost its core to another
    process stalls all of them: measured at load 7-9 on two cores (bench/lora_throughput.py
    --threads 0), a step on one thread ran 76-87 tokens/s against 14 on two. So, unless
    the thread count is set, a step at each count is timed (seconds per batch token,
    padding included, as it is computed) and the faster kept until the next probe.
    """

    def __init__(self, cores: int, every: int = THREAD_PROBE_EVERY) -> None:
        self.candidates = sorted({1, max(1, cores)}, reverse=True)
        self.every = max(every, len(self.candidates) + 1)
        self.best = self.candidates[0]
        self.trial: dict[int, float] = {}

    def _phase(self, step: int) -> int | None:
        """Which candidate step ``step`` (1-based) tries, None when it runs the best."""
        if step < 2 or len(self.candidates) == 1:
            return None
        phase = (step - 2) % self.every
        return phase if phase < len(self.candidates) else None

    def threads_for(self, step: int) -> int:
        phase = self._phase(step)
        return self.best if phase is None else self.candidates[phase]

    def record(self, step: int, threads: int, seconds: float, cells: int) -> None:
        phase = self._phase(step)
        if phase is None:
            return
        self.trial[threads] = seconds / max(1, cells)
        if phase == len(self.candidates) - 1:
            best = min(self.trial, key=self.trial.__getitem__)
            if best != self.best:
                log.info(
                    "training: %d thread(s) step faster than %d now (%s s per 1k tokens)",
                    best, self.best,
                    ", ".join(f"{n}: {v * 1000:.2f}" for n, v in sorted(self.trial.items())),
                )  # fmt: skip
            self.best, self.trial = best, {}


class LoraTrainer:
    """One training run's data, model, optimiser and batch stream; :meth:`step` is one
    optimiser step.

    Built once (tokenising the examples, de-quantizing the base model: ``load_seconds``);
    :func:`train_lora` drives it under the budget, and ``bench/lora_throughput.py`` steps it
    in turns with a plain peft loop so both are measured under the same load. A set
    ``config.threads`` is the caller's (:func:`torch_threads`); unset, each step picks its
    thread count (:class:`ThreadChoice`).
    """

    def __init__(self, base_gguf: Path, examples: Sequence[TrainExample], config: LoraConfig):
        import torch

        started = time.perf_counter()
        if config.batch_size < 1 or config.max_steps < 1 or config.rank < 1 or config.min_steps < 0:
            raise TrainingError(
                "batch_size, max_steps and rank must be at least 1, min_steps at least 0",
                fix="fix the training settings",
            )
        if config.precision not in ("auto", "fp32", "bf16"):
            raise TrainingError(
                f"unknown training precision {config.precision!r}",
                fix='use "auto", "fp32" or "bf16"',
            )
        self.config = config
        self.device = resolve_device(config.device)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        codec = chat_codec(base_gguf, n_ctx=max(config.max_seq_len, 512))
        try:
            self.data, self.skipped = build_dataset(codec, examples, config.max_seq_len)
            pad_id = end_of_turn_id(codec)
        finally:
            codec.close()
        if not self.data:
            raise TrainingError(
                f"none of the {len(examples)} training examples fits in "
                f"{config.max_seq_len} tokens",
                fix="provide examples, or raise the training max_seq_len",
            )
        if self.skipped:
            log.warning(
                "skipped %d of %d training examples longer than %d tokens",
                self.skipped, len(examples), config.max_seq_len,
            )  # fmt: skip
        self.model = build_lora_model(load_base_model(base_gguf), config)
        if self.device != "cpu":
            self.model.to(self.device)
        precision = config.precision
        if precision == "auto":
            precision = "bf16" if self.device == "cuda" else "fp32"
        self.precision = precision
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        self.stream = batches(self.data, config.batch_size, pad_id, config.seed)
        self.model.train()
        self.threads = (
            ThreadChoice(cpu_count()) if config.threads is None and self.device == "cpu" else None
        )
        self.steps = 0
        #: Batch tokens (padding included) of the last step: what its arithmetic covered.
        self.last_cells = 0
        self.thread_steps: dict[int, int] = {}
        self.load_seconds = time.perf_counter() - started

    def step(self) -> tuple[float, int]:
        """One optimiser step on the next batch: (loss, tokens it held, padding excluded)."""
        import torch

        self.steps += 1
        batch = {k: v.to(self.device) for k, v in next(self.stream).items()}
        threads = torch.get_num_threads()
        if self.threads is not None:
            threads = self.threads.threads_for(self.steps)
            torch.set_num_threads(threads)
        started = time.perf_counter()
        with torch.autocast(
            device_type=self.device, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            loss = target_loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        self.last_cells = int(batch["input_ids"].numel())
        if self.threads is not None:
            seconds = time.perf_counter() - started
            self.threads.record(self.steps, threads, seconds, self.last_cells)
        self.thread_steps[threads] = self.thread_steps.get(threads, 0) + 1
        return value, int(batch["attention_mask"].sum())

    def save(self, out_dir: Path) -> None:
        """The peft files and config.json in ``out_dir``."""
        self.model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out_dir))
        (out_dir / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")


def train_lora(
    base_gguf: Path,
    examples: Sequence[TrainExample],
    out_dir: Path,
    config: LoraConfig,
    progress: Progress | None = None,
    *,
    deadline: float | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples`` and save it (peft files + config.json) in ``out_dir``.

    Stops after ``config.max_steps`` optimizer steps or once ``config.time_budget_s`` of
    training is spent, whichever comes first. The budget clock starts at the first step:
    tokenising and loading the model (``load_seconds``, ~20 s or far more on a loaded
    machine) do not eat it. At least ``config.min_steps`` steps (bounded by ``max_steps``)
    are taken whatever the budget, unless the next step would end past ``deadline`` (a
    ``time.monotonic()`` value: the caller's hard limit); even then one step is taken, so
    the adapter on disk is a trained one.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    with torch_threads(config.threads) as threads:
        trainer = LoraTrainer(base_gguf, examples, config)
        log.info(
            "training LoRA r=%d on %s: %d examples, %d trainable parameters, device=%s "
            "threads=%d precision=%s",
            config.rank, ",".join(config.target_modules), len(trainer.data), trainer.trainable,
            trainer.device, threads, trainer.precision,
        )  # fmt: skip
        losses: list[float] = []
        tokens = 0
        stopped_by = "steps"
        min_steps = min(config.min_steps, config.max_steps)
        loop_started = time.perf_counter()
        step_end = time.monotonic()
        for step in range(1, config.max_steps + 1):
            value, held = trainer.step()
            if not math.isfinite(value):
                raise TrainingError(
                    f"training loss became {value} at step {step}",
                    fix="lower the training learning_rate",
                )
            losses.append(value)
            tokens += held
            if progress is not None:
                progress(step, config.max_steps, value)
            if step == config.max_steps:
                break
            now = time.monotonic()
            step_s, step_end = now - step_end, now
            if deadline is not None and now + step_s > deadline:
                stopped_by = "deadline"  # the next step would end past the hard limit
                break
            if step >= min_steps and time.perf_counter() - loop_started >= config.time_budget_s:
                stopped_by = "budget"
                break
        loop_seconds = time.perf_counter() - loop_started
        trainer.save(out_dir)

    result = TrainResult(
        peft_dir=out_dir,
        steps=len(losses),
        tokens=tokens,
        seconds=time.perf_counter() - started,
        tokens_per_s=tokens / loop_seconds if loop_seconds > 0 else 0.0,
        final_loss=losses[-1],
        losses=losses,
        stopped_by=stopped_by,
        device=trainer.device,
        examples_used=len(trainer.data),
        examples_skipped=trainer.skipped,
        load_seconds=trainer.load_seconds,
        train_seconds=loop_seconds,
        thread_steps=dict(trainer.thread_steps),
    )
    log.info(
        "trained LoRA adapter %s: %d steps (%s), loss %.3f → %.3f, %.0f tokens/s, "
        "%.0f s loading + %.0f s training",
        out_dir.name, result.steps, stopped_by, losses[0], losses[-1],
        result.tokens_per_s, trainer.load_seconds, loop_seconds,
    )  # fmt: skip
    return result


# ----------------------------------------------------------------------------- export
def read_gguf_metadata(base_gguf: Path) -> dict[str, str]:
    """The base GGUF's metadata through llama.cpp (vocab only: fast, no weights read)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(base_gguf), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def permute_rotary_rows(weight: Any, n_head: int) -> Any:
    """Reorder rows the way llama.cpp's converter reorders llama q/k weights.

    Hugging Face llama checkpoints interleave each head's rotary halves differently from
    llama.cpp; the converter permutes q/k rows and transformers' GGUF loader undoes it. A
    LoRA delta ``B @ A`` lives in the output rows, so only ``B`` is permuted.
    """
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def export_gguf_adapter(
    peft_dir: Path, base_gguf: Path, out_path: Path, *, permute_qk: bool = True
) -> Path:
    """Write the peft adapter in ``peft_dir`` as a llama.cpp LoRA adapter at ``out_path``.

    The file appears atomically (written beside it, then renamed). ``permute_qk=False``
    exists only so a test can produce a wrong adapter and see the parity check catch it.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    peft_dir, out_path = Path(peft_dir), Path(out_path)
    cfg_path, weights_path = peft_dir / PEFT_CONFIG, peft_dir / PEFT_WEIGHTS
    if not cfg_path.is_file() or not weights_path.is_file():
        raise AdapterExportError(
            f"{peft_dir} holds no peft adapter ({PEFT_CONFIG} + {PEFT_WEIGHTS})",
            fix="train the adapter again",
        )
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("use_dora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise AdapterExportError(
            "llama.cpp adapters support plain LoRA with one rank and alpha only",
            fix="train without DoRA and without per-module rank or alpha",
        )
    rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):  # peft scales by alpha/sqrt(r), llama.cpp by alpha/r
        alpha = alpha * math.sqrt(rank)

    meta = read_gguf_metadata(base_gguf)
    arch_name = meta.get("general.architecture", "")
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    if arch is None:
        raise AdapterExportError(
            f"base model architecture {arch_name!r} is unknown to gguf",
            fix="upgrade the gguf package",
        )
    n_blocks = int(meta[f"{arch_name}.block_count"])
    n_head = int(meta[f"{arch_name}.attention.head_count"])
    n_head_kv = int(meta.get(f"{arch_name}.attention.head_count_kv", n_head))
    names = gguf.get_tensor_name_map(arch, n_blocks)

    tensors: dict[str, np.ndarray] = {}
    for key, value in load_file(str(weights_path)).items():
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        module, _, part = key.rpartition(".lora_")
        module = module.removeprefix("base_model.model.")
        which = part.split(".")[0]  # "A" or "B"
        target = names.get_name(module)
        if target is None or which not in ("A", "B"):
            raise AdapterExportError(
                f"adapter tensor {key} has no llama.cpp counterpart",
                fix=f"train LoRA only on {', '.join(SUPPORTED_MODULES)}",
            )
        value = value.astype(np.float32)
        if which == "B" and permute_qk and arch_name == "llama":
            if module.endswith("q_proj"):
                value = permute_rotary_rows(value, n_head)
            elif module.endswith("k_proj"):
                value = permute_rotary_rows(value, n_head_kv)
        tensors[f"{target}.weight.lora_{which.lower()}"] = np.ascontiguousarray(value)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch_name)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name in sorted(tensors):
            writer.add_tensor(name, tensors[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %d LoRA tensors (r=%d) to %s", len(tensors), rank, out_path)
    return out_path


# ----------------------------------------------------------------------------- parity
def _pearson(a: Any, b: Any) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(a, b)[0, 1])


def _last_logits(llm: Any) -> Any:
    """The logits llama.cpp computed for the last token of its last batch (a copy).

    The contexts here are opened without ``logits_all``: only the last position's logits
    are needed, and computing the output layer (49,152 rows) for every prompt position
    would cost about a fifth of a 400-token prompt's evaluation for nothing.
    """
    import numpy as np

    ptr = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)


def _llama_run(
    llm: Any, ids: list[int], greedy_tokens: int, is_end: Callable[[int], bool]
) -> tuple[Any, list[int], list[Any]]:
    """llama.cpp's last-position logits of ``ids``, its greedy (argmax) continuation, which
    stops after an end-of-turn token as serving does, and the logits behind each choice."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    last = _last_logits(llm)
    first, out, steps = last, [], []
    for _ in range(greedy_tokens):
        token = int(np.argmax(last))
        out.append(token)
        steps.append(last)
        if is_end(token):
            break
        llm.eval([token])
        last = _last_logits(llm)
    return first, out, steps


def _torch_run(
    model: Any, ids: list[int], greedy_tokens: int, is_end: Callable[[int], bool]
) -> tuple[Any, list[int], list[Any]]:
    """The same as :func:`_llama_run` in torch (with a KV cache, one token per step)."""
    import torch

    with torch.no_grad():
        # Only the last position's logits are compared: the output layer is skipped for the
        # rest of the prompt (as llama.cpp's side skips it).
        step = model(
            input_ids=torch.tensor([ids], dtype=torch.long), use_cache=True, logits_to_keep=1
        )
        last = step.logits[0, -1].float().numpy()
        first, out, steps = last, [], []
        for _ in range(greedy_tokens):
            token = int(last.argmax())
            out.append(token)
            steps.append(last)
            if is_end(token):
                break
            step = model(
                input_ids=torch.tensor([[token]]), past_key_values=step.past_key_values,
                use_cache=True,
            )  # fmt: skip
            last = step.logits[0, -1].float().numpy()
    return first, out, steps


def _compare(cpp: tuple, pt: tuple) -> dict[str, Any]:
    """Correlation of the first logits and where, and how narrowly, the greedy paths part.

    ``gap`` is torch's logit lead of its own choice over llama.cpp's choice at the first
    divergence: near zero means a near-tie that Q4_1 rounding can flip either way.
    """
    (cpp_first, cpp_tokens, cpp_steps), (pt_first, pt_tokens, pt_steps) = cpp, pt
    diverged = next(
        (i for i, (a, b) in enumerate(zip(cpp_tokens, pt_tokens, strict=False)) if a != b), None
    )
    if diverged is None and len(cpp_tokens) != len(pt_tokens):
        diverged = min(len(cpp_tokens), len(pt_tokens))
    gap = step_correlation = step_noise = None
    if diverged is not None and diverged < min(len(cpp_tokens), len(pt_tokens)):
        logits = pt_steps[diverged]
        gap = float(logits[pt_tokens[diverged]] - logits[cpp_tokens[diverged]])
        if diverged < len(cpp_steps):
            # Both runtimes saw the same prefix up to here: how far their logits differ at
            # this very step is the arithmetic noise a lead must stand out from.
            step_correlation, step_noise = _step_noise(cpp_steps[diverged], logits)
    return {
        "correlation": _pearson(cpp_first, pt_first),
        "greedy_match": diverged is None,
        "diverged_at": diverged,
        "gap": gap,
        "step_correlation": step_correlation,
        "step_noise": step_noise,
        "greedy_llama": cpp_tokens,
        "greedy_torch": pt_tokens,
    }


def _step_noise(cpp_logits: Any, pt_logits: Any) -> tuple[float, float]:
    """Pearson correlation of two runtimes' logits for the same prefix, and the spread of
    their difference (its standard deviation, so a constant offset does not count)."""
    import numpy as np

    diff = np.asarray(cpp_logits, dtype=np.float64) - np.asarray(pt_logits, dtype=np.float64)
    return _pearson(cpp_logits, pt_logits), float(diff.std())


def _greedy_ok(row: dict[str, Any], tie_margin: float, min_correlation: float = 0.99) -> bool:
    """Whether a prompt's two greedy continuations agree as far as the runtimes allow.

    They agree when identical, when they part at a near-tie (torch's lead at most
    ``tie_margin`` logits), or when the base model without the adapter already parts on the
    same prompt no later than the adapter does: that depth is where Q4_1 and fp32
    arithmetic separate anyway, so a parting there says nothing about the export. They
    also agree when, at the parting step, the two runtimes' logits still correlate at
    ``min_correlation`` or better and torch's lead is within :data:`NOISE_LEADS` times the
    spread of their difference at that step: a trained adapter sharpens some choices into
    leads above the fixed margin that Q4_1 rounding still flips late in a continuation.
    A wrong export parts early, where the base model still agrees, and drops the
    correlation (at the first token and at the parting step).
    """
    if row["greedy_match"]:
        return True
    if row["gap"] is not None and row["gap"] <= tie_margin:
        return True
    corr, noise = row.get("step_correlation"), row.get("step_noise")
    if (
        row["gap"] is not None and corr is not None and noise is not None
        and corr >= min_correlation and row["gap"] <= NOISE_LEADS * noise
    ):  # fmt: skip
        return True
    base_at = row.get("base_diverged_at")
    return base_at is not None and row["diverged_at"] is not None and base_at <= row["diverged_at"]


def check_parity(
    base_gguf: Path,
    peft_dir: Path,
    adapter_gguf: Path,
    prompts: Sequence[list[dict[str, str]]],
    min_correlation: float = 0.99,
    greedy_tokens: int = 16,
    *,
    threads: int | None = None,
    compare_base: bool = True,
    tie_margin: float = TIE_MARGIN,
    base_prompts: int | None = None,
) -> ParityReport:
    """Compare llama.cpp + the GGUF adapter with torch + the peft adapter on ``prompts``.

    Each prompt is rendered and tokenized once (as serving does) and both runtimes get
    the same ids. Passing needs, for every prompt, a Pearson correlation of the
    last-position logits of at least ``min_correlation`` and the same greedy
    continuation of ``greedy_tokens`` tokens (up to the end of the turn). Where the two
    continuations part at a near-tie, torch preferring its token by at most
    ``tie_margin`` logits, the continuation still counts as matching (see
    :data:`TIE_MARGIN`; ``tie_margin=0`` demands identical tokens). With
    ``compare_base`` the base model without adapters is compared the same way and
    reported beside it, as the floor set by Q4_1 vs de-quantized fp32; a continuation
    that parts no earlier than the base model's own also counts as matching
    (:func:`_greedy_ok`). ``base_prompts`` limits that comparison to the first so many
    prompts (the reported floor) plus any prompt whose adapter continuation parts beyond
    the tie margin, the only case the rule consults the base model for; the verdict is
    the same as comparing every prompt, at about half the cost. Returns the
    report; never raises for a mismatch (the caller decides).
    """
    import llama_cpp
    import peft

    started = time.perf_counter()
    n_threads = threads or min(os.cpu_count() or 1, 4)
    with torch_threads(n_threads):
        codec = chat_codec(base_gguf)
        try:
            token_ids = [codec.tokenize(codec.render(list(p))) for p in prompts]
        finally:
            codec.close()
        n_ctx = max((len(t) for t in token_ids), default=0) + greedy_tokens + 8
        n_ctx = max(64, n_ctx)

        def open_llama(lora: Path | None) -> Any:
            return llama_cpp.Llama(
                str(base_gguf),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                lora_path=str(lora) if lora else None,
                verbose=False,
            )

        model = peft.PeftModel.from_pretrained(load_base_model(base_gguf), str(peft_dir))
        model.eval()
        details: list[dict] = []
        base_llm = open_llama(None) if compare_base else None
        lora_llm = open_llama(Path(adapter_gguf))
        vocab = llama_cpp.llama_model_get_vocab(lora_llm.model)

        def is_end(token: int) -> bool:
            return bool(llama_cpp.llama_vocab_is_eog(vocab, token))

        try:
            for i, ids in enumerate(token_ids):
                pt = _torch_run(model, ids, greedy_tokens, is_end)
                row = {"prompt": i, "tokens": len(ids)}
                row.update(_compare(_llama_run(lora_llm, ids, greedy_tokens, is_end), pt))
                # only the base model can excuse it
                needed = not _greedy_ok(row, tie_margin, min_correlation)
                if base_llm is not None and (base_prompts is None or i < base_prompts or needed):
                    with model.disable_adapter():
                        base_pt = _torch_run(model, ids, greedy_tokens, is_end)
                    base = _compare(_llama_run(base_llm, ids, greedy_tokens, is_end), base_pt)
                    row.update({f"base_{k}": v for k, v in base.items()})
                    row["adapter_effect"] = 1.0 - _pearson(base_pt[0], pt[0])
                row["greedy_ok"] = _greedy_ok(row, tie_margin, min_correlation)
                details.append(row)
        finally:
            lora_llm.close()
            if base_llm is not None:
                base_llm.close()

    corr = min((d["correlation"] for d in details), default=float("nan"))
    report = ParityReport(
        correlation_min=corr,
        greedy_match=all(d["greedy_ok"] for d in details),
        prompts=len(details),
        passed=bool(details) and corr >= min_correlation and all(d["greedy_ok"] for d in details),
        details=details,
        base_correlation_min=min(
            (d["base_correlation"] for d in details if "base_correlation" in d),
            default=float("nan"),
        ),
        base_greedy_match=all(d.get("base_greedy_match", True) for d in details),
        greedy_exact=all(d["greedy_match"] for d in details),
        seconds=time.perf_counter() - started,
        base_prompts=sum(1 for d in details if "base_correlation" in d),
    )
    log.info(
        "parity of %s: correlation min %.5f (base %.5f), greedy match %s (base %s): %s",
        Path(adapter_gguf).name, report.correlation_min, report.base_correlation_min,
        report.greedy_match, report.base_greedy_match, "passed" if report.passed else "FAILED",
    )  # fmt: skip
    for d in details:
        if not d["greedy_ok"]:
            log.warning(
                "parity: prompt %d parts at token %s by a lead of %s logits (step correlation %s,"
                " noise %s; base model parts at %s)", d["prompt"], d["diverged_at"],
                _fmt(d["gap"]), _fmt(d.get("step_correlation"), 5), _fmt(d.get("step_noise")),
                d.get("base_diverged_at"),
            )  # fmt: skip
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
