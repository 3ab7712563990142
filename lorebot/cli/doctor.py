"""`lorebot doctor`: every asset and service lorebot needs, each OK or a problem with its fix."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lorebot import assets
from lorebot.errors import LorebotError
from lorebot.settings import Settings, mask_url


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _asset(name: str, locate) -> Check:
    try:
        path = locate()
    except LorebotError as exc:
        return Check(name, False, exc.message, exc.fix or "")
    return Check(name, True, str(path))


def check_answer_model(settings: Settings, *, load: bool = False) -> Check:
    """The GGUF file is there and readable; with ``load``, llama.cpp can also open it.

    ``load`` reads the vocabulary in a short child process (about a second): a truncated
    or corrupt file with a valid header would otherwise start a worker whose processes
    can never answer. The child keeps llama.cpp out of the process that forks the pool.
    """
    try:
        path = assets.answer_model_path(settings.model.path)
    except LorebotError as exc:
        return Check("answer model", False, exc.message, exc.fix or "")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return Check(
            "answer model",
            False,
            f"cannot read {path}: {exc.strerror}",
            "check the file's permissions",
        )
    if magic != b"GGUF":
        return Check(
            "answer model",
            False,
            f"{path} is not a GGUF file",
            "set LOREBOT_MODEL__PATH to a .gguf model",
        )
    if load:
        import subprocess
        import sys

        probe = (
            "import sys\nfrom llama_cpp import Llama\n"
            "Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, timeout=120
        )
        if done.returncode != 0:
            return Check(
                "answer model",
                False,
                f"llama.cpp cannot load {path} (truncated or corrupt GGUF)",
                "set LOREBOT_MODEL__PATH to a complete .gguf model or unset it for the default",
            )
    return Check("answer model", True, f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB)")


def check_llama_cpp() -> Check:
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, or a broken shared library (OSError)
        return Check(
            "llama.cpp build", False, f"llama_cpp does not import: {exc}", assets.INSTALL_FIX
        )
    return Check("llama.cpp build", True, f"llama-cpp-python {llama_cpp.__version__}")


def check_redis(settings: Settings) -> Check:
    from lorebot.cli.stack import RedisServer, free_port, redis_ping

    url = settings.redis.effective_url
    shown = mask_url(url)  # the password never reaches the output
    if redis_ping(url):
        return Check("Redis", True, f"reachable at {shown}")
    if not settings.redis.embedded:
        return Check(
            "Redis",
            False,
            f"cannot reach {shown}",
            "check LOREBOT_REDIS__URL and that the server runs",
        )
    # Embedded mode with nothing running: prove the bundled server can start.
    try:
        with tempfile.TemporaryDirectory() as tmp, RedisServer(free_port(), Path(tmp)):
            pass
    except LorebotError as exc:
        return Check("Redis", False, exc.message, exc.fix or "")
    return Check(
        "Redis",
        True,
        f"embedded redis-server starts (not running now; `lorebot up` runs it on {shown})",
    )


def check_index(settings: Settings) -> Check:
    from ingest import current_version

    version = current_version(settings)
    if version is None:
        return Check(
            "index",
            False,
            f"no index in {settings.index_dir}",
            "run `lorebot ingest PATH` (or `lorebot demo`)",
        )
    return Check("index", True, f"version {version}")


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "data dir",
            False,
            f"{path} is not writable: {exc.strerror}",
            "set LOREBOT_DATA_DIR to a writable directory",
        )
    free = os.statvfs(path)
    free_gb = free.f_bavail * free.f_frsize / 2**30
    if free_gb < 0.5:
        return Check(
            "data dir",
            False,
            f"{path}: only {free_gb:.2f} GiB free",
            "free disk space or move LOREBOT_DATA_DIR",
        )
    return Check("data dir", True, f"{path} (writable, {free_gb:.0f} GiB free)")


def run_checks(settings: Settings, *, services: bool = True) -> list[Check]:
    checks = [
        check_answer_model(settings),
        _asset(
            "embedding model", lambda: assets.embedding_model_path(settings.index.embedding_model)
        ),
        _asset("spaCy model", assets.spacy_model_dir),
        check_llama_cpp(),
        _asset("redis-server binary", assets.redis_server_binary),
        check_data_dir(settings),
    ]
    if services:
        checks += [check_redis(settings), check_index(settings)]
    return checks
