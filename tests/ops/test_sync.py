"""lorebot.sync on real files and a real (local) S3 server: publish, pull, refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lorebot import sync
from tests.conftest import make_settings

QUESTION = "How many days of annual leave do full-time employees get?"


def sync_settings(data_dir: Path, url: str, **sync_values):
    return make_settings(data_dir, sync={"url": url, "check_interval_s": 0, **sync_values})


def write_adapter(root: Path, version: str, payload: bytes, current: bool = True) -> Path:
    """A registry entry as slm/training/registry.py lays it out (file level)."""
    vdir = root / "versions" / version
    vdir.mkdir(parents=True)
    (vdir / "adapter.gguf").write_bytes(payload)
    (vdir / "config.json").write_text(json.dumps({"rank": 8, "base": "smollm2"}))
    (vdir / "card.json").write_text(json.dumps({"status": "promoted"}))
    if current:
        (root / "CURRENT").write_text(version + "\n")
    return vdir


def test_published_index_pulled_into_an_empty_data_dir_answers_searches(
    tmp_path, sample_data_dir, embedder
):
    from ingest.store import current_version, open_index

    shared = tmp_path / "shared"
    publisher = sync_settings(sample_data_dir, f"file://{shared}")
    pub = sync.publish_index(publisher)
    version = current_version(publisher)
    assert pub.version == version and pub.uploaded and pub.files > 0
    assert (shared / "index" / "CURRENT").read_text().strip() == version

    worker = sync_settings(tmp_path / "worker", str(shared))  # a bare path works too
    result = sync.pull(worker, "index")
    assert result.changed and result.downloaded and result.local == version
    assert current_version(worker) == version
    assert not (worker.index_dir / sync.TMP_DIR).exists() or not any(
        (worker.index_dir / sync.TMP_DIR).iterdir()
    )
    with open_index(worker, embedder=embedder) as index:
        hits = index.search(QUESTION, k=3)
    assert hits and "leave" in hits[0].chunk.text.lower()

    again = sync.pull(worker, "index")
    assert not again.changed and not again.downloaded
    # Publishing the same version again uploads nothing (versions are immutable).
    assert not sync.publish_index(publisher).uploaded


def test_a_version_without_its_manifest_is_never_pulled(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", str(shared))
    write_adapter(pub.adapters_dir, "r1", b"one")
    sync.publish_adapters(pub)
    worker = sync_settings(tmp_path / "w", str(shared))
    assert sync.pull(worker, "adapters").local == "r1"

    # An upload in progress: files there, manifest not yet, CURRENT already moved.
    partial = shared / "adapters" / "versions" / "r2"
    partial.mkdir(parents=True)
    (partial / "adapter.gguf").write_bytes(b"half")
    (shared / "adapters" / "CURRENT").write_text("r2\n")
    with pytest.raises(sync.SyncError) as err:
        sync.pull(worker, "adapters")
    assert "not completely published" in err.value.message and err.value.fix
    assert sync.local_current(worker.adapters_dir) == "r1"
    assert not (worker.adapters_dir / "versions" / "r2").exists()


def test_a_file_that_does_not_match_its_manifest_is_rejected(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", str(shared))
    write_adapter(pub.adapters_dir, "r1", os.urandom(4096))
    sync.publish_adapters(pub)
    (shared / "adapters" / "versions" / "r1" / "adapter.gguf").write_bytes(os.urandom(4096))

    worker = sync_settings(tmp_path / "w", str(shared))
    with pytest.raises(sync.SyncError, match="does not match its manifest"):
        sync.pull(worker, "adapters")
    assert sync.local_current(worker.adapters_dir) is None
    assert not (worker.adapters_dir / "versions" / "r1").exists()
    assert not any((worker.adapters_dir / sync.TMP_DIR).iterdir())


def test_promotion_and_rollback_to_base_reach_a_worker(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", f"file://{shared}")
    worker = sync_settings(tmp_path / "w", f"file://{shared}")
    assert sync.pull(worker, "adapters").remote is None  # nothing published: nothing done

    write_adapter(pub.adapters_dir, "r1", b"adapter one")
    sync.publish_adapters(pub)
    assert sync.pull(worker, "adapters").local == "r1"
    assert (worker.adapters_dir / "versions" / "r1" / "adapter.gguf").read_bytes() == b"adapter one"

    write_adapter(pub.adapters_dir, "r2", b"adapter two")
    sync.publish_adapters(pub)
    assert sync.pull(worker, "adapters").local == "r2"

    # Rollback to r1: the version is already on the worker, only the pointer moves.
    (pub.adapters_dir / "CURRENT").write_text("r1\n")
    assert not sync.publish_adapters(pub).uploaded
    r = sync.pull(worker, "adapters")
    assert r.changed and not r.downloaded and r.local == "r1"

    # Rollback to the base model: no CURRENT at the publisher, none on the worker.
    (pub.adapters_dir / "CURRENT").unlink()
    sync.publish_adapters(pub)
    assert (shared / "adapters" / "CURRENT").read_text().strip() == ""
    assert sync.pull(worker, "adapters").local is None
    assert not (worker.adapters_dir / "CURRENT").exists()
    assert sync.status(worker)["adapters"] == {"local": None, "remote": "none"}


def test_puller_checks_at_most_every_interval(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", str(shared))
    write_adapter(pub.adapters_dir, "r1", b"1")
    sync.publish_adapters(pub)
    worker = sync_settings(tmp_path / "w", str(shared), check_interval_s=3600)
    puller = sync.Puller(worker, kinds=("adapters",))
    assert puller.maybe_pull()["adapters"].local == "r1"
    write_adapter(pub.adapters_dir, "r2", b"2")
    sync.publish_adapters(pub)
    assert puller.maybe_pull() == {}  # within the interval: not even a read
    assert sync.local_current(worker.adapters_dir) == "r1"
    assert puller.maybe_pull(force=True)["adapters"].local == "r2"


def test_an_unreachable_location_keeps_the_worker_serving(tmp_path, caplog):
    worker = sync_settings(tmp_path / "w", str(tmp_path / "shared"))
    write_adapter(worker.adapters_dir, "r1", b"1")
    (tmp_path / "shared").write_text("not a directory")
    puller = sync.Puller(worker, kinds=("adapters",))
    with caplog.at_level("WARNING", logger="lorebot.sync"):
        assert puller.maybe_pull() == {}
    assert sync.local_current(worker.adapters_dir) == "r1"
    assert "serving the local version" in caplog.text


def test_remote_keeps_the_newest_index_versions_but_never_the_current(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(
        tmp_path / "pub",
        str(shared),
    )
    pub.index.keep_versions = 2
    idx = pub.index_dir
    for v in ("v20260101-000000-aaaa", "v20260102-000000-bbbb", "v20260103-000000-cccc"):
        (idx / "versions" / v).mkdir(parents=True)
        (idx / "versions" / v / "manifest.json").write_text("{}")
        (idx / "CURRENT").write_text(v)
        sync.publish_index(pub)
    remote = sorted(p.name for p in (shared / "index" / "versions").iterdir())
    assert remote == ["v20260102-000000-bbbb", "v20260103-000000-cccc"]
    # Rolled back locally to an old version: it is republished and kept.
    (idx / "CURRENT").write_text("v20260101-000000-aaaa")
    res = sync.publish_index(pub)
    assert res.uploaded and "v20260101-000000-aaaa" not in res.pruned
    assert (shared / "index" / "CURRENT").read_text().strip() == "v20260101-000000-aaaa"


def test_unsafe_version_names_are_refused(tmp_path):
    shared = tmp_path / "shared"
    (shared / "adapters").mkdir(parents=True)
    (shared / "adapters" / "CURRENT").write_text("../../etc\n")
    worker = sync_settings(tmp_path / "w", str(shared))
    with pytest.raises(sync.SyncError, match="refusing version name"):
        sync.pull(worker, "adapters")


# ----------------------------------------------------------------------------- s3://
@pytest.fixture(scope="module")
def s3_server():
    moto_server = pytest.importorskip("moto.server")
    from lorebot.cli.stack import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_settings(data_dir: Path, endpoint: str, secret: str = "moto-secret-key-42"):
    return sync_settings(
        data_dir,
        "s3://lorebot-fleet/prod",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="AKIAMOTOTEST",
        secret_access_key=secret,
    )


def test_s3_bucket_round_trip(tmp_path, s3_server, sample_data_dir, embedder, monkeypatch):
    import s3fs

    from ingest.store import current_version, open_index

    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="AKIAMOTOTEST",
        aws_secret_access_key="x",
    ).create_bucket(Bucket="lorebot-fleet")
    fs = s3fs.S3FileSystem(
        key="AKIAMOTOTEST",
        secret="x",
        client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"},
    )

    publisher = s3_settings(sample_data_dir, s3_server)
    pub = sync.publish_index(publisher)
    assert pub.uploaded
    assert fs.cat_file("lorebot-fleet/prod/index/CURRENT").decode().strip() == current_version(
        publisher
    )

    worker = s3_settings(tmp_path / "w", s3_server)
    assert sync.pull(worker, "index").local == current_version(publisher)
    with open_index(worker, embedder=embedder) as index:
        assert index.search(QUESTION, k=1)

    write_adapter(tmp_path / "pub" / "adapters", "r7", b"gguf bytes")
    sync.publish_adapters(s3_settings(tmp_path / "pub", s3_server))
    assert sync.pull(worker, "adapters").local == "r7"


def test_s3_errors_are_one_line_without_the_secret(tmp_path, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = make_settings(
        tmp_path / "pub",
        sync={
            "url": "s3://no-such-bucket-here/x",
            "endpoint_url": s3_server,
            "region": "us-east-1",
            "access_key_id": "AKIAMOTOTEST",
            "secret_access_key": "very-secret-value-123",
        },
    )
    write_adapter(settings.adapters_dir, "r1", b"1")
    with pytest.raises(sync.SyncError) as err:
        sync.publish_adapters(settings)
    assert "cannot publish adapters" in err.value.message and err.value.fix
    assert "very-secret-value-123" not in err.value.one_line()


def test_sync_cli_publish_pull_status(tmp_path, redis_server):
    import subprocess
    import sys

    from tests.conftest import child_env

    shared = tmp_path / "shared"
    pub_dir = tmp_path / "pub"
    write_adapter(pub_dir / "adapters", "r1", b"1")
    env = child_env(pub_dir, redis_server.url, LOREBOT_SYNC__URL=str(shared))
    run = [sys.executable, "-m", "lorebot", "sync"]
    out = subprocess.run(
        [*run, "publish", "--kind", "adapters"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    env_w = child_env(tmp_path / "w", redis_server.url, LOREBOT_SYNC__URL=str(shared))
    out = subprocess.run(
        [*run, "pull"], env=env_w, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "w" / "adapters" / "versions" / "r1" / "adapter.gguf").is_file()
    out = subprocess.run(
        [*run, "status", "--json"],
        env=env_w,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    status = json.loads(out.stdout)
    assert status["location"]["adapters"] == {"local": "r1", "remote": "r1"}
    assert status["location"]["index"] == {"local": None, "remote": None}
    shutil.rmtree(shared)
