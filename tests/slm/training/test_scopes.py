"""Issue 14, item 3: an adapter is trained only on collections that every channel it serves
may see, and a question gets only such an adapter.

Quick tests (no training): the scopes and the training plan from the channel mapping, the
serving rule, the registry per scope, and a refresh for the {public} scope that never
reads an `hr` chunk (every chunk the index reader hands out is recorded). The canary test
with a real trained adapter is tests/reliability/test_adapter_scopes.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm.training import registry
from slm.training.scopes import (
    INTERSECTION,
    PER_SCOPE,
    channel_scopes,
    may_serve,
    plan,
    scope_key,
    select,
)
from tests.conftest import make_settings
from tests.slm.training.conftest import CANARY
from tests.support.fakes import FakeGenerator

AVAILABLE = ["engineering", "handbook", "hr", "public"]
MAPPING = {
    "CPUBLIC1": ["public"],
    "CPUBLIC2": ["public"],
    "CHR00001": ["public", "hr"],
    "CENG0001": ["public", "engineering"],
}


def _settings(tmp_path: Path, **training):
    return make_settings(
        tmp_path / "data",
        slack={"channel_collections": MAPPING, "default_collections": ["public", "handbook"]},
        training=training,
    )


def test_scopes_come_from_every_mapping_and_are_deduplicated(tmp_path):
    s = _settings(tmp_path)
    scopes = channel_scopes(s, AVAILABLE, overrides={"CNEW0001": ["hr", "public"], "CALL": None})
    by_cols = {x.collections: x.channels for x in scopes}
    assert by_cols == {
        ("public",): ("CPUBLIC1", "CPUBLIC2"),
        ("hr", "public"): ("CHR00001", "CNEW0001"),
        ("engineering", "public"): ("CENG0001",),
        ("handbook", "public"): ("default", "dm"),
        tuple(AVAILABLE): ("CALL",),  # `/lorebot channel set #c all`
    }
    # An override replaces the settings of its channel; unknown collections drop out.
    scopes = channel_scopes(s, AVAILABLE, overrides={"CHR00001": ["public", "nonexistent"]})
    assert ("hr", "public") not in {x.collections for x in scopes}
    assert scope_key(["public", "hr"]) == "hr+public"
    assert scope_key(["Salaries 2026/Q1"]).startswith("s-")


def test_the_plan_intersection_and_per_scope(tmp_path):
    s = _settings(tmp_path)
    p = plan(s, AVAILABLE)
    assert p.mode == INTERSECTION
    assert [x.collections for x in p.scopes] == [("public",)]
    assert p.registry_of(p.scopes[0]) is None  # the root registry: what fleet sync publishes

    p = plan(_settings(tmp_path, adapter_scopes=PER_SCOPE), AVAILABLE)
    assert p.mode == PER_SCOPE
    assert sorted(x.collections for x in p.scopes) == [
        ("engineering", "public"),
        ("handbook", "public"),
        ("hr", "public"),
        ("public",),
    ]
    assert {p.registry_of(x) for x in p.scopes} == {
        "engineering+public",
        "handbook+public",
        "hr+public",
        "public",
    }

    # Over the limit: the most used scopes keep their own, the intersection serves the rest.
    p = plan(_settings(tmp_path, adapter_scopes=PER_SCOPE, max_scopes=2), AVAILABLE)
    assert [x.collections for x in p.scopes] == [("handbook", "public"), ("public",)]

    # training.collections narrows every scope: hr feeds nothing when left out of it.
    p = plan(
        _settings(tmp_path, adapter_scopes=PER_SCOPE, collections=["public", "engineering"]),
        AVAILABLE,
    )
    assert all("hr" not in x.collections for x in p.scopes)

    # Two channels sharing nothing: the intersection is empty, nothing is trained.
    s = make_settings(
        tmp_path / "d2", slack={"channel_collections": {"C1": ["hr"], "C2": ["engineering"]}}
    )
    assert plan(s, AVAILABLE).scopes == []
    assert (
        len(
            plan(
                s.model_copy(
                    update={"training": s.training.model_copy(update={"adapter_scopes": PER_SCOPE})}
                ),
                AVAILABLE,
            ).scopes
        )
        == 2
    )

    # No channel mapped at all: one adapter on training.collections (or everything).
    s = make_settings(tmp_path / "d3", training={"collections": ["handbook"]})
    assert [x.collections for x in plan(s, AVAILABLE).scopes] == [("handbook",)]


def test_a_question_gets_only_an_adapter_trained_within_its_scope():
    adapters = [
        ("a-public", ("public",)),
        ("a-hr", ("hr", "public")),
        ("a-legacy", None),  # a card that does not say what it learned from
    ]
    assert select(adapters, ["public"]) == "a-public"
    assert select(adapters, ["public", "hr"]) == "a-hr"
    assert select(adapters, ["hr", "public", "handbook"]) == "a-hr"
    assert select(adapters, ["hr"]) is None  # no adapter fits: the base model
    assert select(adapters, ["handbook"]) is None
    assert select(adapters, []) is None
    assert select(adapters, None) == "a-legacy"  # may see everything
    assert not may_serve(("hr", "public"), ["public"])
    assert not may_serve(None, ["public"]) and may_serve(None, None)


def _fake_adapter(s, version: str, collections: list[str] | None, scope: str | None):
    _, build = registry.start_version(s, version, scope=scope)
    (build / registry.ADAPTER_FILE).write_bytes(b"GGUF")
    card = {"status": "candidate", "reason": "test"}
    if collections is not None:
        card["collections"] = collections
    registry.commit_version(s, version, build, card, scope=scope)
    registry.promote(s, version, reason="test", scope=scope)


def test_registry_per_scope_and_the_worker_choice(tmp_path):
    """The worker's runtime picks the adapter of the question's scope, loading it through
    the factory it was given; a promotion in one scope leaves the others alone."""
    from workers.runtime import Runtime

    s = _settings(tmp_path)
    _fake_adapter(s, "a1-public", ["public"], None)
    _fake_adapter(s, "a2-hr", ["hr", "public"], "hr+public")
    assert registry.current_version(s) == "a1-public"
    assert registry.current_version(s, "hr+public") == "a2-hr"
    assert registry.scopes(s) == ["hr+public"]
    cards = {c["version"]: c for c in registry.list_all(s)}
    assert cards["a2-hr"]["scope"] == "hr+public" and cards["a1-public"]["scope"] is None

    loads: list[str | None] = []

    def make(path, version):
        loads.append(version)
        assert (path is None) == (version is None)
        return FakeGenerator(["ok"], adapter=version)

    rt = Runtime(s, make_generator=make)
    served = []
    for collections in (["public"], ["hr", "public"], ["public"], ["hr"], None, ["public"]):
        rt.refresh_adapter(collections)
        served.append(rt.generator.adapter)
    assert served == ["a1-public", "a2-hr", "a1-public", None, "a2-hr", "a1-public"]
    assert loads == ["a1-public", "a2-hr", None]  # kept loaded, not reloaded

    # Rolling back the hr scope leaves the public one serving, and the hr channel then
    # falls back to the public adapter (still within its scope).
    registry.rollback(s, scope="hr+public")
    rt.refresh_adapter(["hr", "public"])
    assert rt.generator.adapter == "a1-public"
    assert registry.current_version(s) == "a1-public"


def test_adapters_list_shows_each_scope(tmp_path):
    import subprocess
    import sys

    from tests.conftest import child_env

    s = _settings(tmp_path)
    _fake_adapter(s, "a1-public", ["public"], None)
    _fake_adapter(s, "a2-hr", ["hr", "public"], "hr+public")

    def lorebot(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "lorebot", "adapters", *args],
            env={**child_env(s.data_dir, "redis://127.0.0.1:1/0"), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = {c["version"]: c for c in json.loads(lorebot("list", "--json"))["adapters"]}
    assert listed["a1-public"]["collections"] == ["public"]
    assert listed["a2-hr"]["collections"] == ["hr", "public"]
    assert listed["a2-hr"]["scope"] == "hr+public"
    table = lorebot("list")
    assert "scope (trained on)" in table and "hr, public" in table and "hr+public" in table


# ------------------------------------------------------------------ a refresh for {public}
def test_admin_promote_and_rollback_find_the_scope(tmp_path):
    """`/lorebot adapters promote <version>` finds the scope's registry by the version;
    `/lorebot adapters rollback <scope>` rolls back that scope only."""
    from workers.tasks.refresh import adapters_impl

    s = _settings(tmp_path)
    _fake_adapter(s, "a1-public", ["public"], None)
    _fake_adapter(s, "a2-hr", ["hr", "public"], "hr+public")
    _fake_adapter(s, "a3-hr", ["hr", "public"], "hr+public")
    assert registry.current_version(s, "hr+public") == "a3-hr"
    out = adapters_impl(s, "rollback", "hr+public")
    assert "error" not in out and out["current"] == "a2-hr"
    assert registry.current_version(s) == "a1-public"  # the root registry untouched
    out = adapters_impl(s, "promote", "a3-hr")
    assert "error" not in out and "in scope hr+public" in out["text"]
    assert registry.current_version(s, "hr+public") == "a3-hr"
    listed = adapters_impl(s, "list")
    assert listed["serving"] == {"": "a1-public", "hr+public": "a3-hr"}
    assert "scope hr,public [hr+public]" in listed["text"]


class _SpyReader:
    """The real index reader, recording every chunk it hands out and every filter asked."""

    def __init__(self, reader, seen: list[str], filters: list):
        self._reader, self._seen, self._filters = reader, seen, filters

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def iter_chunks(self, collections=None):
        self._filters.append(collections)
        for c in self._reader.iter_chunks(collections):
            self._seen.append(c.collection)
            yield c

    def search(self, query, k=4, collections=None, candidates=20):
        self._filters.append(collections)
        hits = self._reader.search(query, k=k, collections=collections, candidates=candidates)
        self._seen.extend(h.chunk.collection for h in hits)
        return hits

    def get_chunk(self, chunk_id):
        c = self._reader.get_chunk(chunk_id)
        self._seen.append(c.collection)
        return c

    def neighbours(self, hit, before=1, after=1):
        out = self._reader.neighbours(hit, before, after)
        self._seen.extend(h.chunk.collection for h in out)
        return out


def test_training_for_the_public_scope_never_reads_an_hr_chunk(refresh_data, embedder, monkeypatch):
    """A public channel mapped to {handbook} (the public collection) and an HR channel to
    {handbook, hr}: the intersection plan trains {handbook}; the refresh's pairs, filters
    and RAFT examples see no hr chunk at all."""
    import ingest.store
    from slm.training.pairs import GeneratorTeacher
    from slm.training.refresh import RefreshAborted, refresh_dir, run_refresh

    s = make_settings(
        refresh_data,
        slack={"channel_collections": {"CPUBLIC1": ["handbook"], "CHR00001": ["handbook", "hr"]}},
        training={"min_train_pairs": 1, "heldout_share": 0.3, "max_new_chunks": 8},
    )
    seen: list[str] = []
    filters: list = []
    real_open = ingest.store.open_index
    monkeypatch.setattr(
        ingest.store,
        "open_index",
        lambda *a, **kw: _SpyReader(real_open(*a, **kw), seen, filters),
    )
    prompts: list[str] = []

    def scripted(messages):
        prompts.append(json.dumps(messages))
        return "Question: What does the policy say?\nAnswer: It says so."

    teacher = GeneratorTeacher(FakeGenerator(scripted), "fake")
    started: list[str] = []
    # Stop when training would start: pairs, filters and RAFT examples have all run.
    with pytest.raises(RefreshAborted):
        run_refresh(
            s,
            teacher=teacher,
            embedder=embedder,
            progress=lambda step, message, detail: started.append(step),
            should_stop=lambda: "examples" in started,
            run_id="r-public",
        )
    report = json.loads((refresh_dir(s) / "runs" / "r-public.json").read_text())
    print(report["durations_s"], report["chunks"], report["pairs"].get("kept"))
    assert report["collections"] == ["handbook"] and report["scope"] is None
    assert report["chunks"]["trainable"] > 0 and report["examples"]["train"] > 0
    assert seen and set(seen) == {"handbook"}, set(seen)
    assert None not in filters and all(f == ["handbook"] for f in filters), filters
    assert prompts and not any(CANARY in p for p in prompts)
    for name in ("pairs", "examples"):
        assert CANARY not in Path(report["files"][name]).read_text()
