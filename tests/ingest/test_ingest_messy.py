"""Real messy files (../shared/data): each bad kind gets its specific reason; good ones pass."""

from __future__ import annotations

import shutil

import pytest
from ingest_fixtures import SHARED_DATA, settings_for

from ingest import Source, build_index, open_index

MESSY = SHARED_DATA / "messy-files" / "unstructured-example-docs"

# file → (status, reason prefix or None)
EXPECTED = {
    "password_protected.xlsx": ("failed", "encrypted"),
    "simple.zip": ("skipped", "unsupported file type"),
    "empty.txt": ("skipped", "empty file"),
    "fake-text-all-whitespace.txt": ("skipped", "no text"),
    "fake-text-utf-16-be.txt": ("ok", None),
    "fake-text-utf-32.txt": ("ok", None),
    "stanley-cups-utf-16.csv": ("ok", None),
    "fake-email.eml": ("ok", None),
    "fake-html-cp1252.html": ("ok", None),
    "umlauts-non-utf8.md": ("ok", None),
    "fake-power-point-malformed.pptx": ("ok", None),
}


@pytest.mark.shared_data
def test_messy_files_get_specific_reasons(tmp_path, embedder, parse_pool):
    folder = tmp_path / "messy"
    folder.mkdir()
    for name in EXPECTED:
        shutil.copy(MESSY / name, folder / name)
    settings = settings_for(tmp_path)
    report = build_index(
        settings, [Source(folder, "messy")], progress=False, embedder=embedder, pool=parse_pool
    )
    by_path = {f.path: f for f in report.files}
    for name, (status, reason) in EXPECTED.items():
        got = by_path[name]
        assert got.status == status, (name, got.status, got.reason)
        if reason:
            assert got.reason.startswith(reason), (name, got.reason)
    with open_index(settings, embedder=embedder) as ix:
        sources = {r[0] for r in ix.db.execute("SELECT DISTINCT source FROM chunks")}
        text = " ".join(r[0] for r in ix.db.execute("SELECT text FROM chunks"))
    assert sources == {n for n, (s, _) in EXPECTED.items() if s == "ok"}
    assert "\x00" not in text and "\ufffd" not in text  # decoded, not mangled
