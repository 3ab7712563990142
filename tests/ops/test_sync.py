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


_KEYS: dict[str, Path] = {}


def keypair(name: str = "fleet") -> tuple[Path, Path]:
    """An Ed25519 key pair as PEM files (one per name per test session)."""
    import tempfile

    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if name not in _KEYS:
        _KEYS[name] = Path(tempfile.mkdtemp(prefix=f"lorebot-keys-{name}-"))
        key = Ed25519PrivateKey.generate()
        (_KEYS[name] / "sync.key").write_bytes(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        )
        (_KEYS[name] / "sync.pub").write_bytes(
            key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        )
    return _KEYS[name] / "sync.key", _KEYS[name] / "sync.pub"


def sync_settings(data_dir: Path, url: str, **sync_values):
    """Settings of a fleet member: publishers sign, everyone verifies, with the "fleet" keys."""
    private, public = keypair()
    values = {"signing_key": private, "verify_key": public, **sync_values}
    return make_settings(data_dir, sync={"url": url, "check_interval_s": 0, **values})


def worker_settings(data_dir: Path, url: str, key: str = "fleet", **sync_values):
    """An answer worker: the public key only, no signing key."""
    return make_settings(
        data_dir,
        sync={"url": url, "check_interval_s": 0, "verify_key": keypair(key)[1], **sync_values},
    )


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


def s3_settings(data_dir: Path, endpoint: str, secret: str = "moto-secret-key-42", **more):
    return sync_settings(
        data_dir,
        "s3://lorebot-fleet/prod",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="AKIAMOTOTEST",
        secret_access_key=secret,
        **more,
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

    # A bucket writer without the publishers' key: the worker keeps r7.
    write_adapter(tmp_path / "evil" / "adapters", "r8", b"backdoor")
    sync.publish_adapters(
        s3_settings(tmp_path / "evil", s3_server, signing_key=keypair("intruder")[0])
    )
    with pytest.raises(sync.SignatureError):
        sync.pull(worker, "adapters")
    assert sync.local_current(worker.adapters_dir) == "r7"


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
            "allow_unsigned": True,
        },
    )
    write_adapter(settings.adapters_dir, "r1", b"1")
    with pytest.raises(sync.SyncError) as err:
        sync.publish_adapters(settings)
    assert "cannot publish adapters" in err.value.message and err.value.fix
    assert "very-secret-value-123" not in err.value.one_line()


# ----------------------------------------------------------------------------- signatures
def test_a_version_signed_with_another_key_is_refused_and_the_served_one_kept(tmp_path):
    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", str(shared))
    write_adapter(pub.adapters_dir, "r1", b"genuine")
    sync.publish_adapters(pub)
    worker = worker_settings(tmp_path / "w", str(shared))
    assert sync.pull(worker, "adapters").local == "r1"

    # Someone with write access to the shared location and a key of their own.
    intruder = sync_settings(
        tmp_path / "evil", str(shared), signing_key=keypair("intruder")[0], verify_key=None
    )
    write_adapter(intruder.adapters_dir, "r2", b"backdoor")
    sync.publish_adapters(intruder)
    assert (shared / "adapters" / "CURRENT").read_text().strip() == "r2"

    with pytest.raises(sync.SignatureError, match="not signed by the trusted key"):
        sync.pull(worker, "adapters")
    assert sync.local_current(worker.adapters_dir) == "r1"
    assert not (worker.adapters_dir / "versions" / "r2").exists()
    # A long-lived worker logs it and keeps serving r1.
    results = sync.Puller(worker, kinds=("adapters",)).maybe_pull(force=True)
    assert results == {} and sync.local_current(worker.adapters_dir) == "r1"


def test_an_unsigned_or_tampered_manifest_is_refused(tmp_path):
    import hashlib

    shared = tmp_path / "shared"
    pub = sync_settings(tmp_path / "pub", str(shared))
    write_adapter(pub.adapters_dir, "r1", b"genuine")
    sync.publish_adapters(pub)
    worker = worker_settings(tmp_path / "w", str(shared))
    assert sync.pull(worker, "adapters").local == "r1"

    # Tampered: a new file and a manifest listing its true hash, signature left as it was.
    r1 = shared / "adapters" / "versions" / "r1"
    forged = r1.parent / "r3"
    shutil.copytree(r1, forged)
    (forged / "adapter.gguf").write_bytes(b"backdoor")
    doc = json.loads((forged / sync.MANIFEST).read_text())
    body = json.loads(doc["signed"])
    body["version"] = "r3"
    for f in body["files"]:
        if f["path"] == "adapter.gguf":
            f.update(size=8, sha256=hashlib.sha256(b"backdoor").hexdigest())
    doc["signed"] = json.dumps(body)
    (forged / sync.MANIFEST).write_text(json.dumps(doc))
    (shared / "adapters" / "CURRENT").write_text("r3\n")
    with pytest.raises(sync.SignatureError):
        sync.pull(worker, "adapters")
    assert sync.local_current(worker.adapters_dir) == "r1"

    # A genuinely signed manifest copied under another version name.
    shutil.rmtree(forged)
    shutil.copytree(r1, forged)
    with pytest.raises(sync.SignatureError, match="signed manifest is for"):
        sync.pull(worker, "adapters")

    # Unsigned: a manifest as lorebot wrote them before signatures.
    shutil.rmtree(forged)
    shutil.copytree(r1, forged)
    files = json.loads(json.loads((r1 / sync.MANIFEST).read_text())["signed"])["files"]
    (forged / sync.MANIFEST).write_text(json.dumps({"version": "r3", "files": files}))
    with pytest.raises(sync.SignatureError, match="not signed"):
        sync.pull(worker, "adapters")
    assert sync.local_current(worker.adapters_dir) == "r1"
    assert not (worker.adapters_dir / "versions" / "r3").exists()


def test_sync_without_keys_is_a_one_line_config_error_unless_opted_out(tmp_path):
    from lorebot.errors import ConfigError

    bare = make_settings(tmp_path / "w", sync={"url": str(tmp_path / "shared")})
    with pytest.raises(ConfigError) as err:
        sync.check_config(bare)
    assert "without keys" in err.value.message and "\n" not in err.value.one_line()
    with pytest.raises(ConfigError):
        sync.pull(bare, "adapters")
    # A worker holding only the public key cannot publish.
    with pytest.raises(ConfigError, match="cannot publish"):
        sync.publish_adapters(worker_settings(tmp_path / "w2", str(tmp_path / "shared")))

    opted = make_settings(
        tmp_path / "p", sync={"url": str(tmp_path / "shared"), "allow_unsigned": True}
    )
    sync.check_config(opted)
    write_adapter(opted.adapters_dir, "r1", b"1")
    sync.publish_adapters(opted)
    other = make_settings(
        tmp_path / "o", sync={"url": str(tmp_path / "shared"), "allow_unsigned": True}
    )
    assert sync.pull(other, "adapters").local == "r1"
    # ...but a worker with a key still refuses the unsigned version.
    with pytest.raises(sync.SignatureError):
        sync.pull(worker_settings(tmp_path / "w3", str(tmp_path / "shared")), "adapters")


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    import stat

    kid = sync.generate_keys(tmp_path / "k" / "sync.key", tmp_path / "k" / "sync.pub")
    assert stat.S_IMODE((tmp_path / "k" / "sync.key").stat().st_mode) == 0o600
    assert kid == sync.key_id(sync.load_verify_key(tmp_path / "k" / "sync.pub"))
    with pytest.raises(FileExistsError):  # never overwrites the key workers trust
        sync.generate_keys(tmp_path / "k" / "sync.key", tmp_path / "k" / "other.pub")


def test_sync_cli_publish_pull_status(tmp_path, redis_server):
    import subprocess
    import sys

    from tests.conftest import child_env

    shared = tmp_path / "shared"
    pub_dir = tmp_path / "pub"
    write_adapter(pub_dir / "adapters", "r1", b"1")
    run = [sys.executable, "-m", "lorebot", "sync"]
    keys = tmp_path / "keys"
    env = child_env(pub_dir, redis_server.url, LOREBOT_SYNC__URL=str(shared))
    out = subprocess.run(
        [*run, "keygen", "--out", str(keys)], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    env["LOREBOT_SYNC__SIGNING_KEY"] = str(keys / "sync-signing.key")
    out = subprocess.run(
        [*run, "publish", "--kind", "adapters"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    env_w = child_env(
        tmp_path / "w",
        redis_server.url,
        LOREBOT_SYNC__URL=str(shared),
        LOREBOT_SYNC__VERIFY_KEY=str(keys / "sync-signing.pub"),
    )
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
