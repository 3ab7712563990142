"""The sample handbook is a test asset: its facts must be where the Q&A fixture says.

Retrieval and answer-quality tests ask questions from ``tests/fixtures/sample_qa.json``
and check the answer by substring. That only means something if every key fact
is really in the named source document and, for numbers, in no other one, so a
right answer cannot come from the wrong page. These tests guard that contract,
the mix of formats the ingest pipeline must handle, and the generator that
renders the DOCX/PDF pages.
"""

from __future__ import annotations

import html.parser
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "lorebot" / "sample_docs"
QA_FILE = REPO / "tests" / "fixtures" / "sample_qa.json"
GENERATOR = REPO / "scripts" / "make_sample_docs.py"
FORMATS = {".md", ".txt", ".html", ".docx", ".pdf"}

docx = pytest.importorskip("docx", reason="python-docx (dev extra) reads the DOCX pages")
pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF pages")
pytest.importorskip("fpdf", reason="fpdf2 (dev extra) renders the PDF pages")


# --------------------------------------------------------------------------- helpers
class _HTMLText(html.parser.HTMLParser):
    """Collects visible text and the tag names seen; skips <head> content."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: Counter[str] = Counter()
        self._in_head = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag == "head":
            self._in_head += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head -= 1

    def handle_data(self, data: str) -> None:
        if not self._in_head:
            self.parts.append(data)


def _parse_html(path: Path) -> _HTMLText:
    parser = _HTMLText()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def extract_text(path: Path) -> str:
    """Plain text of one handbook page, whitespace collapsed, whatever its format."""
    suffix = path.suffix.lower()
    if suffix in {".md", ".txt"}:
        raw = path.read_text(encoding="utf-8")
    elif suffix == ".html":
        raw = " ".join(_parse_html(path).parts)
    elif suffix == ".docx":
        document = docx.Document(str(path))
        pieces = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                pieces.extend(cell.text for cell in row.cells)
        raw = "\n".join(pieces)
    elif suffix == ".pdf":
        raw = "\n".join(page.extract_text() or "" for page in pypdf.PdfReader(str(path)).pages)
    else:
        raise AssertionError(f"unexpected sample document format: {path.name}")
    return " ".join(raw.split())


def is_numeric(fact: str) -> bool:
    """Numbers, decimals and clock times (``27``, ``0.30``, ``9:15``)."""
    return bool(re.fullmatch(r"\d[\d.,:]*", fact))


def numeric_pattern(fact: str) -> re.Pattern[str]:
    """Match ``fact`` as a whole number: "27" must not hit "2027", "0.27" or "27.5"."""
    return re.compile(r"(?<!\d)(?<!\d[.,:])" + re.escape(fact) + r"(?!\d)(?![.,:]\d)")


def contains_fact(text: str, fact: str) -> bool:
    if is_numeric(fact):
        return numeric_pattern(fact).search(text) is not None
    return fact.lower() in text.lower()


def load_generator() -> ModuleType:
    """Import scripts/make_sample_docs.py by path; scripts/ is not a package."""
    spec = importlib.util.spec_from_file_location("make_sample_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations via sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def doc_paths() -> list[Path]:
    return sorted(p for p in DOCS.iterdir() if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def texts(doc_paths: list[Path]) -> dict[str, str]:
    return {p.name: extract_text(p) for p in doc_paths}


@pytest.fixture(scope="module")
def qa() -> dict[str, list[dict[str, object]]]:
    return json.loads(QA_FILE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the corpus
def test_handbook_has_enough_documents_in_enough_formats(doc_paths: list[Path]) -> None:
    by_format = Counter(p.suffix.lower() for p in doc_paths)
    assert len(doc_paths) >= 16
    assert set(by_format) <= FORMATS, f"unexpected formats: {set(by_format) - FORMATS}"
    assert len(by_format) >= 5
    assert by_format[".html"] >= 2 and by_format[".txt"] >= 2
    assert by_format[".docx"] >= 2 and by_format[".pdf"] >= 2
    assert by_format[".md"] > len(doc_paths) // 2, "the handbook should be mostly Markdown"


def test_directory_is_flat_and_small() -> None:
    entries = list(DOCS.iterdir())
    assert not [e.name for e in entries if e.is_dir()], "ingest expects a flat directory"
    assert sum(e.stat().st_size for e in entries) < 500 * 1024


def test_every_page_is_a_realistic_length(texts: dict[str, str]) -> None:
    lengths = {name: len(text.split()) for name, text in texts.items()}
    wrong = {name: n for name, n in lengths.items() if not 250 <= n <= 700}
    assert not wrong, f"pages outside 250-700 words: {wrong}"


def test_some_markdown_pages_carry_front_matter(doc_paths: list[Path]) -> None:
    with_front_matter = []
    for path in doc_paths:
        if path.suffix != ".md":
            continue
        match = re.match(r"---\n(.*?)\n---\n", path.read_text(encoding="utf-8"), re.DOTALL)
        if match:
            keys = {line.split(":", 1)[0] for line in match.group(1).splitlines()}
            assert {"title", "owner", "updated"} <= keys, path.name
            with_front_matter.append(path.name)
    assert len(with_front_matter) >= 3


def test_html_pages_have_real_structure(doc_paths: list[Path]) -> None:
    pages = [p for p in doc_paths if p.suffix == ".html"]
    for path in pages:
        tags = _parse_html(path).tags
        assert tags["h1"] == 1 and tags["h2"] >= 3 and tags["ul"] >= 1, path.name
    assert any(_parse_html(p).tags["table"] for p in pages)


def test_docx_pages_use_heading_styles_and_a_table(doc_paths: list[Path]) -> None:
    documents = [docx.Document(str(p)) for p in doc_paths if p.suffix == ".docx"]
    for document in documents:
        styles = Counter(par.style.name for par in document.paragraphs)
        assert styles["Heading 1"] == 1 and styles["Heading 2"] >= 3
        assert styles["List Bullet"] + styles["List Number"] >= 3
    assert any(document.tables for document in documents)


def test_pdf_pages_have_a_text_layer_and_one_spans_pages(
    doc_paths: list[Path], texts: dict[str, str]
) -> None:
    pdfs = [p for p in doc_paths if p.suffix == ".pdf"]
    for path in pdfs:
        assert "Brightwater" in texts[path.name]
    assert max(len(pypdf.PdfReader(str(p)).pages) for p in pdfs) >= 2


# --------------------------------------------------------------------------- the Q&A fixture
def test_qa_fixture_shape_and_coverage(qa: dict[str, list[dict[str, object]]]) -> None:
    answerable, unanswerable = qa["answerable"], qa["unanswerable"]
    assert len(answerable) >= 12 and len(unanswerable) >= 6
    for item in answerable:
        assert set(item) == {"question", "source", "key_facts", "topic"}, item
        assert item["key_facts"], item
    for item in unanswerable:
        assert set(item) == {"question", "absent_terms", "topic"}, item
    source_formats = {Path(str(item["source"])).suffix for item in answerable}
    assert {".docx", ".pdf", ".html", ".txt", ".md"} <= source_formats
    questions = [str(item["question"]).lower() for item in answerable + unanswerable]
    assert len(set(questions)) == len(questions), "duplicate questions"


def test_every_source_exists(qa: dict[str, list[dict[str, object]]]) -> None:
    missing = [i["source"] for i in qa["answerable"] if not (DOCS / str(i["source"])).is_file()]
    assert not missing


def test_key_facts_are_in_their_source(
    qa: dict[str, list[dict[str, object]]], texts: dict[str, str]
) -> None:
    absent = [
        (item["source"], fact)
        for item in qa["answerable"]
        for fact in item["key_facts"]  # type: ignore[union-attr]
        if not contains_fact(texts[str(item["source"])], str(fact))
    ]
    assert not absent, f"key facts missing from their source: {absent}"


def test_numeric_key_facts_are_unique_to_their_source(
    qa: dict[str, list[dict[str, object]]], texts: dict[str, str]
) -> None:
    clashes = []
    for item in qa["answerable"]:
        for fact in map(str, item["key_facts"]):  # type: ignore[arg-type]
            if not is_numeric(fact):
                continue
            others = [
                name
                for name, text in texts.items()
                if name != item["source"] and contains_fact(text, fact)
            ]
            if others:
                clashes.append((fact, item["source"], others))
    assert not clashes, f"numeric facts also found elsewhere: {clashes}"


def test_uniqueness_check_is_not_vacuous() -> None:
    # the word-boundary rule above must still catch real clashes
    assert contains_fact("you get 27 days", "27")
    assert contains_fact("rate: 0.30 EUR", "0.30")
    assert not contains_fact("updated 2027-01-01", "27")
    assert not contains_fact("a 270 EUR cap, 27.5 hours, 0.27 EUR", "27")


def test_unanswerable_questions_are_really_not_covered(
    qa: dict[str, list[dict[str, object]]], texts: dict[str, str]
) -> None:
    corpus = "\n".join(texts.values())
    found = [
        term
        for item in qa["unanswerable"]
        for term in map(str, item["absent_terms"])  # type: ignore[arg-type]
        if re.search(r"\b" + re.escape(term) + r"\b", corpus, re.IGNORECASE)
    ]
    assert not found, f"the handbook does mention: {found}"


# --------------------------------------------------------------------------- the generator
def test_generator_reproduces_the_committed_binaries(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.generate(tmp_path / "a")
    names = sorted(p.name for p in written)
    committed = sorted(p.name for p in DOCS.iterdir() if p.suffix in {".docx", ".pdf"})
    assert names == committed, "every DOCX/PDF in sample_docs must come from the generator"
    for path in written:
        assert extract_text(path) == extract_text(DOCS / path.name), path.name


def test_generator_is_byte_deterministic(tmp_path: Path) -> None:
    generator = load_generator()
    first = {p.name: p.read_bytes() for p in generator.generate(tmp_path / "one")}
    second = {p.name: p.read_bytes() for p in generator.generate(tmp_path / "two")}
    assert first == second


def test_generator_rejects_text_a_pdf_core_font_cannot_encode(tmp_path: Path) -> None:
    generator = load_generator()
    bad = generator.SampleDoc(
        filename="bad.pdf",
        title="Bad",
        owner="Nobody",
        blocks=(generator.Heading(1, "Price: 45 \u20ac"),),
    )
    with pytest.raises(ValueError, match="Latin-1"):
        generator.generate(tmp_path, documents=(bad,))
    assert not (tmp_path / "bad.pdf").exists()
