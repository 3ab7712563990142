"""Store helpers: atomic pointer, sortable version ids, pruning, reciprocal-rank fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest import search, store
from lorebot.errors import IndexMissingError
from lorebot.files import atomic_write_text
from lorebot.settings import Settings
from lorebot.versioned import write_pointer


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


def fake_version(settings, version):
    d = store.version_path(settings, version)
    d.mkdir(parents=True)
    (d / store.MANIFEST).write_text(json.dumps({"version": version}))
    return d


def test_no_index_yet(settings):
    assert store.current_version(settings) is None
    assert store.list_versions(settings) == []
    with pytest.raises(IndexMissingError) as err:
        store.open_index(settings)
    assert err.value.fix == "run `lorebot ingest PATH`"


def test_pointer_to_missing_version_is_index_missing(settings):
    write_pointer(settings.index_dir, "v20260101-000000-abcd")
    assert store.current_version(settings) == "v20260101-000000-abcd"
    with pytest.raises(IndexMissingError):
        store.open_index(settings)


def test_set_current_refuses_an_incomplete_version(settings):
    store.version_path(settings, "v20260101-000000-abcd").mkdir(parents=True)  # no manifest
    with pytest.raises(IndexMissingError):
        store.set_current(settings, "v20260101-000000-abcd")
    assert store.current_version(settings) is None


def test_atomic_write_leaves_no_temp_files(settings, tmp_path):
    target = tmp_path / "dir" / "CURRENT"
    atomic_write_text(target, "a\n")
    atomic_write_text(target, "b\n")
    assert target.read_text() == "b\n"
    assert [p.name for p in target.parent.iterdir()] == ["CURRENT"]


def test_version_ids_sort_in_build_order():
    ids: list[str] = []
    for _ in range(5):  # same second: still strictly increasing
        ids.append(store.new_version_id(ids, now=1_800_000_000))
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(store._VERSION_RE.match(v) for v in ids)


def test_prune_keeps_newest_and_current(settings):
    versions = [f"v2026010{i}-000000-abcd" for i in range(1, 6)]
    for v in versions:
        fake_version(settings, v)
    store.set_current(settings, versions[0])  # rolled back to the oldest
    deleted = store.prune_versions(settings, keep=2)
    left = store.list_versions(settings)
    assert left == [versions[0], versions[3], versions[4]]
    assert sorted(deleted) == versions[1:3]


def test_rrf_fusion_order():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(3, 12.0), (4, 9.0), (1, 1.0)]
    fused = search.rrf_fuse(dense, keyword)
    rows = [r for r, _ in fused]
    # 1: 1/61 + 1/63; 3: 1/63 + 1/61 -> tie, broken by best single rank then row
    assert rows[:2] == [1, 3]
    assert rows[2:] == [2, 4]  # rank 2 in one list each: tie -> lower row first
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_rrf_one_sided():
    assert [r for r, _ in search.rrf_fuse([], [(7, 3.0), (8, 1.0)])] == [7, 8]


def test_ranges_mask():
    m = search.ranges_to_mask(6, [(1, 3), (4, 5)])
    assert m.tolist() == [0, 1, 1, 0, 1, 0]


def test_top_keyword_candidates():
    scores = np.array([0, 3.0, 0, 5.0, 1.0, 5.0], dtype=np.float32)
    assert search.top_scores(scores, 2) == [(3, 5.0), (5, 5.0)]
    assert search.top_scores(np.zeros(4, dtype=np.float32), 3) == []
