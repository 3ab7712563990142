"""Answer latency through the whole bot path, part by part, against raw llama.cpp in the same run.

    python bench/answer_latency.py                       # sample handbook, every sample question
    python bench/answer_latency.py --source xquad --limit 30

For each question: a task is submitted to a real Redis and answered by a real
``lorebot worker`` process (one process, ``--threads`` llama.cpp threads), and the round
trip is timed (task submitted -> result received). The worker reports its parts
(retrieve, prompt build, generate, first token, llama.cpp's own prompt-eval and decode
time). Then, in this process, the same final prompt text (rebuilt by running the same
answer path over the same index up to the model call, rendered with the model's chat
template, and checked to have the worker's token count) is run through llama-cpp-python's
low-level API (``llama_decode`` + a greedy sampler on a plain ``llama_cpp.Llama`` with the
same model, threads and batch size) for the same number of output tokens, twice:

* ``raw (prefix cache)``: keeping the KV cache of the previous prompt's common prefix,
  exactly the work the worker's generator does (it reuses the system prompt's cache);
* ``raw (cold)``: the whole prompt evaluated from an empty cache.

Raw runs right after ours, question by question, so a change in the shared machine's
load hits both. The overhead ratio is (ours - raw) / raw; the issue's target is <= 10%
against raw llama.cpp doing the same work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Asker,
    Redis,
    Worker,
    console,
    exit_cleanly_on_sigterm,
    fmt_ms,
    loadavg,
    make_workload,
    save,
    summary,
)
from rich.table import Table

from lorebot.settings import Settings, cpu_count


class RawLlama:
    """Greedy decoding with nothing but llama.cpp calls: decode, sample, decode, ..."""

    def __init__(self, model_path: Path, *, n_threads: int, n_ctx: int, n_batch: int = 512) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_batch=min(n_batch, n_ctx),
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.ctx = self.llm.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.sampler = llama_cpp.llama_sampler_init_greedy()
        self.n_batch = min(n_batch, n_ctx)
        self.cached: list[int] = []  # tokens whose keys/values are in the cache, in order

    def _decode(self, tokens: list[int]) -> None:
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start : start + self.n_batch]
            arr = (self.lc.llama_token * len(part))(*part)
            rc = self.lc.llama_decode(self.ctx, self.lc.llama_batch_get_one(arr, len(part)))
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")

    def run(self, tokens: list[int], n_out: int, *, reuse_prefix: bool) -> dict[str, Any]:
        """Evaluate the prompt (all of it, or past the cached prefix); decode n_out tokens."""
        started = time.perf_counter()
        keep = 0
        if reuse_prefix:
            for a, b in zip(self.cached, tokens):
                if a != b:
                    break
                keep += 1
            keep = min(keep, len(tokens) - 1)  # at least one token to produce fresh logits
        if keep == 0:
            self.lc.llama_memory_clear(self.memory, True)
        else:
            self.lc.llama_memory_seq_rm(self.memory, 0, keep, -1)
        self._decode(tokens[keep:])
        token = self.lc.llama_sampler_sample(self.sampler, self.ctx, -1)
        first = time.perf_counter()
        out = [token]
        for _ in range(max(0, n_out - 1)):
            self._decode([token])
            token = self.lc.llama_sampler_sample(self.sampler, self.ctx, -1)
            out.append(token)
        ended = time.perf_counter()
        self.cached = list(tokens) + out[:-1]
        return {
            "total_ms": (ended - started) * 1000,
            "prompt_ms": (first - started) * 1000,
            "decode_ms": (ended - first) * 1000,
            "evaluated": len(tokens) - keep,
            "text": self.llm.detokenize(out).decode("utf-8", errors="replace"),
        }

    def close(self) -> None:
        self.lc.llama_sampler_free(self.sampler)
        self.llm.close()


class _CapturePrompt:
    """A generator stand-in that records the messages the answer path builds, then stops it.

    Running :func:`slm.serving.answer.answer_question` itself (rather than re-implementing its
    retrieval and prompt steps) keeps the rebuilt prompt right whatever the answer path
    does before the model; token counts come from the real model's tokenizer.
    """

    adapter = None

    def __init__(self, real: Any) -> None:
        self.real = real
        self.messages: list[dict[str, str]] | None = None

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)

    def generate(
        self, messages: list[dict[str, str]], *, max_tokens: int, on_token: Any = None
    ) -> Any:
        from slm.serving.generator import Generation

        self.messages = [dict(m) for m in messages]
        return Generation(text="x", prompt_tokens=0, completion_tokens=0)


def rebuild_prompt(
    settings: Settings, index: Any, generator: Any, question: str
) -> tuple[str, list[int]]:
    """The final prompt text the answer path gives the model for a question (no history)."""
    from lorebot.types import Question
    from slm.serving.answer import answer_question

    capture = _CapturePrompt(generator)
    answer_question(
        Question(text=question), index, capture, retrieval=settings.retrieval, model=settings.model
    )
    if capture.messages is None:
        raise RuntimeError(f"the answer path did not call the model for {question!r}")
    prompt = generator.render(capture.messages)
    return prompt, generator.tokenize(prompt)


def ratio(ours: float, raw: float) -> float | None:
    return (ours - raw) / raw if raw > 0 else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--source", choices=("sample", "xquad"), default="sample")
    ap.add_argument(
        "--limit",
        type=int,
        default=None,
        help="questions (default: all sample questions; xquad: 30)",
    )
    ap.add_argument(
        "--threads", type=int, default=cpu_count(), help="llama.cpp threads, worker and raw alike"
    )
    ap.add_argument("--warmup", type=int, default=2, help="questions asked first and not measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--name", default="answer-latency", help="results file name (bench/results/NAME.json)"
    )
    args = ap.parse_args(argv)
    exit_cleanly_on_sigterm()
    limit = args.limit if args.limit is not None else (30 if args.source == "xquad" else None)

    started_load = loadavg()
    console.rule(f"answer latency · {args.source} · {args.threads} threads · load {started_load}")
    from ingest import open_index
    from ingest.embed import Embedder
    from lorebot.assets import answer_model_path
    from slm.serving.generator import LlamaGenerator

    embedder = Embedder(None, threads=args.threads)
    workload = make_workload(args.source, limit=limit, seed=args.seed, embedder=embedder)
    redis = worker = raw = index = None
    rows: list[dict[str, Any]] = []
    try:
        # Raw llama.cpp is compared on the same generated tokens: the generating path.
        settings = Settings(
            data_dir=workload.data_dir,
            model={"n_threads": args.threads, "answer_mode": "generate"},
        )
        redis = Redis(workload.workdir)
        worker = Worker(
            workload.data_dir,
            redis.url,
            workload.workdir / "worker.log",
            processes=1,
            threads=args.threads,
            extra_env={"LOREBOT_MODEL__ANSWER_MODE": "generate"},
        )
        worker.wait_ready()
        asker = Asker(redis.url)
        index = open_index(settings, embedder=embedder)
        model_path = answer_model_path(settings.model.path)
        generator = LlamaGenerator(model_path, n_threads=args.threads, n_ctx=settings.model.n_ctx)
        generator.load()
        raw = RawLlama(model_path, n_threads=args.threads, n_ctx=settings.model.n_ctx)

        # Warm up on the last questions: asking the first one twice in a row would let the
        # worker's KV cache hold its whole prompt.
        for text in workload.questions[-args.warmup :] if args.warmup > 0 else []:
            answer, _ = asker.ask(text)
            if "generate" in answer.timings_ms:
                _, tokens = rebuild_prompt(settings, index, generator, text)
                raw.run(tokens, max(1, answer.completion_tokens), reuse_prefix=True)
        console.print(f"[dim]warm-up: {args.warmup} questions[/]")

        for i, text in enumerate(workload.questions, start=1):
            answer, roundtrip = asker.ask(text)
            t = answer.timings_ms
            row: dict[str, Any] = {
                "question": text,
                "abstained": answer.abstained,
                "model_called": "generate" in t,
                "roundtrip_ms": roundtrip,
                "timings_ms": t,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            }
            if row["model_called"]:
                _, tokens = rebuild_prompt(settings, index, generator, text)
                row["prompt_match"] = len(tokens) == answer.prompt_tokens
                n_out = max(1, answer.completion_tokens)
                # Right after ours, so a change in the shared machine's load hits both.
                warm = raw.run(tokens, n_out, reuse_prefix=True)
                cold = raw.run(tokens, n_out, reuse_prefix=False)
                row["raw_prefix"] = {k: v for k, v in warm.items() if k != "text"}
                row["raw_cold"] = {k: v for k, v in cold.items() if k != "text"}
                row["raw_text"] = warm["text"][:200]
                row["answer"] = answer.answer[:200]
            rows.append(row)
            console.print(
                f"[dim]{i:>3}/{len(workload.questions)} {fmt_ms(roundtrip)} ms ours"
                + (
                    f", {fmt_ms(row['raw_prefix']['total_ms'])} ms raw"
                    if row["model_called"]
                    else ", no model call"
                )
                + f" · {text[:60]}[/]"
            )
    finally:
        for thing in (raw, index, worker, redis):
            if thing is not None:
                thing.close()
        workload.close()

    report(rows, args, started_load, limit)


def report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    started_load: list[float] | None,
    limit: int | None,
) -> None:
    called = [r for r in rows if r["model_called"]]
    matched = [r for r in called if r.get("prompt_match")]
    parts: dict[str, dict[str, Any]] = {}

    def part(name: str, values: list[float]) -> None:
        parts[name] = summary(values)

    def task_ms(r: dict[str, Any]) -> float:
        return r["timings_ms"].get("task", r["roundtrip_ms"])

    t = [r["timings_ms"] for r in called]
    part("roundtrip (task submitted -> result)", [r["roundtrip_ms"] for r in called])
    part("  queue + transport (roundtrip - task)", [r["roundtrip_ms"] - task_ms(r) for r in called])
    part(
        "  task outside answer path (task - total)",
        [task_ms(r) - r["timings_ms"]["total"] for r in called],
    )
    part("  answer path (total)", [x["total"] for x in t])
    part("    retrieve", [x["retrieve"] for x in t])
    part("    prompt build", [x["prompt_build"] for x in t])
    part("    evidence quote", [x.get("evidence", 0.0) for x in t])
    part("    generate", [x["generate"] for x in t])
    part("      llama.cpp prompt eval", [x["prompt_eval"] for x in t])
    part("      llama.cpp decode", [x["decode"] for x in t])
    part(
        "      render + tokenize + stream (generate - eval - decode)",
        [x["generate"] - x["prompt_eval"] - x["decode"] for x in t],
    )
    part("first token (answer path start -> first piece)", [x["first_token"] for x in t])
    part(
        "first token incl. queue + transport (upper bound)",
        [r["timings_ms"]["first_token"] + r["roundtrip_ms"] - task_ms(r) for r in called],
    )
    part("raw llama.cpp, prefix cache (same work)", [r["raw_prefix"]["total_ms"] for r in matched])
    part("raw llama.cpp, cold cache (whole prompt)", [r["raw_cold"]["total_ms"] for r in matched])
    part("raw first token, prefix cache", [r["raw_prefix"]["prompt_ms"] for r in matched])
    part(
        "questions abstained before the model (roundtrip)",
        [r["roundtrip_ms"] for r in rows if not r["model_called"]],
    )

    ours = sum(r["roundtrip_ms"] for r in matched)
    raw_warm = sum(r["raw_prefix"]["total_ms"] for r in matched)
    raw_cold = sum(r["raw_cold"]["total_ms"] for r in matched)
    model_inside = sum(r["timings_ms"]["prompt_eval"] + r["timings_ms"]["decode"] for r in matched)
    n = len(matched)
    overhead = {
        "questions_compared": n,
        "prompt_mismatches": len(called) - n,
        "ratio_vs_raw_prefix_cache": ratio(ours, raw_warm),
        "ratio_vs_raw_cold": ratio(ours, raw_cold),
        "ratio_p50_per_question_vs_raw_prefix": summary(
            [ratio(r["roundtrip_ms"], r["raw_prefix"]["total_ms"]) for r in matched]
        )["p50"],
        "non_model_share_of_roundtrip": (ours - model_inside) / ours if ours else None,
        "target": "<= 0.10 (everything except the model's own prompt processing and decoding)",
        "mean_prompt_tokens": sum(r["prompt_tokens"] for r in matched) / n if n else None,
        "mean_prompt_tokens_evaluated_raw_prefix": sum(
            r["raw_prefix"]["evaluated"] for r in matched
        )
        / n
        if n
        else None,
        "mean_completion_tokens": sum(r["completion_tokens"] for r in matched) / n if n else None,
    }

    table = Table(
        "part",
        "p50 ms",
        "p95 ms",
        "n",
        title=f"answer latency · {args.source} · {args.threads} threads",
        title_justify="left",
    )
    for name, s in parts.items():
        table.add_row(name, fmt_ms(s["p50"]), fmt_ms(s["p95"]), str(s["n"]))
    console.print(table)
    o = Table(
        "overhead",
        "value",
        title="ours vs raw llama.cpp (sums over the compared questions)",
        title_justify="left",
    )

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:+.1f}%"

    o.add_row(
        "(ours - raw) / raw, raw with the same prefix cache",
        pct(overhead["ratio_vs_raw_prefix_cache"]),
    )
    o.add_row("(ours - raw) / raw, raw from a cold cache", pct(overhead["ratio_vs_raw_cold"]))
    o.add_row(
        "per-question p50 ratio vs prefix-cache raw",
        pct(overhead["ratio_p50_per_question_vs_raw_prefix"]),
    )
    o.add_row("non-model share of our round trip", pct(overhead["non_model_share_of_roundtrip"]))
    o.add_row(
        "questions compared / prompt mismatches",
        f"{overhead['questions_compared']} / {overhead['prompt_mismatches']}",
    )
    o.add_row(
        "mean prompt tokens (evaluated with prefix cache)",
        f"{overhead['mean_prompt_tokens'] or 0:.0f} "
        f"({overhead['mean_prompt_tokens_evaluated_raw_prefix'] or 0:.0f})",
    )
    o.add_row("mean answer tokens", f"{overhead['mean_completion_tokens'] or 0:.1f}")
    console.print(o)
    save(
        args.name,
        {
            "source": args.source,
            "threads": args.threads,
            "limit": limit,
            "parts_ms": parts,
            "overhead": overhead,
            "rows": rows,
        },
        started_load=started_load,
    )


if __name__ == "__main__":
    main()
