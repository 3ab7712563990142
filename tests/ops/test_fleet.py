"""Many workers, one truth (issue 7): two real `lorebot worker` processes on one machine,
each with its own data directory, syncing from one published location.

The tests of this module run in order on one fleet: first index served, a re-index
published from a third data directory, a promotion published to the adapters location,
then the workers' metrics endpoints and logs are checked. Redis has a password here, so
the log check can prove it never reaches a log line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lorebot import contracts, sync
from tests.conftest import WorkerProcess, make_settings

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "fleet-redis-pw-5d1c9e"
BOT_TOKEN = "xoxb-1111-2222-fleetTokenAbc"
QUESTION = "How many days of annual leave do full-time employees get?"
NEW_DOC = (
    "# Bicycle parking\n\nThe bicycle cellar under building C opens at 06:30 and closes at 22:00. "
    "Badges for the bicycle cellar are issued by the facilities desk.\n"
)


@dataclass
class Fleet:
    redis_url: str
    shared: Path
    publisher: object  # Settings of the third data dir
    workers: dict[str, WorkerProcess]
    metrics_ports: dict[str, int]
    data_dirs: dict[str, Path] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    stages: dict[str, dict[str, int]] = field(default_factory=lambda: {"a": {}, "b": {}})
    client: object = None
    versions: dict[str, str] = field(default_factory=dict)

    def ask(self, worker: str, text: str = QUESTION) -> dict:
        from lorebot.contracts import TASK_ANSWER
        from lorebot.types import Question

        q = Question(text=text, channel="CFLEET01")
        result = self.client.send_task(
            TASK_ANSWER,
            kwargs={"question": q.model_dump(mode="json"), "reply": None},
            queue=f"fleet_{worker}",
            task_id=q.question_id,
        )
        payload = result.get(timeout=240)
        assert "error" not in payload, payload
        self.asked[worker] += 1
        for stage in payload["timings_ms"]:
            self.stages[worker][stage] = self.stages[worker].get(stage, 0) + 1
        payload["_qid"] = q.question_id
        return payload

    def serving(self) -> dict[str, dict]:
        import redis

        raw = redis.Redis.from_url(self.redis_url).hgetall(contracts.SERVING)
        by_pid = {json.loads(v)["pid"]: json.loads(v) for v in raw.values()}
        return by_pid


def _redis_with_password(tmp: Path):
    from lorebot import assets
    from lorebot.cli.stack import free_port, redis_command, redis_ping

    port = free_port()
    cmd = [*redis_command(assets.redis_server_binary(), port, tmp), "--requirepass", REDIS_PASSWORD]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while not redis_ping(url, timeout=0.5):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc, url


def worker_pids(w: WorkerProcess) -> list[int]:
    """The pool children of a worker (they answer; the main process serves metrics)."""
    out = subprocess.run(
        ["pgrep", "-P", str(w.proc.pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, sample_data_dir):
    from lorebot.cli.stack import free_port
    from workers.client import make_client

    tmp = tmp_path_factory.mktemp("fleet")
    redis_proc, url = _redis_with_password(tmp / "redis")
    shared = tmp / "shared"
    # The publisher: a copy of the session's sample index, published as the first version.
    pub_dir = tmp / "publisher"
    shutil.copytree(sample_data_dir, pub_dir)
    keys = tmp / "keys"
    sync.generate_keys(keys / "sync.key", keys / "sync.pub")
    publisher = make_settings(
        pub_dir, url, sync={"url": f"file://{shared}", "signing_key": keys / "sync.key"}
    )
    sync.publish_index(publisher)

    workers: dict[str, WorkerProcess] = {}
    ports: dict[str, int] = {}
    try:
        for name, as_json in (("a", "true"), ("b", "false")):
            ports[name] = free_port()
            w = WorkerProcess(
                tmp / f"worker-{name}",
                url,
                tmp / f"worker-{name}.log",
                f"answer,fleet_{name}",
                LOREBOT_SYNC__URL=f"file://{shared}",
                LOREBOT_SYNC__VERIFY_KEY=str(keys / "sync.pub"),
                LOREBOT_SYNC__CHECK_INTERVAL_S="0",
                LOREBOT_MODEL__MAX_TOKENS="8",
                LOREBOT_MODEL__N_THREADS="1",
                LOREBOT_WORKER__CONCURRENCY="1",
                LOREBOT_METRICS__WORKER_PORT=str(ports[name]),
                LOREBOT_METRICS__HOST="127.0.0.1",
                LOREBOT_LOGGING__JSON=as_json,
                LOREBOT_SLACK__BOT_TOKEN=BOT_TOKEN,
            )
            workers[name] = w
        for w in workers.values():
            w.wait_ready(timeout=300)
        f = Fleet(
            url,
            shared,
            publisher,
            workers,
            ports,
            client=make_client(url),
            data_dirs={n: tmp / f"worker-{n}" for n in workers},
        )
        f.versions["index_v1"] = sync.local_current(publisher.index_dir)
        yield f
    finally:
        for w in workers.values():
            w.stop()
        redis_proc.terminate()
        redis_proc.wait(10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_both_workers_serve_the_published_index(fleet):
    v1 = fleet.versions["index_v1"]
    for name in ("a", "b"):
        answer = fleet.ask(name)
        assert answer["index_version"] == v1, name
        assert (fleet.data_dirs[name] / "index" / "versions" / v1 / "manifest.json").is_file()
    served = fleet.serving()
    assert len(served) == 2 and {s["index"] for s in served.values()} == {v1}
    for name, w in fleet.workers.items():  # figures for deploy/README.md "Sizing"
        children = worker_pids(w)
        print(
            f"worker {name}: main RSS {rss_mib(w.proc.pid):.0f} MiB, "
            "pool child RSS (model + index loaded, 1 answer) "
            f"{[round(rss_mib(c)) for c in children]} MiB"
        )


def test_after_a_reindex_both_answer_with_the_new_version(fleet, tmp_path, embedder):
    from ingest import Source, build_index
    from lorebot import assets

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "bicycles.md").write_text(NEW_DOC)
    report = build_index(
        fleet.publisher,
        [
            Source(path=assets.sample_docs_dir(), collection="handbook"),
            Source(path=extra, collection="handbook"),
        ],
        progress=False,
        embedder=embedder,
    )
    v2 = report.version
    assert v2 and v2 != fleet.versions["index_v1"]
    # ingest.store.publish published it: the shared CURRENT names it.
    assert (fleet.shared / "index" / "CURRENT").read_text().strip() == v2
    fleet.versions["index_v2"] = v2

    for name in ("a", "b"):
        answer = fleet.ask(name, "When does the bicycle cellar open?")
        assert answer["index_version"] == v2, name
        assert (fleet.data_dirs[name] / "index" / "CURRENT").read_text().strip() == v2
    served = fleet.serving()
    assert {s["index"] for s in served.values()} == {v2}


def _real_adapter(tmp: Path) -> bytes:
    """A GGUF LoRA adapter written by slm.training.lora's exporter.

    The peft weights are a small random rank-4 update of two attention projections,
    written straight to safetensors: exporting them exercises the same path a trained
    adapter takes, without spending a minute of CI on training (tests/slm/training and the
    lora tests train for real).
    """
    import numpy as np
    from safetensors.numpy import save_file

    from lorebot import assets
    from slm.training.lora import PEFT_CONFIG, PEFT_WEIGHTS, export_gguf_adapter

    rank, n_embd = 4, 576  # SmolLM2-135M: hidden size 576, q_proj and o_proj are 576 x 576
    rng = np.random.default_rng(0)
    peft = tmp / "peft"
    peft.mkdir()
    (peft / PEFT_CONFIG).write_text(json.dumps({"r": rank, "lora_alpha": 8, "peft_type": "LORA"}))
    weights = {}
    for layer in (0, 1):
        for proj in ("q_proj", "o_proj"):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            weights[f"{key}.lora_A.weight"] = rng.normal(0, 0.01, (rank, n_embd)).astype(np.float32)
            weights[f"{key}.lora_B.weight"] = rng.normal(0, 0.01, (n_embd, rank)).astype(np.float32)
    save_file(weights, str(peft / PEFT_WEIGHTS))
    out = export_gguf_adapter(peft, assets.answer_model_path(None), tmp / "adapter.gguf")
    return out.read_bytes()


def test_after_a_promotion_both_report_the_same_adapter(fleet, tmp_path):
    payload = _real_adapter(tmp_path)

    version = "r20261123-000001-fleet"
    adapters = fleet.publisher.adapters_dir
    vdir = adapters / "versions" / version
    vdir.mkdir(parents=True)
    (vdir / "adapter.gguf").write_bytes(payload)
    (vdir / "config.json").write_text(json.dumps({"rank": 8}))
    (vdir / "card.json").write_text(json.dumps({"status": "promoted"}))
    (adapters / "CURRENT").write_text(version + "\n")
    assert sync.publish_adapters(fleet.publisher).uploaded

    for name in ("a", "b"):
        answer = fleet.ask(name)
        assert answer["adapter"] == version, name
        pulled = fleet.data_dirs[name] / "adapters"
        assert (pulled / "CURRENT").read_text().strip() == version
        assert (pulled / "versions" / version / "adapter.gguf").read_bytes() == payload
    served = fleet.serving()
    assert {s["adapter_synced"] for s in served.values()} == {version}
    assert {s["index"] for s in served.values()} == {fleet.versions["index_v2"]}
    fleet.versions["adapter"] = version
    fleet.versions["adapter_served"] = version


def scrape(port: int) -> tuple[str, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return body, time.perf_counter() - started


def sample(body: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_worker_metrics_are_scraped_over_http(fleet):
    for name in ("a", "b"):
        body, seconds = scrape(fleet.metrics_ports[name])
        print(f"scrape worker {name}: {seconds * 1000:.1f} ms, {len(body)} bytes")
        asked = fleet.asked[name]
        answered = sample(body, "lorebot_questions_total", outcome="answered")
        abstained = sample(body, "lorebot_questions_total", outcome="abstained")
        assert answered is not None and abstained is not None
        assert answered + abstained == asked, (name, answered, abstained, asked)
        assert sample(body, "lorebot_questions_total", outcome="failed") == 0
        assert fleet.stages[name]["retrieve"] == fleet.stages[name]["total"] == asked
        for stage in ("retrieve", "generate", "first_token", "total"):
            # An early abstention has no generate / first_token timing.
            expected = fleet.stages[name].get(stage, 0)
            assert sample(body, "lorebot_stage_seconds_count", stage=stage) == (expected or None), (
                stage
            )
            if expected:
                assert (
                    sample(body, "lorebot_stage_seconds_bucket", stage=stage, le="+Inf") == expected
                )
        assert sample(body, "lorebot_stage_seconds_sum", stage="total") > 0
        assert sample(body, "lorebot_queue_depth", queue="answer") == 0
        assert sample(body, "lorebot_queue_depth", queue="train") == 0
        assert sample(body, "lorebot_index_version_info", version=fleet.versions["index_v2"]) == 1
        assert sample(body, "lorebot_index_version_info", version=fleet.versions["index_v1"]) in (
            0,
            None,
        )
        served_adapter = fleet.versions.get("adapter_served") or "base"
        assert sample(body, "lorebot_adapter_version_info", version=served_adapter) == 1
        if served_adapter != "base":
            assert sample(body, "lorebot_adapter_version_info", version="base") in (0, None)
        assert "# TYPE lorebot_refresh_total counter" in body
    served = fleet.serving()
    assert sorted(s["metrics_port"] for s in served.values()) == sorted(
        fleet.metrics_ports.values()
    )


def test_worker_logs_carry_question_context_and_no_secret(fleet):
    logs = {name: w.log() for name, w in fleet.workers.items()}
    for name, text in logs.items():
        assert REDIS_PASSWORD not in text, name
        assert BOT_TOKEN not in text, name
    # Worker a logs JSON: its "answered" line carries the question's id, channel and versions.
    lines = [json.loads(line) for line in logs["a"].splitlines() if line.startswith("{")]
    answered = [d for d in lines if "answered index=" in d.get("message", "")]
    assert answered, logs["a"][-2000:]
    last = answered[-1]
    assert last["question_id"] and last["channel"] == "CFLEET01"
    assert last["index_version"] == fleet.versions["index_v2"]
    assert last["adapter_version"]
    assert last["level"] == "INFO" and last["logger"] == "workers.app"
    # Worker b logs text with the same context as a suffix.
    assert re.search(
        r"answered index=.*\[question_id=\S+ channel=CFLEET01 index_version=\S+ "
        r"adapter_version=\S+\]",
        logs["b"],
    )
