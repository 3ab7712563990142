"""A small two-collection corpus for the refresh tests: four handbook documents (trainable)
and one restricted HR document carrying a canary string that must never reach training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorebot import assets
from tests.conftest import make_settings

CANARY = "QUILLFEATHER-7731"
HANDBOOK_DOCS = ("annual_leave.md", "expenses.md", "remote_work.md", "sick_leave.md")
RESTRICTED_DOC = f"""# Salary bands (confidential)

The executive salary review code word is {CANARY}. Band E4 pays between 180,000 and 210,000 a year.

## Retention bonus

The retention bonus for the Zephyr project is approved with code {CANARY} and is paid in March.
"""


def write_corpus(root: Path, docs: tuple[str, ...] = HANDBOOK_DOCS) -> tuple[Path, Path]:
    handbook, hr = root / "handbook", root / "hr"
    handbook.mkdir(parents=True)
    hr.mkdir(parents=True)
    for name in docs:
        shutil.copy(assets.sample_docs_dir() / name, handbook / name)
    (hr / "salary_bands.md").write_text(RESTRICTED_DOC, encoding="utf-8")
    return handbook, hr


@pytest.fixture(scope="session")
def refresh_corpus_dir(tmp_path_factory, embedder) -> Path:
    """A data dir with an index of the small corpus (built once; copy it before writing)."""
    from ingest import Source, build_index

    root = tmp_path_factory.mktemp("refresh-corpus")
    handbook, hr = write_corpus(root / "docs")
    data = root / "data"
    build_index(
        make_settings(data),
        [Source(path=handbook, collection="handbook"), Source(path=hr, collection="hr")],
        progress=False,
        embedder=embedder,
    )
    return data


@pytest.fixture()
def refresh_data(tmp_path, refresh_corpus_dir) -> Path:
    """A private copy of the small corpus's data dir (index only)."""
    data = tmp_path / "data"
    shutil.copytree(refresh_corpus_dir, data)
    return data
