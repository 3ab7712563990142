"""Settings: env prefix, nested sections, config file, validation errors naming the setting."""

from __future__ import annotations

import pytest

from lorebot.errors import ConfigError
from lorebot.settings import SECRET_MASK, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("LOREBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_valid_and_embedded_redis_is_default():
    s = load_settings()
    assert s.redis.embedded
    assert s.redis.effective_url == "redis://127.0.0.1:6479/0"
    assert s.retrieval.top_k >= 1


def test_env_overrides_nested_values(monkeypatch, tmp_path):
    monkeypatch.setenv("LOREBOT_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("LOREBOT_MODEL__N_THREADS", "3")
    monkeypatch.setenv("LOREBOT_REDIS__URL", "redis://10.1.2.3:6380/1")
    s = load_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.model.n_threads == 3
    assert s.threads_per_process() == 3
    assert not s.redis.embedded and s.redis.effective_url.endswith(":6380/1")


def test_config_file_is_read_and_env_wins(monkeypatch, tmp_path):
    cfg = tmp_path / "lorebot.toml"
    cfg.write_text("[retrieval]\ntop_k = 7\n[model]\nmax_tokens = 64\n")
    monkeypatch.setenv("LOREBOT_MODEL__MAX_TOKENS", "99")
    s = load_settings(cfg)
    assert s.retrieval.top_k == 7
    assert s.model.max_tokens == 99


def test_unknown_key_in_config_file_is_rejected(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nn_thread = 2\n")
    with pytest.raises(ConfigError, match="model.n_thread"):
        load_settings(cfg)


def test_local_lorebot_toml_is_found(tmp_path):
    (tmp_path / "lorebot.toml").write_text("[worker]\nconcurrency = 2\n")
    assert load_settings().worker.concurrency == 2


@pytest.mark.parametrize(
    "env, name",
    [
        ({"LOREBOT_MODEL__N_THREADS": "0"}, "model.n_threads"),
        ({"LOREBOT_REDIS__URL": "http://x"}, "redis.url"),
        ({"LOREBOT_INDEX__CHUNK_TOKENS": "1000"}, "index.chunk_tokens"),
    ],
)
def test_invalid_values_name_the_setting_and_the_env_var(monkeypatch, env, name):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in info.value.message
    assert "LOREBOT_" in info.value.fix


def test_overlap_must_be_smaller_than_chunk(monkeypatch):
    monkeypatch.setenv("LOREBOT_INDEX__CHUNK_TOKENS", "64")
    monkeypatch.setenv("LOREBOT_INDEX__CHUNK_OVERLAP_TOKENS", "64")
    with pytest.raises(ConfigError, match="chunk_overlap_tokens"):
        load_settings()


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("LOREBOT_SLACK__BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("LOREBOT_SLACK__SIGNING_SECRET", "shh")
    monkeypatch.setenv("LOREBOT_REDIS__URL", "redis://:hunter2@redis.internal:6379/0")
    s = load_settings()
    shown = repr(s.public_dict())
    assert "xoxb-very-secret" not in shown and "shh" not in shown
    assert s.public_dict()["slack"]["bot_token"] == SECRET_MASK
    assert "hunter2" not in shown
    assert s.public_dict()["redis"]["url"] == f"redis://:{SECRET_MASK}@redis.internal:6379/0"
    assert s.slack.configured


def test_threads_are_shared_out_between_processes(monkeypatch):
    from lorebot import settings as mod

    monkeypatch.setattr(mod, "cpu_count", lambda: 8)
    monkeypatch.setenv("LOREBOT_WORKER__CONCURRENCY", "3")
    assert load_settings().threads_per_process() == 2
