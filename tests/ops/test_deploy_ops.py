"""The deployment files carry the sync settings and the metrics ports (Helm, compose, systemd)."""

from __future__ import annotations

import pytest

from tests.deploy._support import COMPOSE_FILE, REPO, load_yaml
from tests.deploy.test_deploy_helm import by_kind_name, container, render


def env_of(doc: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(doc)["env"]}


def test_helm_sync_env_metrics_ports_and_scrape_annotations():
    docs = by_kind_name(
        render(
            {
                "sync": {
                    "url": "s3://fleet-bucket/lorebot",
                    "endpointUrl": "http://minio.team:9000",
                    "region": "eu-west-1",
                    "existingSecret": "lorebot-s3",
                },
            }
        )
    )
    answer = docs[("Deployment", "lb-lorebot-answer-worker")]
    bot = docs[("Deployment", "lb-lorebot-bot")]
    for doc in (answer, bot, docs[("Deployment", "lb-lorebot-ingest-worker")]):
        env = env_of(doc)
        assert env["LOREBOT_SYNC__URL"]["value"] == "s3://fleet-bucket/lorebot"
        assert env["LOREBOT_SYNC__ENDPOINT_URL"]["value"] == "http://minio.team:9000"
        assert env["LOREBOT_SYNC__REGION"]["value"] == "eu-west-1"
        ref = env["LOREBOT_SYNC__SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "lorebot-s3", "key": "secret-access-key"}
        assert env["LOREBOT_METRICS__WORKER_PORT"]["value"] == "9810"
    ports = {p["name"]: p["containerPort"] for p in container(answer)["ports"]}
    assert ports == {"metrics": 9810}
    annotations = answer["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/scrape"] == "true"
        and annotations["prometheus.io/port"] == "9810"
    )
    assert bot["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "3000"


def test_helm_without_sync_sets_no_sync_env():
    docs = by_kind_name(render(None))
    env = env_of(docs[("Deployment", "lb-lorebot-answer-worker")])
    assert not [k for k in env if k.startswith("LOREBOT_SYNC__")]


def test_rendered_sync_variant_matches_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    for doc in render({"sync": {"url": "s3://b/p", "existingSecret": "s3"}}):
        kv.validate(doc, "1.33", strict=True)


def test_compose_workers_expose_metrics_and_systemd_ports_do_not_clash():
    compose = load_yaml(COMPOSE_FILE)
    for svc in ("answer-worker", "ingest-worker", "train-worker"):
        assert compose["services"][svc]["expose"] == ["9810"]
        assert "ports" not in compose["services"][svc]  # scaled replicas would clash on a host port
    ports = {"answer": "9810"}  # the default, unless a drop-in says otherwise
    for name in ("ingest", "train"):
        conf = (
            REPO / "deploy" / "systemd" / f"lorebot-worker@{name}.service.d" / "lorebot.conf"
        ).read_text()
        ports[name] = conf.split("LOREBOT_METRICS__WORKER_PORT=")[1].split()[0]
    assert len(set(ports.values())) == 3, ports
