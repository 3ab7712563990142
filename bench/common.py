"""What the answer benchmarks share: question sets with an index, Redis, real workers, results.

The benchmarks measure the bot's real path (a task submitted to Redis, a ``lorebot
worker`` process answering it), so this module starts real processes: a redis-server on
a free loopback port and ``python -m lorebot worker --queues answer`` children, each
configured only through ``LOREBOT_*`` environment variables, as in production. The
machine is shared, so every result file records the load average before and after.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402 (sys.path and the offline env first)

from lorebot.settings import Settings, cpu_count  # noqa: E402
from lorebot.types import Answer, Question  # noqa: E402
from slm.evals import metrics  # noqa: E402

RESULTS = REPO / "bench" / "results"
SAMPLE_QA = REPO / "tests" / "fixtures" / "sample_qa.json"
XQUAD = REPO.parent / "shared" / "data" / "qa" / "xquad-en" / "xquad.en.json"
console = Console(width=None if sys.stdout.isatty() else 150)


# ----------------------------------------------------------------------------- results
def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the workers and Redis we
    started and delete the temporary index (Python's default would just die)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine() -> dict[str, Any]:
    """Where the figures were taken: cores, load, versions."""
    try:
        import llama_cpp

        llama_version = getattr(llama_cpp, "__version__", "?")
    except ImportError:  # pragma: no cover
        llama_version = None
    return {
        "cpus": cpu_count(),
        "os_cpu_count": os.cpu_count(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama_cpp_python": llama_version,
    }


def save(name: str, data: dict[str, Any], *, started_load: list[float] | None = None) -> Path:
    """Write ``bench/results/<name>.json`` with the machine and its load before/after."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    info = machine()
    info["loadavg_start"] = started_load
    info["loadavg_end"] = info.pop("loadavg")
    payload = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": info,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        **data,
    }
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    console.print(f"[dim]wrote {path.relative_to(REPO)}[/]")
    return path


def summary(values: list[float]) -> dict[str, Any]:
    """{n, p50, p95, mean} in the values' unit, rounded for JSON."""
    return {
        k: (round(v, 2) if isinstance(v, float) else v)
        for k, v in metrics.latency_summary(values).items()
    }


def fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


# ----------------------------------------------------------------------------- questions + index
@dataclass
class Workload:
    """Questions to ask and the data dir whose current index answers them."""

    name: str
    data_dir: Path
    questions: list[str]
    workdir: Path
    _cleanup: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for item in self._cleanup:
            item.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def sample_questions(*, answerable_only: bool = False) -> list[str]:
    """The sample handbook's questions: answerable ones first, then those it cannot answer."""
    qa = json.loads(SAMPLE_QA.read_text(encoding="utf-8"))
    out = [q["question"] for q in qa["answerable"]]
    if not answerable_only:
        out += [q["question"] if isinstance(q, dict) else q for q in qa["unanswerable"]]
    return out


def build_sample_index(data_dir: Path, *, threads: int) -> tuple[Settings, Any]:
    """Index the packaged sample handbook into ``data_dir`` and open it.

    The embedder is the workers' own kind (query-sized inputs through ONNX Runtime, see
    ingest.embed), so in-process benchmarks time question embeddings as a worker does.
    Returns (settings, index reader).
    """
    from ingest import Source, build_index, open_index
    from ingest.embed import Embedder
    from lorebot import assets

    settings = Settings(data_dir=data_dir)
    embedder = Embedder(
        settings.index.embedding_model, threads=threads, onnx_dir=settings.models_dir
    )
    t0 = time.perf_counter()
    build_index(
        settings,
        [Source(path=assets.sample_docs_dir(), collection="handbook")],
        progress=False,
        embedder=embedder,
    )
    console.print(f"sample index built in {time.perf_counter() - t0:.0f} s")
    index = open_index(settings, embedder=embedder)
    index.search("warm up the query embedder", k=1)
    return settings, index


def make_workload(
    source: str,
    *,
    limit: int | None,
    seed: int = 0,
    embedder: Any = None,
    answerable_only: bool = False,
) -> Workload:
    """``sample``: the shipped handbook + tests/fixtures/sample_qa.json; ``xquad``: XQuAD-en.

    The index is built in a fresh temporary data dir (the benchmarks never touch yours).
    ``answerable_only`` leaves out the sample questions the handbook cannot answer (most
    are refused before the model runs, in ~0.1 s, which would make throughput depend on
    how many of them a measurement happens to draw).
    """
    workdir = Path(tempfile.mkdtemp(prefix="lorebot-bench-"))
    try:
        if source == "sample":
            from ingest import Source, build_index
            from lorebot import assets

            data_dir = workdir / "data"
            settings = Settings(data_dir=data_dir)
            build_index(
                settings,
                [Source(assets.sample_docs_dir(), "handbook")],
                progress=True,
                embedder=embedder,
            )
            questions = sample_questions(answerable_only=answerable_only)
            if limit is not None:
                questions = questions[:limit]
            return Workload("sample", data_dir, questions, workdir)
        if source == "xquad":
            from slm.evals.evalset import prepare_eval

            if not XQUAD.is_file():
                raise SystemExit(f"{XQUAD} is absent: use --source sample")
            settings = Settings(data_dir=workdir / "unused")
            prepared = prepare_eval(
                settings, XQUAD, limit=limit, seed=seed, abstain=0, embedder=embedder
            )
            # The prepared temporary index is an ordinary data dir a worker can serve.
            data_dir = prepared.workdir / "data"
            prepared.retriever.close()
            wl = Workload("xquad", data_dir, [q.question for q in prepared.questions], workdir)
            wl._cleanup.append(_RemoveDir(prepared.workdir))
            return wl
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    raise SystemExit(f"unknown source {source!r}: use sample or xquad")


@dataclass
class _RemoveDir:
    path: Path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ----------------------------------------------------------------------------- processes
class Redis:
    """A private redis-server on a free port (lorebot.cli.stack.RedisServer)."""

    def __init__(self, workdir: Path) -> None:
        from lorebot.cli.stack import RedisServer, free_port

        self.server = RedisServer(free_port(), workdir / "redis").start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()


class Worker:
    """``python -m lorebot worker --queues answer`` with the given processes and threads."""

    def __init__(
        self,
        data_dir: Path,
        redis_url: str,
        log_path: Path,
        *,
        processes: int = 1,
        threads: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.processes = processes
        self.threads = threads or max(1, cpu_count() // processes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
        env.update(
            LOREBOT_DATA_DIR=str(data_dir),
            LOREBOT_REDIS__URL=redis_url,
            LOREBOT_WORKER__CONCURRENCY=str(processes),
            LOREBOT_MODEL__N_THREADS=str(self.threads),
            LOREBOT_LOGGING__LEVEL="WARNING",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the child's whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lorebot", "worker", "--queues", "answer", "--loglevel", "INFO"],
            cwd=str(REPO),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300.0) -> Worker:
        """Until Celery answers a ping (pool processes may still be loading: warm up after)."""
        from workers.client import make_client

        client = make_client(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            if "ready." in self.log() and client.control.ping(timeout=0.5):
                return self
            time.sleep(0.3)
        raise SystemExit(f"worker not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def close(self) -> None:
        from lorebot.cli.stack import stop_process_group

        stop_process_group(self.proc, timeout=60)
        self._log.close()


class Asker:
    """Submits questions the way the bot does (``send_task`` by name) and waits for the result.

    ``lorebot ask`` (``lorebot.cli.submit_question``) first pings the workers, and a Celery
    broadcast ping waits its whole timeout, so it would add ~1.5 s to every question; the
    bot's gateway does not ping, so neither does the benchmark. One Celery client per
    thread: result waiting is not shared between threads.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._local = threading.local()

    @property
    def client(self):
        if not hasattr(self._local, "app"):
            from workers.client import make_client

            self._local.app = make_client(self.redis_url)
        return self._local.app

    def ask(
        self, text: str, *, timeout: float = 600.0, collections: list[str] | None = None
    ) -> tuple[Answer, float]:
        """The answer and the round trip in ms (task submitted -> result received)."""
        from lorebot.contracts import QUEUE_ANSWER, TASK_ANSWER

        question = Question(text=text, collections=collections)
        started = time.perf_counter()
        result = self.client.send_task(
            TASK_ANSWER,
            kwargs={"question": question.model_dump(mode="json"), "reply": None},
            queue=QUEUE_ANSWER,
            task_id=question.question_id,
        )
        payload = result.get(timeout=timeout, propagate=True)
        roundtrip = (time.perf_counter() - started) * 1000
        result.forget()
        if isinstance(payload, dict) and "error" in payload:
            raise SystemExit(f"the worker failed: {payload['error']}")
        return Answer.model_validate(payload), roundtrip
