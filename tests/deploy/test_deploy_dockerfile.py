"""The Dockerfile installs exactly the way CI does, and its runtime stage is what the
compose file and the Helm chart expect (non-root, /data, lorebot entrypoint).

No Docker engine here: the Dockerfile is parsed, the install script it calls is checked,
and its health check runs against this checkout's real install.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.deploy._support import REPO

DOCKERFILE = REPO / "Dockerfile"
INSTALL_SH = REPO / "scripts" / "install.sh"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            stages.append(Stage(name=(m.group(2) or str(len(stages))), base=m.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for rest in stage.args("ENV"):
        for token in shlex.split(rest):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def test_two_stages_from_the_same_base(stages):
    assert list(stages) == ["build", "runtime"]
    assert stages["build"].base == stages["runtime"].base, "the venv is copied: same Python in both"


def test_build_stage_runs_the_ci_install_script(stages):
    build = stages["build"]
    runs = " ; ".join(build.args("RUN"))
    assert "bash scripts/install.sh" in runs
    copies = " ".join(build.args("COPY"))
    assert "constraints.txt" in copies and "scripts/install.sh" in copies
    env = _env(build)
    assert env["LOREBOT_EXTRAS"] and "dev" not in env["LOREBOT_EXTRAS"].split(","), (
        "dev tools stay out"
    )
    assert env["LOREBOT_VENV"] == "/opt/lorebot/venv"
    # CI installs through the same script: .ci/run -> make test -> make install -> install.sh
    assert "bash scripts/install.sh" in (REPO / "Makefile").read_text()


def test_nothing_is_pip_installed_outside_the_script(stages):
    for stage in stages.values():
        for run in stage.args("RUN"):
            assert not re.search(r"\bpip3?\s+install\b|-m\s+pip\s+install\b|\buv\s+pip\b", run), (
                f"pip install outside install.sh: {run}"
            )


def test_install_script_constrains_every_pip_install():
    """Docker and CI share install.sh, and every install in it honours constraints.txt."""
    text = INSTALL_SH.read_text()
    installs = [line for line in text.splitlines() if re.search(r'"\$\{PIP\[@\]\}" install', line)]
    assert installs, "install.sh no longer installs through ${PIP[@]}"
    for line in installs:
        if "--upgrade pip" in line or line.rstrip().endswith(".tar.gz"):
            continue  # pip itself, and the locally built en_core_web_sm sdist (no deps)
        assert "-c constraints.txt" in line, line
    assert re.search(r"LOREBOT_EXTRAS", text) and re.search(r"LOREBOT_VENV", text)


def test_llama_cpp_is_built_portably(stages):
    cmake = _env(stages["build"])["CMAKE_ARGS"]
    arg_default = next(
        a
        for kw, a in stages["build"].instructions
        if kw == "ARG" and a.startswith("LLAMA_CMAKE_ARGS")
    )
    assert cmake == "${LLAMA_CMAKE_ARGS}"
    assert "-DGGML_NATIVE=OFF" in arg_default


def test_every_package_is_copied_into_the_image(stages):
    """A new top-level package in pyproject.toml must also be copied, or the image breaks."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in REPO.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    }
    copied = {
        shlex.split(c)[0].rstrip("/")
        for c in stages["build"].args("COPY")
        if not c.startswith("--")
    }
    assert packages and packages <= copied
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for path in copied | {"pyproject.toml", "constraints.txt", "README.md", "scripts/install.sh"}:
        assert (REPO / path).exists(), path
        assert path not in ignored and path.split("/")[0] not in ignored, (
            f"{path} is in .dockerignore"
        )


def test_dockerignore_keeps_secrets_and_venvs_out():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for pattern in (".venv", ".git", "**/.env", "lorebot-data"):
        assert pattern in ignored, pattern


def test_runtime_stage_is_slim_non_root_with_data_volume(stages):
    runtime = stages["runtime"]
    runs = " ".join(runtime.args("RUN"))
    assert "build-essential" not in runs and "cmake" not in runs
    assert any("--from=build /opt/lorebot" in c for c in runtime.args("COPY"))
    user = runtime.args("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert '"/data"' in runtime.args("VOLUME")[0]
    env = _env(runtime)
    assert env["LOREBOT_DATA_DIR"] == "/data"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PATH"].startswith("/opt/lorebot/venv/bin")
    entry = runtime.args("ENTRYPOINT")[-1]
    assert entry.endswith('"lorebot"]')
    assert "lorebot" in runtime.args("HEALTHCHECK")[-1]


@pytest.mark.integration
def test_image_health_check_passes_on_a_real_install(stages, tmp_path):
    """The HEALTHCHECK command, run against this checkout's install, exits 0."""
    check = stages["runtime"].args("HEALTHCHECK")[-1]
    argv = [a.strip('" ,') for a in re.search(r"CMD \[(.*)\]", check).group(1).split(",")]
    assert argv[0] == "lorebot"
    env = {
        **os.environ,
        "LOREBOT_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env = {k: v for k, v in env.items() if not k.startswith("LOREBOT_") or k == "LOREBOT_DATA_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "lorebot", *argv[1:]],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
