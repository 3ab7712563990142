"""Symbolic links in a source folder: a link that leaves the folder is refused with a reason.

Reliability promise (issue 14, item 1): ingest never reads a file outside the folder it
was pointed at by following a link (``faq.md -> /etc/passwd``, or a link into another
collection's folder); a link to a file inside the folder is followed once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ingest_fixtures import settings_for

from ingest import Source, build_index, open_index
from ingest.sources import discover, discover_all
from lorebot.errors import IngestError

SECRET = "The launch code of the other collection is 7731-ALPHA."


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def linked(tmp_path) -> tuple[Path, Path]:
    """docs/ (collection hr) with links out to secret/ (another collection) and inside."""
    docs, secret = tmp_path / "docs", tmp_path / "secret"
    write(docs / "leave.md", "# Leave\n\nEmployees get 27 days of annual leave each year.\n")
    write(secret / "codes.md", f"# Codes\n\n{SECRET}\n")
    (docs / "sub").mkdir()
    os.symlink(secret / "codes.md", docs / "faq.md")  # absolute link out
    os.symlink("../../secret/codes.md", docs / "sub" / "relative.md")  # relative
    os.symlink("leave.md", docs / "holidays.md")  # inside the folder: same file as leave.md
    return docs, secret


def test_links_leaving_the_source_folder_are_refused_and_inside_ones_followed_once(linked):
    docs, secret = linked
    found = {f.source: f for f in discover(Source(docs, "hr"))}
    assert set(found) == {"leave.md", "faq.md", "sub/relative.md"}  # holidays.md = leave.md
    for name in ("faq.md", "sub/relative.md"):
        assert found[name].refused and "outside the source folder" in found[name].refused
        assert secret not in found[name].path.parents  # the target is never what is read
    assert found["leave.md"].refused is None


def test_an_outside_link_is_never_indexed_and_the_report_says_why(
    tmp_path, linked, embedder, parse_pool
):
    docs, _ = linked
    settings = settings_for(tmp_path)
    report = build_index(
        settings, [Source(docs, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    by = {f.path: f for f in report.files}
    assert by["leave.md"].status == "ok"
    for name in ("faq.md", "sub/relative.md"):
        assert by[name].status == "skipped", by[name]
        assert by[name].reason.startswith("unsafe link: points outside the source folder")
    assert "holidays.md" not in by  # the inside link is the same file: indexed once
    with open_index(settings) as ix:
        text = " ".join(r[0] for r in ix.db.execute("SELECT text FROM chunks"))
    assert "7731-ALPHA" not in text


def test_a_link_into_a_skipped_folder_is_refused(tmp_path):
    docs = tmp_path / "docs"
    write(docs / ".git" / "config", "[remote] url = https://user:token@example.org/x\n")
    os.symlink(docs / ".git" / "config", docs / "notes.txt")
    (found,) = discover(Source(docs, "hr"))
    assert found.source == "notes.txt" and "skipped folder" in (found.refused or "")


def test_a_file_source_that_is_a_link_out_of_its_folder_is_an_error(tmp_path, linked):
    docs, _ = linked
    with pytest.raises(IngestError) as err:
        discover_all([Source(docs / "faq.md", "hr")])
    assert "link" in err.value.message and err.value.fix
    # a link given directly whose target stays in the link's own folder is fine
    (f,) = discover(Source(docs / "holidays.md", "hr"))
    assert f.path == (docs / "leave.md").resolve() and f.refused is None
