"""Parsing Markdown and HTML without unstructured's narrative-text check changes no chunk.

``ingest.parse.partition.plain_text_classes`` lets unstructured's HTML parser skip the
spaCy check that tells "NarrativeText" from plain "Text", because our elements treat both
alike. These tests parse the same files with the check skipped and with unstructured's own
classification and require the very same output (chunk ids, texts, embedded texts,
headings, pages, token counts, kinds, sentence spans); the whole of both handbooks is
compared by ``bench/parse_speed.py dump`` / ``compare``.
"""

from __future__ import annotations

from pathlib import Path

from ingest_fixtures import FIXTURES

from ingest.build import unit_spans
from ingest.parse import ParseJob, ParseOutput, parse_job, partition

SAMPLE_DOCS = Path(__file__).resolve().parents[2] / "lorebot" / "sample_docs"

# Paragraphs that reach each branch of unstructured's text classifier: narrative prose,
# title-like and all-caps lines, numbers, a bullet written as text, an address, an e-mail
# address, a one-character line, plus headings, lists, a table and code.
TRICKY_MD = """---
title: Classifier corners
---

# Travel and expenses

Employees book travel through the portal and keep every receipt for thirty days.

QUARTERLY REVIEW OF EXPENSES

Annual Budget Overview

2026

• A bullet written as text, not as Markdown

Doylestown, PA 18901

finance@example.org

x

## Limits

| item | limit |
|---|---|
| hotel | 180 |
| meals | 45 |

- Taxis after 22:00 are refunded.
- Trains go in second class.

```
export PORTAL_TOKEN=unused
```

Short line without a verb
"""


def _job(path: Path) -> ParseJob:
    return ParseJob.for_file(path, "same-output")


def _output(path: Path) -> dict:
    return _view(parse_job(_job(path)))


def _view(out: object) -> dict:
    assert isinstance(out, ParseOutput), out
    return {
        "title": out.title,
        "url": out.url,
        "elements": out.elements,
        "chunks": [{**c, "spans": unit_spans(c["text"], c["embed_text"])} for c in out.chunks],
    }


def _files(tmp_path: Path) -> list[Path]:
    tricky = tmp_path / "classifier-corners.md"
    tricky.write_text(TRICKY_MD, encoding="utf-8")
    html = tmp_path / "classifier-corners.html"
    html.write_text(
        "<html><head><title>Corners</title></head><body><main>"
        "<h1>Desk booking</h1><p>Desks are booked in the app a day ahead.</p>"
        "<div>MEETING ROOMS</div><div>Room Orion Seats Twelve</div><p>42</p>"
        "<p>· Bring your badge</p><span>loose text outside a block</span>"
        "</main></body></html>",
        encoding="utf-8",
    )
    samples = sorted(
        p for p in SAMPLE_DOCS.iterdir() if p.suffix in (".md", ".html") and p.is_file()
    )
    return [
        tricky,
        html,
        FIXTURES / "handbook" / "bicycle.md",
        FIXTURES / "handbook" / "cafeteria.html",
        *samples,
    ]


def test_markdown_and_html_chunks_are_the_same_with_and_without_the_check(tmp_path, monkeypatch):
    files = _files(tmp_path)
    assert len(files) >= 8
    fast = {p.name: _output(p) for p in files}
    monkeypatch.setattr(partition, "SKIP_NARRATIVE_CHECK", False)
    checked = {p.name: _output(p) for p in files}
    for name in checked:
        assert fast[name] == checked[name], name
    assert sum(len(o["chunks"]) for o in fast.values()) > len(files)


def test_the_check_is_skipped_only_inside_the_block():
    from unstructured.partition.html import partition_html

    html = "<p>Employees book travel through the portal and keep every receipt.</p>"
    with partition.plain_text_classes():
        inside = [e.category for e in partition_html(text=html, languages=["eng"])]
    outside = [e.category for e in partition_html(text=html, languages=["eng"])]
    # Inside, the paragraph is plain Text (no spaCy); elsewhere in the process unstructured
    # classifies as it always does.
    assert inside == ["UncategorizedText"]
    assert outside == ["NarrativeText"]


def worker_view(job: ParseJob) -> tuple[ParseOutput | object, bool, bool]:
    """Run in a parse worker: the file's output, and whether torch got imported there."""
    import sys

    import thinc.compat

    return parse_job(job), "torch" in sys.modules, bool(thinc.compat.has_torch)


def test_parse_workers_run_spacy_without_torch_and_give_the_same_chunks(tmp_path):
    import torch  # noqa: F401  (so this process's spaCy runs beside torch, as before)

    from ingest.parse import worker_init
    from ingest.pool import TimeoutPool

    # Text files run spaCy's tagger and parser for their titles; Markdown does not.
    files = [
        FIXTURES / "handbook" / "badges.txt",
        SAMPLE_DOCS / "payroll.txt",
        SAMPLE_DOCS / "vpn_guide.txt",
        FIXTURES / "handbook" / "bicycle.md",
    ]
    here = {p.name: _output(p) for p in files}
    with TimeoutPool(worker_view, workers=1, timeout_s=120, init=worker_init) as pool:
        results = list(pool.imap_unordered([_job(p) for p in files]))
    assert len(results) == len(files)
    for job, ok, value in results:
        assert ok, value
        out, torch_imported, thinc_has_torch = value
        assert not torch_imported and not thinc_has_torch
        assert _view(out) == here[Path(job.path).name], job.path
