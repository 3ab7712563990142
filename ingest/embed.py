"""MiniLM sentence embeddings, loaded lazily once per process, offline, on the CPU.

Large batches (ingestion) run through sentence-transformers on torch. The few short texts
of a question (the query, a couple of sentences for the evidence quote) can run through
ONNX Runtime instead: for a 20-token input it takes ~3 ms where torch's per-call overhead
makes it ~10 ms, with the same vectors (max difference ~1e-7). The ONNX graph is exported
from the installed MiniLM weights on first use and kept in ``onnx_dir``; nothing is fetched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lorebot.assets import embedding_model_path
from lorebot.settings import cpu_count

log = logging.getLogger(__name__)

DIM = 384
#: Most texts one encode call may have to take the ONNX Runtime path.
SMALL_BATCH = 8
#: Largest difference allowed between ONNX Runtime's and torch's vector of a probe text.
ONNX_TOLERANCE = 1e-4


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` scaled to unit length (an all-zero row stays zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


def offline_env() -> None:
    """Forbid every hub download before a model library is imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers: L2-normalised float32 vectors.

    The model loads on first use (not in the constructor) so processes that never embed
    (a no-change re-ingest, the bot) pay nothing. ``threads`` sets torch's intra-op
    threads for the whole process when the model loads: worker processes pass their share
    of the cores so several of them do not oversubscribe the CPU.
    """

    dim = DIM

    def __init__(
        self,
        model_dir: Path | str | None = None,
        batch_size: int = 64,
        *,
        threads: int | None = None,
        onnx_dir: Path | None = None,
    ) -> None:
        self.model_dir = embedding_model_path(Path(model_dir) if model_dir else None)
        self.batch_size = batch_size
        self.threads = threads or cpu_count()
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
        self._model: Any = None
        self._lock = threading.Lock()
        self._counter = None
        self._onnx: Any = None  # an onnxruntime session once ready; False once it failed

    @classmethod
    def from_settings(cls, settings: Any, *, exclusive: bool = False) -> Embedder:
        """The configured embedder (``settings``: :class:`lorebot.settings.Settings`).

        Threads follow :meth:`Settings.threads_per_process` (``exclusive`` for an index
        build or the refresh, which run alone); queries go through the ONNX export kept
        under ``settings.models_dir``.
        """
        return cls(
            settings.index.embedding_model,
            batch_size=settings.index.embed_batch_size,
            threads=settings.threads_per_process(exclusive=exclusive),
            onnx_dir=settings.models_dir,
        )

    @property
    def name(self) -> str:
        """A stable label of the model (recorded in index manifests)."""
        return self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                offline_env()
                import torch
                from sentence_transformers import SentenceTransformer

                try:  # the weight-loading bar would garble the CLI's own progress
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except Exception:
                    pass
                torch.set_num_threads(self.threads)
                log.info("loading embedding model %s (threads=%d)", self.model_dir, self.threads)
                self._model = SentenceTransformer(
                    str(self.model_dir), device="cpu", local_files_only=True
                )
            return self._model

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Vectors of shape (len(texts), 384), float32, each of unit length."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        if self.onnx_dir is not None and len(texts) <= SMALL_BATCH:
            session = self._onnx_session()
            if session is not None:
                return self._encode_onnx(session, list(texts))
        model = self._load()
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if progress:  # callers with their own bar pass progress=False
            log.debug("embedded %d texts", len(texts))
        return vecs

    # -- ONNX Runtime for the few short texts of a question ---------------------------
    def onnx_path(self) -> Path:
        """Where the exported graph of this model lives (named by the weights it came from)."""
        assert self.onnx_dir is not None
        digest = hashlib.sha256()
        for name in ("config.json", "tokenizer.json"):
            f = self.model_dir / name
            if f.is_file():
                digest.update(f.read_bytes())
        weights = self.model_dir / "model.safetensors"
        if weights.is_file():
            digest.update(f"{weights.stat().st_size}".encode())
        return self.onnx_dir / f"{self.name}-{digest.hexdigest()[:12]}.onnx"

    def _onnx_session(self) -> Any:
        if self._onnx is None:
            model = self._load()
            with self._lock:
                if self._onnx is None:
                    try:
                        self._onnx = self._open_onnx(model)
                    except Exception as exc:  # any failure: torch keeps serving
                        log.warning("ONNX Runtime query path unavailable, using torch: %s", exc)
                        self._onnx = False
        return self._onnx or None

    def _open_onnx(self, model: Any) -> Any:
        import onnxruntime as ort

        path = self.onnx_path()
        if not path.is_file():
            self._export_onnx(model, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        probe = ["How many days of annual leave do I get?", "Laptops are replaced every 48 months."]
        reference = model.encode(
            probe, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        gap = float(np.abs(self._encode_onnx(session, probe) - reference).max())
        if gap > ONNX_TOLERANCE:
            raise RuntimeError(f"{path.name} differs from the torch model by {gap:.2e}")
        log.info("query embeddings through ONNX Runtime (%s, threads=%d)", path.name, self.threads)
        return session

    def _export_onnx(self, model: Any, path: Path) -> None:
        """Export MiniLM's transformer (token embeddings out) to ``path``, atomically."""
        import torch

        transformer = model[0].auto_model.eval()

        class TokenEmbeddings(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
                out = self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                )
                return out.last_hidden_state

        features = model.tokenizer(["an example question"], return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        started = time.perf_counter()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on ops it rewrites
                torch.onnx.export(
                    TokenEmbeddings(transformer),
                    tuple(features[n] for n in names),
                    str(tmp),
                    input_names=names,
                    output_names=["token_embeddings"],
                    dynamic_axes={
                        n: {0: "batch", 1: "tokens"} for n in [*names, "token_embeddings"]
                    },
                    opset_version=17,
                    dynamo=False,
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("exported %s for ONNX Runtime in %.1f s", path.name, time.perf_counter() - started)

    def _encode_onnx(self, session: Any, texts: list[str]) -> np.ndarray:
        model = self._model
        f = model.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=model.max_seq_length,
            return_tensors="np",
        )
        feed = {i.name: f[i.name].astype(np.int64) for i in session.get_inputs()}
        tokens = session.run(None, feed)[0]
        mask = f["attention_mask"][..., None].astype(np.float32)
        return unit_rows((tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9))

    def encode_with_spans(
        self, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each text's vector and, in the same model pass, a vector for each of its spans.

        A span's vector is the mean of the text's contextual token embeddings whose
        characters lie inside ``(start, end)``, L2-normalised: the same pooling MiniLM
        uses for a whole text, restricted to the span. The answer path compares them with
        the question to pick its evidence sentence without running the model again per
        question. Spans past the model's 256-token window (or with no token of their own)
        get a zero vector, which matches nothing.
        """
        if len(spans) != len(texts):
            raise ValueError("one list of spans per text")
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32), []
        model = self._load()
        outputs = model.encode(
            list(texts), batch_size=self.batch_size, output_value=None, show_progress_bar=False
        )
        # One batched call of the fast tokenizer for the character offsets of every token.
        all_offsets = model.tokenizer(
            list(texts),
            truncation=True,
            max_length=model.max_seq_length,
            return_offsets_mapping=True,
        )["offset_mapping"]
        vectors = unit_rows(
            np.stack([out["sentence_embedding"].float().cpu().numpy() for out in outputs])
        )
        pooled: list[np.ndarray] = []
        for i, (out, offsets) in enumerate(zip(outputs, all_offsets)):
            n_tokens = int(out["attention_mask"].sum())
            tokens = out["token_embeddings"][:n_tokens].float().cpu().numpy()
            rows = np.zeros((len(spans[i]), DIM), dtype=np.float32)
            if len(offsets) != n_tokens:  # not the tokenisation the model saw: no span vectors
                log.warning(
                    "span pooling skipped: %d offsets for %d tokens", len(offsets), n_tokens
                )
                pooled.append(rows)
                continue
            starts = np.array([a for a, _ in offsets])
            ends = np.array([b for _, b in offsets])
            real = ends > starts  # [CLS], [SEP] and padding have empty offsets
            for j, (s, e) in enumerate(spans[i]):
                inside = real & (starts >= s) & (ends <= e)
                if inside.any():
                    rows[j] = tokens[inside].mean(axis=0)
            pooled.append(unit_rows(rows))
        return vectors, pooled

    @property
    def counter(self):
        """The model's word-piece counter (no torch needed)."""
        if self._counter is None:
            from ingest.tokens import counter_for

            self._counter = counter_for(str(self.model_dir))
        return self._counter

    def count_tokens(self, text: str) -> int:
        """MiniLM word pieces in `text`, without the [CLS]/[SEP] the model adds."""
        return self.counter.count(text)
