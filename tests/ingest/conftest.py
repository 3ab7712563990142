"""Fixtures for the ingest tests: the real MiniLM embedder, format fixtures, a built index.

Text formats are committed under tests/fixtures/ingest/docs; binary formats (DOCX, PDF,
PPTX, XLSX) and deliberately bad files are generated here from our own text, so the
repository holds no opaque binaries.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ingest_fixtures import (
    FIXTURES,
    make_bad_files,
    make_docx,
    make_pdf,
    make_pptx,
    make_xlsx,
    settings_for,
)


@pytest.fixture(scope="session", autouse=True)
def _offline_env():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["SCARF_NO_ANALYTICS"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def embedder():
    """The real MiniLM embedder, loaded once for the whole session."""
    from ingest.embed import Embedder

    emb = Embedder(batch_size=32)
    emb.encode(["warm up"])
    return emb


@pytest.fixture(scope="session")
def parse_pool():
    """Warm parse workers shared by the session's builds (start-up paid once)."""
    from ingest.build import make_parse_pool

    pool = make_parse_pool(workers=2, timeout_s=120)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def format_docs(tmp_path_factory) -> Path:
    """A folder with every supported format holding one known fact each."""
    root = tmp_path_factory.mktemp("formats")
    shutil.copytree(FIXTURES / "handbook", root / "handbook")
    gen = root / "generated"
    gen.mkdir()
    make_docx(gen / "ergonomics.docx")
    make_pdf(gen / "laptops.pdf")
    make_pptx(gen / "townhall.pptx")
    make_xlsx(gen / "per-diem.xlsx")
    return root


@pytest.fixture(scope="session")
def bad_docs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad")
    return root, make_bad_files(root)


@pytest.fixture(scope="session")
def built(tmp_path_factory, format_docs, embedder, parse_pool):
    """One index over the format fixtures (collection 'handbook') plus an 'eng' collection."""
    from ingest import Source, build_index

    tmp = tmp_path_factory.mktemp("built")
    eng = tmp / "eng"
    eng.mkdir()
    (eng / "deploys.md").write_text(
        "# Deploys\n\nProduction deploys happen on Tuesdays after the 11:00 stand-up. "
        "Rollbacks need the on-call engineer's approval.\n",
        encoding="utf-8",
    )
    (eng / "oncall.md").write_text(
        "# On-call\n\nThe on-call engineer carries the pager for one week "
        "and gets a day off afterwards.\n",
        encoding="utf-8",
    )
    # the handbook's front matter links to the intranet: a host citations may link to
    settings = settings_for(tmp, link_hosts=["intranet.example.org"])
    report = build_index(
        settings,
        [Source(format_docs, "handbook"), Source(eng, "eng")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
    )
    return settings, report
