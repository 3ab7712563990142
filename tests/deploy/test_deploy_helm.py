"""The Helm chart: metadata and values always; lint, render and Kubernetes schema checks
when the tools are installed.

Helm itself is not a PyPI or Debian package. Its Go SDK is, compiled into the wheel of
`helm-python-sdk` (imported as helm_python): `helm.lint` is `helm lint`, `Chart.render`
is `helm template`, with no cluster. `kubernetes-validate` checks the rendered objects
against the Kubernetes API's JSON schemas that it ships. Without them those tests skip.
"""

from __future__ import annotations

import re

import pytest
import yaml

from lorebot.contracts import ALL_QUEUES
from tests.deploy._support import (
    CHART,
    COMPOSE_FILE,
    DEPLOY,
    WORKER_ROLES,
    load_yaml,
)

#: Oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(CHART / "values.yaml")


# ----------------------------------------------------------------------------- always
def test_chart_metadata():
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "lorebot"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]


def test_values_describe_every_role(values):
    assert values["bot"]["enabled"] and values["beat"]["enabled"] and values["redis"]["enabled"]
    queues = [q for role in WORKER_ROLES for q in values["workers"][role]["queues"].split(",")]
    assert set(queues) == set(ALL_QUEUES)
    assert values["workers"]["train"]["concurrency"] == 1
    assert values["workers"]["train"]["replicas"] == 1
    assert values["persistence"]["accessModes"] == ["ReadWriteMany"]
    answer = values["workers"]["answer"]
    assert answer["autoscaling"]["enabled"] and not answer["autoscaling"]["keda"]["enabled"]

    # A worker child holds 1,021 MiB with the model and a small index, its Celery main
    # process 70 MiB (deploy/README.md, Sizing): the request must cover both.
    def mib(quantity: str) -> int:
        return int(quantity[:-2]) * {"Mi": 1, "Gi": 1024}[quantity[-2:]]

    resources = answer["resources"]
    assert 1021 + 70 <= mib(resources["requests"]["memory"]) <= mib(resources["limits"]["memory"])
    assert values["bot"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert values["bot"]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert values["console"]["enabled"] is False


def test_every_role_has_a_template():
    templates = {p.name for p in (CHART / "templates").iterdir()}
    for name in (
        "bot.yaml",
        "workers.yaml",
        "beat.yaml",
        "redis.yaml",
        "hpa.yaml",
        "keda.yaml",
        "pvc.yaml",
        "secret-slack.yaml",
        "secret-redis.yaml",
        "configmap.yaml",
        "console.yaml",
    ):
        assert name in templates, name


def test_chart_redis_conf_is_deploy_redis_conf():
    """The chart cannot read files outside itself, so it carries a copy: keep them equal."""
    assert (CHART / "files" / "redis.conf").read_text() == (DEPLOY / "redis.conf").read_text()


def test_worker_probe_is_the_compose_health_check(values):
    compose = load_yaml(COMPOSE_FILE)
    test = compose["services"]["answer-worker"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert values["workerProbe"]["command"] == test[1:]


# ----------------------------------------------------------------------------- with Helm
def _helm():
    return pytest.importorskip(
        "helm_python", reason="helm-python-sdk is not installed (Helm's Go SDK for Python)"
    )


def render(overrides: dict | None = None) -> list[dict]:
    helm = _helm()
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(overrides, name="lb", namespace="team")
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def test_helm_lint_is_clean():
    helm = _helm()
    report = helm.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_rendered_chart_has_every_role():
    objs = by_kind_name(render())
    for role in ("bot", "answer-worker", "ingest-worker", "train-worker", "beat"):
        assert ("Deployment", f"lb-lorebot-{role}") in objs, role
    assert ("StatefulSet", "lb-lorebot-redis") in objs
    assert ("PersistentVolumeClaim", "lb-lorebot-data") in objs
    assert ("Secret", "lb-lorebot-slack") in objs and ("Secret", "lb-lorebot-redis") in objs

    for role, queue in zip(("answer", "ingest", "train"), ("answer,control", "ingest", "train")):
        args = container(objs[("Deployment", f"lb-lorebot-{role}-worker")])["args"]
        assert args[:3] == ["worker", "--queues", queue]

    beat = objs[("Deployment", "lb-lorebot-beat")]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    train = objs[("Deployment", "lb-lorebot-train-worker")]
    assert train["spec"]["replicas"] == 1 and train["spec"]["strategy"]["type"] == "Recreate"
    assert container(train)["args"][-2:] == ["--concurrency", "1"]


def test_rendered_probes_and_shutdown():
    objs = by_kind_name(render())
    bot = container(objs[("Deployment", "lb-lorebot-bot")])
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for role in WORKER_ROLES:
        dep = objs[("Deployment", f"lb-lorebot-{role}-worker")]
        c = container(dep)
        assert c["livenessProbe"]["exec"]["command"][:2] == ["lorebot", "health"]
        assert "startupProbe" in c
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 150
    redis = container(objs[("StatefulSet", "lb-lorebot-redis")])
    assert redis["command"] == ["sh", "-c"]
    assert "exec redis-server /etc/redis/redis.conf -" in redis["args"][0]


def test_answer_workers_autoscale_on_cpu():
    objs = by_kind_name(render())
    hpa = objs[("HorizontalPodAutoscaler", "lb-lorebot-answer-worker")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lb-lorebot-answer-worker"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # The HPA owns the replica count: the Deployment must not fight it on upgrades.
    assert "replicas" not in objs[("Deployment", "lb-lorebot-answer-worker")]["spec"]


def test_keda_variant_scales_on_the_answer_list():
    docs = render(
        {"workers": {"answer": {"autoscaling": {"enabled": False, "keda": {"enabled": True}}}}}
    )
    objs = by_kind_name(docs)
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in objs)
    scaled = objs[("ScaledObject", "lb-lorebot-answer-worker")]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "answer"
    assert trigger["metadata"]["address"] == "lb-lorebot-redis.team.svc:6379"
    auth = objs[("TriggerAuthentication", "lb-lorebot-redis-auth")]
    assert auth["spec"]["secretTargetRef"][0]["name"] == "lb-lorebot-redis"


def test_secrets_and_redis_url():
    objs = by_kind_name(render({"slack": {"botToken": "xoxb-test", "signingSecret": "sig"}}))
    slack = objs[("Secret", "lb-lorebot-slack")]
    # Only the keys given: an empty app-token would switch the bot to Socket Mode.
    assert set(slack["data"]) == {"bot-token", "signing-secret"}
    env = {e["name"]: e for e in container(objs[("Deployment", "lb-lorebot-answer-worker")])["env"]}
    assert (
        env["LOREBOT_REDIS__URL"]["value"] == "redis://:$(REDIS_PASSWORD)@lb-lorebot-redis:6379/0"
    )
    assert env["LOREBOT_SLACK__APP_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    names = [e["name"] for e in container(objs[("Deployment", "lb-lorebot-answer-worker")])["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("LOREBOT_REDIS__URL"), (
        "$(VAR) needs VAR defined first"
    )

    external = by_kind_name(
        render({"redis": {"enabled": False, "external": {"url": "rediss://:pw@cache:6380/0"}}})
    )
    assert ("StatefulSet", "lb-lorebot-redis") not in external
    env = {e["name"]: e for e in container(external[("Deployment", "lb-lorebot-bot")])["env"]}
    assert env["LOREBOT_REDIS__URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "lb-lorebot-redis",
        "key": "redis-url",
    }


CONSOLE = {"console": {"enabled": True, "existingSecret": "lorebot-console"}}


def test_console_renders_only_when_enabled_with_its_hash_from_a_secret():
    assert not any(d["metadata"]["name"].endswith("-console") for d in render()), (
        "the console is off by default"
    )
    objs = by_kind_name(render(CONSOLE))
    dep = objs[("Deployment", "lb-lorebot-console")]
    assert dep["spec"]["replicas"] == 1
    c = container(dep)
    assert c["args"] == ["console"] and "command" not in c
    env = {e["name"]: e for e in c["env"]}
    assert env["LOREBOT_CONSOLE__PASSWORD_HASH"]["valueFrom"]["secretKeyRef"] == {
        "name": "lorebot-console",
        "key": "password-hash",
        "optional": True,
    }
    assert "value" not in env["LOREBOT_CONSOLE__OIDC_CLIENT_SECRET"]
    # the same Redis URL as every other role
    worker = {e["name"]: e for e in container(objs[("Deployment", "lb-lorebot-beat")])["env"]}
    assert env["LOREBOT_REDIS__URL"] == worker["LOREBOT_REDIS__URL"]
    assert env["LOREBOT_CONSOLE__PORT"]["value"] == "8088"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    svc = objs[("Service", "lb-lorebot-console")]
    assert svc["spec"]["type"] == "ClusterIP"
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"workers": {"train": {"concurrency": 2}}}, "workers.train.concurrency must be 1"),
        ({"redis": {"enabled": False}}, "redis.external.url"),
        ({"workers": {"answer": {"autoscaling": {"keda": {"enabled": True}}}}}, "not both"),
        ({"console": {"enabled": True}}, "console.existingSecret"),
    ],
)
def test_chart_refuses_unsafe_values(overrides, message):
    helm = _helm()
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(overrides)


VARIANTS = [
    None,
    {
        "redis": {"enabled": False, "external": {"url": "redis://:pw@r:6379/0"}},
        "persistence": {"enabled": False},
        "bot": {
            "ingress": {
                "enabled": True,
                "tls": [{"hosts": ["lorebot.example.com"], "secretName": "tls"}],
            }
        },
        "slack": {"botToken": "xoxb-test", "appToken": "xapp-test"},
        "console": {"enabled": True, "existingSecret": "lorebot-console"},
        "workers": {
            "answer": {"autoscaling": {"enabled": False, "keda": {"enabled": True}}},
            "ingest": {
                "extraVolumes": [{"name": "docs", "persistentVolumeClaim": {"claimName": "docs"}}],
                "extraVolumeMounts": [{"name": "docs", "mountPath": "/docs", "readOnly": True}],
            },
        },
    },
]


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("overrides", VARIANTS, ids=["defaults", "external-redis-keda-ingress"])
def test_rendered_objects_match_kubernetes_schemas(overrides, kube):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    checked = 0
    for doc in render(overrides):
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in the Kubernetes API
        kv.validate(doc, kube, strict=True)
        checked += 1
    assert checked >= 10
