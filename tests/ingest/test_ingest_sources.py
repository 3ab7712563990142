"""Sources: recursive discovery with globs; hidden files passed over; bad paths are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.sources import Source, discover, discover_all
from lorebot.errors import IngestError


def tree(root: Path) -> None:
    for rel in [
        "a.md",
        "sub/b.txt",
        "sub/deep/c.md",
        "drafts/d.md",
        ".hidden.md",
        ".git/config",
        "~$lock.docx",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")


def test_recursive_sorted_relative(tmp_path):
    tree(tmp_path)
    found = discover(Source(tmp_path, "hr"))
    assert [f.source for f in found] == ["a.md", "drafts/d.md", "sub/b.txt", "sub/deep/c.md"]
    assert all(f.collection == "hr" and f.path.is_absolute() for f in found)


def test_include_and_exclude_globs(tmp_path):
    tree(tmp_path)
    found = discover(Source(tmp_path, "hr", include=["*.md"], exclude=["drafts/**"]))
    assert [f.source for f in found] == ["a.md", "sub/deep/c.md"]


def test_single_file_source(tmp_path):
    tree(tmp_path)
    found = discover(Source(tmp_path / "sub" / "b.txt", "it"))
    assert len(found) == 1 and found[0].source == "b.txt"


def test_missing_path_is_an_ingest_error(tmp_path):
    with pytest.raises(IngestError) as err:
        discover(Source(tmp_path / "nope", "hr"))
    assert "does not exist" in err.value.message and err.value.fix


def test_same_file_listed_once_per_collection(tmp_path):
    tree(tmp_path)
    found = discover_all(
        [Source(tmp_path, "hr"), Source(tmp_path / "a.md", "hr"), Source(tmp_path / "a.md", "eng")]
    )
    keys = [f.key for f in found]
    assert len(keys) == len(set(keys))
    assert sum(f.path.name == "a.md" for f in found) == 2  # once in hr, once in eng


def test_empty_collection_name_rejected(tmp_path):
    with pytest.raises(IngestError):
        Source(tmp_path, " ")


def test_data_dir_inside_the_source_is_not_walked(tmp_path):
    tree(tmp_path)
    data = tmp_path / "lorebot-data"
    (data / "index").mkdir(parents=True)
    (data / "index" / "manifest.json").write_text("{}")
    found = discover_all([Source(tmp_path, "hr")], skip=[data])
    assert not any("lorebot-data" in f.source for f in found)
    assert len(found) == 4
