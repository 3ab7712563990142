"""What one worker process holds: the index reader, the embedder and the model, loaded once.

Between tasks the runtime compares the index pointer (and the promoted adapter) with
what it serves and reloads when they moved, so a re-index or a promotion reaches a
running worker without a restart.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from lorebot.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from ingest.store import IndexReader, LiveIndex
    from slm.serving.generator import Generator

log = logging.getLogger(__name__)


class Runtime:
    """Index + model for one process. Not shared between processes; one task at a time."""

    def __init__(self, settings: Settings, generator: Generator | None = None) -> None:
        self.settings = settings
        self._generator = generator
        self._embedder = None
        self._live: LiveIndex | None = None
        self._lock = threading.Lock()
        self._puller = None

    # -- model --------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        if self._generator is None:
            from slm.serving.generator import LlamaGenerator

            adapter_path, adapter_version = self._current_adapter()
            self._generator = LlamaGenerator.from_settings(
                self.settings, lora_path=adapter_path, adapter=adapter_version
            )
            log.info(
                "model loaded threads=%d adapter=%s",
                self.settings.threads_per_process(),
                adapter_version,
            )
        return self._generator

    def _current_adapter(self):
        """The promoted adapter (path, version), or (None, None) for the base model."""
        from slm.training.registry import current_adapter

        found = current_adapter(self.settings)
        return (found.path, found.version) if found else (None, None)

    # -- index --------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from ingest.embed import Embedder

            self._embedder = Embedder.from_settings(self.settings)
        return self._embedder

    def index(self) -> IndexReader:
        """The current index version, reopened when the pointer moved since the last task."""
        from ingest.store import LiveIndex

        with self._lock:
            if self._live is None:
                self._live = LiveIndex(self.settings, embedder=self.embedder)
            return self._live.get()

    def sync(self, force: bool = False) -> None:
        """Pull a newer index / adapter from the shared location before serving (issue 7).

        Rate-limited by sync.check_interval_s; a failed check is logged and the local
        versions keep serving. The reload itself happens in index() / refresh_adapter(),
        which read the local CURRENT pointers the pull flipped.
        """
        if not self.settings.sync.url:
            return
        if self._puller is None:
            from lorebot.sync import Puller

            self._puller = Puller(self.settings)
        self._puller.maybe_pull(force=force)

    def refresh_adapter(self) -> None:
        """Switch to a newly promoted adapter between tasks (reload the model)."""
        if self._generator is None:
            return
        _, version = self._current_adapter()
        if version != getattr(self._generator, "adapter", None):
            log.info("adapter change %s -> %s: reloading model", self._generator.adapter, version)
            self._generator = None


_RUNTIME: Runtime | None = None


def get_runtime(settings: Settings) -> Runtime:
    """The process-wide runtime (created on first use in each worker process)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = Runtime(settings)
    return _RUNTIME


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests hand in one with a fake generator)."""
    global _RUNTIME
    _RUNTIME = runtime
