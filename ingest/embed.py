"""MiniLM sentence embeddings, loaded lazily once per process, offline, on the CPU."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lorebot.assets import embedding_model_path
from lorebot.settings import cpu_count

log = logging.getLogger(__name__)

DIM = 384


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
    ) -> None:
        self.model_dir = embedding_model_path(Path(model_dir) if model_dir else None)
        self.batch_size = batch_size
        self.threads = threads or cpu_count()
        self._model: Any = None
        self._lock = threading.Lock()
        self._counter = None

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
        tokenizer = model.tokenizer
        vectors = np.zeros((len(texts), DIM), dtype=np.float32)
        pooled: list[np.ndarray] = []
        for i, (text, out) in enumerate(zip(texts, outputs)):
            v = out["sentence_embedding"].float().cpu().numpy()
            vectors[i] = v / max(float(np.linalg.norm(v)), 1e-12)
            n_tokens = int(out["attention_mask"].sum())
            tokens = out["token_embeddings"][:n_tokens].float().cpu().numpy()
            offsets = tokenizer(
                text,
                truncation=True,
                max_length=model.max_seq_length,
                return_offsets_mapping=True,
            )["offset_mapping"]
            rows = np.zeros((len(spans[i]), DIM), dtype=np.float32)
            if len(offsets) != n_tokens:  # not the tokenisation the model saw: no span vectors
                log.warning("span pooling skipped: %d offsets for %d tokens", len(offsets), n_tokens)
                pooled.append(rows)
                continue
            starts = np.array([a for a, _ in offsets])
            ends = np.array([b for _, b in offsets])
            real = ends > starts  # [CLS], [SEP] and padding have empty offsets
            for j, (s, e) in enumerate(spans[i]):
                inside = real & (starts >= s) & (ends <= e)
                if inside.any():
                    m = tokens[inside].mean(axis=0)
                    rows[j] = m / max(float(np.linalg.norm(m)), 1e-12)
            pooled.append(rows)
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
