"""What one worker process holds: the index reader, the embedder and the model, loaded once.

Between tasks the runtime compares the index pointer (and the promoted adapter) with
what it serves and reloads when they moved, so a re-index or a promotion reaches a
running worker without a restart.

Which adapter a question gets depends on the collections it may search: only an adapter
trained on collections all among them (``slm.training.scopes.select``), else the base
model. A few loaded models are kept (:data:`MAX_LOADED`), so questions alternating between
two channels' scopes do not reload the model each time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorebot.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from ingest.store import IndexReader, LiveIndex
    from slm.serving.generator import Generator

log = logging.getLogger(__name__)

#: Models (base + adapter) one process keeps loaded; the least recently used goes first.
MAX_LOADED = 3
#: make_generator(adapter path or None, adapter version or None) -> Generator
GeneratorFactory = Callable[[Path | None, str | None], Any]


class Runtime:
    """Index + model for one process. Not shared between processes; one task at a time.

    ``generator`` fixes the model (tests hand in a fake; no adapter is ever chosen);
    ``make_generator`` replaces how a model with an adapter is loaded (tests record it).
    """

    def __init__(
        self,
        settings: Settings,
        generator: Generator | None = None,
        make_generator: GeneratorFactory | None = None,
    ) -> None:
        self.settings = settings
        self._generator = generator
        self._fixed = generator is not None
        self._make = make_generator or self._load
        self._loaded: OrderedDict[str | None, Any] = OrderedDict()
        #: (path, version) the next question is answered with; set by refresh_adapter().
        self._wanted: tuple[Path | None, str | None] | None = None
        self._embedder = None
        self._live: LiveIndex | None = None
        self._lock = threading.Lock()
        self._puller = None

    # -- model --------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        """The model for the question being answered (see :meth:`refresh_adapter`)."""
        if self._generator is None:
            path, version = self._wanted if self._wanted is not None else self._select(None)
            if version in self._loaded:
                self._loaded.move_to_end(version)
            else:
                self._loaded[version] = self._make(path, version)
                while len(self._loaded) > MAX_LOADED:
                    _, old = self._loaded.popitem(last=False)
                    close = getattr(old, "close", None)
                    if callable(close):
                        close()
            self._generator = self._loaded[version]
        return self._generator

    def _load(self, path: Path | None, version: str | None) -> Any:
        from slm.serving.generator import LlamaGenerator

        gen = LlamaGenerator.from_settings(self.settings, lora_path=path, adapter=version)
        log.info("model loaded threads=%d adapter=%s", self.settings.threads_per_process(), version)
        return gen

    def _select(self, collections: Sequence[str] | None) -> tuple[Path | None, str | None]:
        """The adapter (path, version) a question that may search ``collections`` gets
        (None = every collection), or (None, None) for the base model."""
        from slm.training.registry import serving_adapters
        from slm.training.scopes import select

        refs = {ref.version: ref for ref in serving_adapters(self.settings)}
        version = select(((v, ref.collections) for v, ref in refs.items()), collections)
        return (refs[version].path, version) if version else (None, None)

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

    def refresh_adapter(self, collections: Sequence[str] | None = None) -> None:
        """Choose the adapter for the next question, which may search ``collections`` (None
        = every collection): a newly promoted one, or another scope's, between tasks."""
        if self._fixed:
            return
        self._wanted = self._select(collections)
        current = getattr(self._generator, "adapter", None) if self._generator else None
        if self._generator is not None and self._wanted[1] != current:
            log.info("adapter change %s -> %s", current, self._wanted[1])
            self._generator = None
        # A promotion or rollback leaves versions no registry serves: unload them.
        for version in [v for v in self._loaded if v != self._wanted[1]]:
            if version is not None and not self._still_served(version):
                old = self._loaded.pop(version)
                close = getattr(old, "close", None)
                if callable(close):
                    close()

    def _still_served(self, version: str) -> bool:
        from slm.training.registry import serving_adapters

        return any(ref.version == version for ref in serving_adapters(self.settings))


def load_now(part: Any) -> float:
    """Load a lazy part (the model, the embedder) now when it has a ``load``; the ms taken.

    Near zero once loaded: the answer task reports it, so a question that paid for a
    load (the first after a start, an adapter change) shows it in its timings.
    """
    load = getattr(part, "load", None)
    started = time.perf_counter()
    if callable(load):
        load()
    return (time.perf_counter() - started) * 1000


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
