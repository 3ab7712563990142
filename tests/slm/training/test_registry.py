"""The adapter registry: versions appear whole, CURRENT flips last, promote/rollback walk the
history."""

from __future__ import annotations

import json

import pytest

from slm.training import registry
from tests.conftest import make_settings


def _candidate(settings, status="rejected", score=0.5):
    version, build = registry.start_version(settings)
    (build / registry.ADAPTER_FILE).write_bytes(b"GGUF fake adapter")
    registry.commit_version(
        settings,
        version,
        build,
        {"status": status, "reason": "test", "metrics": {"candidate": {"score": score}}},
    )
    return version


def test_no_pointer_means_base_model(tmp_path):
    s = make_settings(tmp_path)
    assert registry.current_adapter(s) is None
    assert registry.list_adapters(s) == []


def test_promote_then_rollback_walks_back_to_base(tmp_path):
    s = make_settings(tmp_path)
    a = _candidate(s, "candidate")
    b = _candidate(s, "candidate")
    assert registry.promote(s, a, reason="first") is None
    ref = registry.current_adapter(s)
    assert (
        ref is not None
        and ref.version == a
        and ref.path == s.adapters_dir / "versions" / a / "adapter.gguf"
    )
    assert registry.promote(s, b, reason="second") == a
    cards = {c["version"]: c for c in registry.list_adapters(s)}
    assert cards[b]["status"] == "promoted" and cards[b]["current"]
    assert cards[a]["status"] == "retired" and not cards[a]["current"]

    assert registry.rollback(s) == a
    assert registry.current_version(s) == a
    assert registry.read_card(s, b)["status"] == "retired"
    assert registry.rollback(s) is None  # before a there was the base model
    assert registry.current_adapter(s) is None
    with pytest.raises(registry.RegistryError):
        registry.rollback(s)
    events = [e["event"] for e in registry.read_history(s)]
    assert events == ["promote", "promote", "rollback", "rollback"]


def test_rejected_candidates_are_recorded_with_metrics(tmp_path):
    s = make_settings(tmp_path)
    v = _candidate(s, "rejected", score=0.25)
    card = registry.read_card(s, v)
    assert card["status"] == "rejected" and card["metrics"]["candidate"]["score"] == 0.25
    history = registry.read_history(s)
    assert history[-1]["event"] == "reject" and history[-1]["version"] == v
    assert registry.current_adapter(s) is None


def test_half_written_version_is_never_listed_nor_promotable_and_is_cleaned(tmp_path):
    s = make_settings(tmp_path)
    version, build = registry.start_version(s)
    (build / registry.ADAPTER_FILE).write_bytes(b"GGUF partial")  # killed before the card / rename
    assert registry.list_adapters(s) == []
    with pytest.raises(registry.RegistryError):
        registry.promote(s, version)
    assert registry.clean_tmp(s) == [version]
    assert not build.exists()


def test_pointer_to_a_missing_version_falls_back_to_base(tmp_path, caplog):
    s = make_settings(tmp_path)
    s.adapters_dir.mkdir(parents=True)
    (s.adapters_dir / "CURRENT").write_text("a20990101-000000-dead\n")
    assert registry.current_adapter(s) is None
    assert "missing" in caplog.text


def test_pointer_is_replaced_atomically_and_no_temp_files_remain(tmp_path):
    s = make_settings(tmp_path)
    v = _candidate(s, "candidate")
    registry.promote(s, v)
    assert (s.adapters_dir / "CURRENT").read_text().strip() == v
    leftovers = [p.name for p in s.adapters_dir.rglob("*.tmp")]
    assert leftovers == []
    assert (
        json.loads((s.adapters_dir / "versions" / v / "card.json").read_text())["status"]
        == "promoted"
    )


def test_prune_keeps_current_and_previous(tmp_path):
    s = make_settings(tmp_path)
    versions = [_candidate(s, "candidate") for _ in range(5)]
    registry.promote(s, versions[1])
    registry.promote(s, versions[0])  # current = 0, previous = 1 (both old)
    doomed = registry.prune(s, keep=1)
    left = {c["version"] for c in registry.list_adapters(s)}
    assert versions[0] in left and versions[1] in left
    assert len(left) == 3 and set(doomed) == set(versions[2:4])
