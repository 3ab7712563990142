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
