"""A process pool whose tasks have a hard time limit.

concurrent.futures cannot stop a task that runs too long: its worker keeps running and
the pool cannot be shut down. Parsers do hang on hostile files (a PDF with a content
stream loop, an 800-page DOCX), so each worker here is a process of its own with its own
pipe; a task past its deadline gets its worker killed (SIGKILL) and replaced, and a
worker that dies (segfault, OOM kill) costs only the task it was running.

Workers are fresh interpreters started with subprocess (not fork: the parent may
already hold torch or FAISS threads, which fork copies in an undefined state; not
multiprocessing's spawn either: it re-imports the caller's ``__main__``, which breaks
scripts without a main guard). Tasks and results travel as pickles over two pipes.

Workers open untrusted files, so they get only what they need: an environment of the
names in ``WORKER_ENV`` (no Slack tokens, Redis URLs, cloud keys or any other
``LOREBOT_*`` setting: a parser exploited by a hostile file finds nothing to steal) and,
with ``memory_mb``, an address-space limit (RLIMIT_AS) set before any task runs, so a
file that makes a parser allocate without bound fails that file alone.
"""

from __future__ import annotations

import importlib
import logging
import os
import resource
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TaskTimeout(Exception):
    """The task ran past its time limit and its worker was killed."""


class WorkerDied(Exception):
    """The worker process exited while running the task (crash or kill)."""


#: Environment variables a worker inherits; everything else (secrets above all) is dropped.
WORKER_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "LD_LIBRARY_PATH",
        "VIRTUAL_ENV",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_OFFLINE",
        "TRANSFORMERS_CACHE",
        "SENTENCE_TRANSFORMERS_HOME",
        "TOKENIZERS_PARALLELISM",
        "NLTK_DATA",
        "TESSDATA_PREFIX",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "SCARF_NO_ANALYTICS",
        "DO_NOT_TRACK",
        "UNSTRUCTURED_DISABLE_NOTICE",
        "COVERAGE_PROCESS_START",
    }
)


def worker_env(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """The part of `environ` a worker may see: ``WORKER_ENV`` and the locale's ``LC_*``."""
    return {k: v for k, v in environ.items() if k in WORKER_ENV or k.startswith("LC_")}


def memory_limit_mb() -> int | None:
    """This process's address-space limit in MiB (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft // 2**20


def _limit_memory(memory_mb: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _ref(func: Callable[..., Any]) -> str:
    return f"{func.__module__}:{func.__qualname__}"


def child_main(
    read_fd: int, write_fd: int, func_ref: str, init_ref: str, memory_mb: int | None = None
) -> None:
    """Entry point of a worker interpreter: run tasks from the pipe until told to stop."""
    if memory_mb:
        _limit_memory(memory_mb)
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    if init_ref:
        _resolve(init_ref)()
    func = _resolve(func_ref)
    while True:
        try:
            item = conn_in.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        try:
            result = (True, func(item))
        except BaseException as exc:  # report, never die on a task's exception
            result = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn_out.send(result)
        except Exception as exc:  # unpicklable result
            conn_out.send((False, f"result could not be sent back: {exc}"))


@dataclass
class _Slot:
    proc: subprocess.Popen
    conn: Connection  # results from the worker
    tx: Connection  # tasks to the worker
    task: Any = None
    started: float = 0.0


class TimeoutPool:
    """Run ``func(task)`` for many tasks on ``workers`` processes, each within ``timeout_s``.

    ``func`` and ``init`` must be importable module-level functions (spawn pickles them
    by name). Use as a context manager; ``imap_unordered`` yields ``(task, ok, value)``
    where value is the result, or an exception (TaskTimeout, WorkerDied, or RuntimeError
    carrying the task's own error text). Workers see only ``WORKER_ENV`` of the
    environment; ``memory_mb`` caps each worker's address space (None: no cap).
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        *,
        workers: int,
        timeout_s: float,
        init: Callable[[], None] | None = None,
        memory_mb: int | None = None,
    ) -> None:
        self.func = func
        self.init = init
        self.memory_mb = memory_mb
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self._slots: list[_Slot] = []

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Slot:
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        code = (
            "import sys; from ingest.pool import child_main; "
            f"child_main({task_r}, {res_w}, {_ref(self.func)!r}, "
            f"{_ref(self.init) if self.init else ''!r}, {self.memory_mb!r})"
        )
        env = worker_env(os.environ)
        # The worker must import this very copy of the package (a checkout, not a wheel).
        # and whatever else the parent put on sys.path (a test directory, a script's
        # folder), minus the interpreter's own directories, which the child has anyway.
        here = str(Path(__file__).resolve().parent.parent)
        own = (sys.prefix, sys.base_prefix, sys.exec_prefix)
        extra = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(own)]
        paths = list(
            dict.fromkeys(
                [here, *extra, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            )
        )
        env["PYTHONPATH"] = os.pathsep.join(paths)
        debug = log.isEnabledFor(logging.DEBUG)
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(task_r, res_w),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None if debug else subprocess.DEVNULL,
            close_fds=True,
        )
        os.close(task_r)
        os.close(res_w)
        return _Slot(proc, Connection(res_r, writable=False), Connection(task_w, readable=False))

    def _kill(self, slot: _Slot) -> None:
        try:
            slot.proc.kill()
        except Exception:  # already gone
            pass
        try:
            slot.proc.wait(timeout=5)
        except Exception:
            pass
        slot.conn.close()
        slot.tx.close()

    def imap_unordered(
        self, tasks: Iterable[Any], *, timeout_s: float | None = None
    ) -> Iterator[tuple[Any, bool, Any]]:
        """Run tasks; yield (task, ok, result-or-exception) as each finishes.

        ``timeout_s`` overrides the pool's limit for this call. The clock of a task starts
        when it is handed to a worker, so a cold worker's imports count against its first
        task: keep limits well above a parser's start-up time (seconds).
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        for slot in list(self._slots):
            if slot.task is not None:  # an earlier call was abandoned mid-task
                self._replace(slot)
        pending = deque(tasks)
        n = min(self.workers, len(pending))
        while len(self._slots) < n:
            self._slots.append(self._start())
        busy: dict[Connection, _Slot] = {}
        while pending or busy:
            for slot in self._slots:
                if slot.task is None and pending:
                    slot.task = pending.popleft()
                    slot.started = time.monotonic()
                    try:
                        slot.tx.send(slot.task)
                    except (BrokenPipeError, OSError):
                        # The idle worker died (killed from outside): replace it, retry.
                        pending.appendleft(slot.task)
                        self._replace(slot)
                        continue
                    busy[slot.conn] = slot
            if not busy:
                continue
            now = time.monotonic()
            next_deadline = min(s.started + limit for s in busy.values())
            ready = wait(list(busy), timeout=max(0.0, next_deadline - now))
            for conn in ready:
                slot = busy.pop(conn)
                task = slot.task
                try:
                    ok, value = conn.recv()
                except (EOFError, OSError):
                    try:
                        code = slot.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        code = None
                    self._replace(slot)
                    cap = f"; its limit is {self.memory_mb} MiB of memory" if self.memory_mb else ""
                    yield task, False, WorkerDied(f"parser process died (exit code {code}{cap})")
                    continue
                slot.task = None
                yield task, ok, value if ok else RuntimeError(value)
            now = time.monotonic()
            for conn, slot in list(busy.items()):
                if now - slot.started >= limit and conn not in ready:
                    busy.pop(conn)
                    task = slot.task
                    log.debug("a task passed %gs: killing worker pid %d", limit, slot.proc.pid)
                    self._replace(slot)
                    yield task, False, TaskTimeout(f"took longer than {limit:g}s")

    def _replace(self, slot: _Slot) -> None:
        self._kill(slot)
        fresh = self._start()
        idx = self._slots.index(slot)
        self._slots[idx] = fresh

    def close(self) -> None:
        for slot in self._slots:
            try:
                slot.tx.send(None)
            except Exception:
                pass
        deadline = time.monotonic() + 2
        for slot in self._slots:
            try:
                slot.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait(timeout=5)
            slot.conn.close()
            slot.tx.close()
        self._slots = []
