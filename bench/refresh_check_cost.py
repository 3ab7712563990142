"""What the refresh's parity check and gate cost, and where the time goes.

    python bench/refresh_check_cost.py parity [--threads 1] [--old PATH/TO/lora.py]
    python bench/refresh_check_cost.py gate [--threads 1] [--probes 8]

``parity``: an adapter with random LoRA matrices is exported and checked on three grounded
prompts of the sample handbook (as the refresh checks its first three training prompts,
8 greedy tokens): the base model compared on the first prompt and where the rule needs it
(``base_prompts=1``, what the refresh runs) and on every prompt; with ``--old``, the same
check by another copy of ``slm/training/lora.py`` (e.g. an older commit's), imported from
that file. ``gate``: the base model asked ``--probes`` held-out questions (pairs extracted
from four handbook pages) and their distractor-only twins through the answer path, each
model call's prompt and decode time recorded; then the same again through the gate's
answer cache. Wall and CPU seconds and the load average are printed with each figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import console, loadavg

from lorebot.assets import answer_model_path, sample_docs_dir

PAGES = ("annual_leave.md", "expenses.md", "remote_work.md", "sick_leave.md")


class Clock:
    def __enter__(self) -> Clock:
        self.t, self.c = time.perf_counter(), os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        c = os.times()
        self.wall = time.perf_counter() - self.t
        self.cpu = c.user - self.c.user + c.system - self.c.system

    def __str__(self) -> str:
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} CPU-s, load {loadavg()}"


def _index(root: Path, threads: int):
    from ingest import Source, build_index
    from ingest.embed import Embedder
    from ingest.store import open_index
    from tests.conftest import make_settings

    docs = root / "docs"
    docs.mkdir(parents=True)
    for name in PAGES:
        shutil.copy(sample_docs_dir() / name, docs / name)
    s = make_settings(root / "data", model={"n_threads": threads})
    embedder = Embedder.from_settings(s)
    build_index(s, [Source(path=docs, collection="handbook")], progress=False, embedder=embedder)
    return s, embedder, open_index(s, embedder=embedder)


def parity(args: argparse.Namespace) -> None:
    import torch

    from slm.serving.generator import LlamaGenerator
    from slm.serving.prompt import build_messages
    from slm.training import lora

    root = Path(tempfile.mkdtemp(prefix="parity-cost-"))
    base = answer_model_path()
    s, _, reader = _index(root, args.threads)
    questions = [
        "How many days of annual leave do I get?",
        "How long do I have to submit an expense claim?",
        "How many days can I work from another country?",
    ]
    gen = LlamaGenerator(base, n_threads=1)
    prompts = []
    for q in questions:
        hits = reader.search(q, k=s.retrieval.top_k, collections=["handbook"])
        messages, _ = build_messages(
            q, hits, [], context_tokens=s.retrieval.context_tokens, count_tokens=gen.count_tokens
        )
        prompts.append(messages)
    gen.close()
    reader.close()
    checks = [
        ("base_prompts=1 (the refresh)", lora, {"base_prompts": 1}),
        ("every prompt", lora, {}),
    ]
    if args.old:
        spec = importlib.util.spec_from_file_location("lora_old", args.old)
        old = importlib.util.module_from_spec(spec)
        sys.modules["lora_old"] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
        checks.append((f"{args.old}", old, {}))
    with lora.reuse_base_model():
        model = lora.build_lora_model(lora.load_base_model(base), lora.LoraConfig(rank=8))
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.02)
        model.save_pretrained(root / "peft")
        adapter = lora.export_gguf_adapter(root / "peft", base, root / "adapter.gguf")
        for label, module, kw in checks:
            with module.reuse_base_model():
                module.load_base_model(base)  # de-quantized once, as in the refresh
                with Clock() as clock:
                    r = module.check_parity(
                        base, root / "peft", adapter, prompts, greedy_tokens=8,
                        threads=args.threads, **kw,
                    )  # fmt: skip
            console.print(
                f"{label}: {clock} — passed {r.passed}, correlation {r.correlation_min:.5f}, "
                f"base {r.base_correlation_min:.5f} on {getattr(r, 'base_prompts', r.prompts)} "
                f"prompt(s), tokens {[d['tokens'] for d in r.details]}"
            )
    shutil.rmtree(root, ignore_errors=True)


def gate(args: argparse.Namespace) -> None:
    from lorebot.types import SearchHit
    from slm.serving.generator import LlamaGenerator
    from slm.training.gate import (
        AbstentionProbe,
        AnswerCache,
        GateInputs,
        evaluate_model,
        probes_from_pairs,
    )
    from slm.training.pairs import extract_pairs, iter_chunks
    from slm.training.raft import distractors_for

    root = Path(tempfile.mkdtemp(prefix="gate-cost-"))
    s, embedder, reader = _index(root, args.threads)
    pairs = [p for c in iter_chunks(reader, ["handbook"]) for p in extract_pairs(c)]
    probes = random.Random(0).sample(pairs, min(args.probes, len(pairs)))
    no_gold = []
    for p in probes:
        others = distractors_for(p, reader, ["handbook"], 2, min_support=s.training.min_support)
        if others:
            hits = [SearchHit(chunk=c, score=0.9, dense_score=0.9) for c in others]
            no_gold.append(AbstentionProbe(p.question, hits))
    inputs = GateInputs(heldout=probes_from_pairs(probes), no_gold=no_gold)
    cache = AnswerCache(root / "cache")
    for label in ("first run", "again, through the answer cache"):
        gen = LlamaGenerator.from_settings(s, exclusive=True)
        with Clock() as load:
            gen.load()
        calls = []
        asked = cache.wrap(gen)
        inner = gen.generate

        def timed(messages, _inner=inner, _calls=calls, **kw):
            g = _inner(messages, **kw)
            _calls.append(g)
            return g

        gen.generate = timed
        with Clock() as clock:
            scores = evaluate_model(
                "base", asked, inputs, retriever=reader, settings=s, embedder=embedder,
                collections=["handbook"],
            )  # fmt: skip
        gen.close()
        prompt = sum(g.timings_ms.get("prompt", 0) for g in calls) / 1000
        decode = sum(g.timings_ms.get("decode", 0) for g in calls) / 1000
        n = len(calls)
        console.print(
            f"{label}: {len(inputs.heldout)} + {len(inputs.no_gold)} probes, "
            f"{s.threads_per_process(exclusive=True)} thread(s): {clock} (model load "
            f"{load.wall:.1f} s); model calls {n}, prompt eval {prompt:.1f} s, decode "
            f"{decode:.1f} s, the rest {clock.wall - prompt - decode:.1f} s; prompt tokens "
            f"{sum(g.prompt_tokens for g in calls) / max(n, 1):.0f} (evaluated "
            f"{sum(g.prompt_tokens_evaluated or 0 for g in calls) / max(n, 1):.0f}) and "
            f"completion tokens {sum(g.completion_tokens for g in calls) / max(n, 1):.0f} "
            f"per call, {sum(g.finish_reason == 'length' for g in calls)} cut at max_tokens; "
            f"scores {scores.flat()}"
        )
    cache.save()
    reader.close()
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("parity", "gate"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--old", help="parity: another lora.py to time beside this one")
    args = ap.parse_args()
    parity(args) if args.what == "parity" else gate(args)


if __name__ == "__main__":
    main()
