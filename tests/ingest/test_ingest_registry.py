"""The source registry: what `lorebot ingest` ran, for `/lorebot reindex` to run again."""

from __future__ import annotations

import pytest

from ingest.registry import forget_sources, load_sources, record_sources, registry_path
from ingest.sources import Source
from lorebot.errors import IngestError
from lorebot.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


def test_record_and_load_by_collection(settings, tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "eng").mkdir()
    assert load_sources(settings) == []
    record_sources(settings, [Source(tmp_path / "hr", "hr", include=["*.md"])])
    record_sources(settings, [Source(tmp_path / "eng", "eng")])
    # re-recording updates the globs instead of adding a duplicate
    record_sources(settings, [Source(tmp_path / "hr", "hr", exclude=["drafts/**"])])
    all_sources = load_sources(settings)
    assert [(s.path, s.collection) for s in all_sources] == [
        (tmp_path / "hr", "hr"),
        (tmp_path / "eng", "eng"),
    ]
    hr = load_sources(settings, "hr")
    assert len(hr) == 1 and hr[0].include == [] and hr[0].exclude == ["drafts/**"]
    assert load_sources(settings, "nope") == []


def test_paths_are_stored_absolute(settings, tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    record_sources(settings, [Source("docs", "hr")])
    assert load_sources(settings)[0].path == tmp_path / "docs"


def test_forget(settings, tmp_path):
    record_sources(settings, [Source(tmp_path / "a", "hr"), Source(tmp_path / "b", "eng")])
    assert forget_sources(settings, collection="hr") == 1
    assert [s.collection for s in load_sources(settings)] == ["eng"]


def test_corrupt_registry_is_a_clear_error(settings):
    registry_path(settings).parent.mkdir(parents=True)
    registry_path(settings).write_text("{not json")
    with pytest.raises(IngestError) as err:
        load_sources(settings)
    assert "sources.json" in err.value.fix


def test_reads_a_registry_written_as_a_plain_list(settings, tmp_path):
    registry_path(settings).parent.mkdir(parents=True)
    registry_path(settings).write_text('[{"path": "%s", "collection": "hr"}]' % (tmp_path / "hr"))
    assert [(s.path, s.collection) for s in load_sources(settings)] == [(tmp_path / "hr", "hr")]
