"""Parse workers run hostile files: they get no secrets and a bounded address space.

Reliability promises (issue 14, item 14): a parse worker's environment holds none of the
process's secrets (Slack tokens, Redis URLs, cloud keys, anything named like a secret),
only what parsers need; a file whose parsing needs more memory than
``index.parse_memory_mb`` is refused with a reason and the rest of the run completes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ingest_fixtures import settings_for

from ingest import Source, build_index
from ingest.build import make_parse_pool
from ingest.parse import ParseJob, ParseOutput
from lorebot.assets import embedding_model_path

PLANTED = {
    "LOREBOT_SLACK__BOT_TOKEN": "xoxb-planted-secret",
    "LOREBOT_REDIS__URL": "redis://:planted-password@redis.internal:6379/0",
    "LOREBOT_SYNC__SECRET_ACCESS_KEY": "planted-s3-key",
    "SLACK_BOT_TOKEN": "xoxb-planted-too",
    "AWS_SECRET_ACCESS_KEY": "planted-aws",
    "REDIS_PASSWORD": "planted-redis",
    "HF_TOKEN": "hf_planted",
    "OPENAI_API_KEY": "sk-planted",
}

GOOD = "# Lost property\n\nLost property is kept at the east reception for 30 days.\n"


def json_memory_bomb(folder: Path, records: int = 5_000_000) -> str:
    """A 40 MB JSON file that needs ~1.2 GiB as Python objects (a dict and a list per 8 bytes)."""
    name = "records.json"
    (folder / name).write_bytes(b"[" + b'{"":[]},' * records + b"{}]")
    return name


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_parse_workers_get_a_scrubbed_environment(tmp_path, monkeypatch):
    for key, value in PLANTED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    doc = tmp_path / "good.md"
    doc.write_text(GOOD, encoding="utf-8")
    job = ParseJob(
        str(doc), "good.md", "x", "md", "-", None, str(embedding_model_path(None)), 200, 32
    )
    with make_parse_pool(workers=1, timeout_s=120) as pool:
        ((_, ok, value),) = list(pool.imap_unordered([job]))
        env = environ_of(pool._slots[0].proc.pid)
    assert ok and isinstance(value, ParseOutput) and value.chunks  # parsers still work
    leaked = {k for k in env if k in PLANTED or any(v in env[k] for v in PLANTED.values())}
    assert not leaked, leaked
    for key in ("PATH", "HOME", "LANG", "PYTHONPATH"):
        assert key in env, key


def test_a_file_needing_more_memory_than_the_limit_is_refused_and_the_run_completes(
    tmp_path, embedder
):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD, encoding="utf-8")
    big = json_memory_bomb(docs)
    # An idle parse worker reserves ~0.9 GiB of address space; 1.2 GiB leaves room for
    # the good file and none for the JSON's objects.
    settings = settings_for(tmp_path, parse_memory_mb=1200, parse_workers=1)
    report = build_index(settings, [Source(docs, "hr")], progress=False, embedder=embedder)
    by = {f.path: f for f in report.files}
    assert by["good.md"].status == "ok" and report.version
    assert by[big].status == "failed", by[big]
    assert "memory" in by[big].reason and "1200 MiB" in by[big].reason, by[big].reason


def test_the_memory_limit_has_a_sane_default():
    from lorebot.settings import Settings

    limit = Settings().index.parse_memory_mb
    assert limit is not None and 2048 <= limit <= 16384
    assert os.environ.get("LOREBOT_INDEX__PARSE_MEMORY_MB") is None
