"""Shared helpers of the ingest tests: fixture facts and generators of binary formats.

Kept out of conftest.py (imported by its unique name) so test modules can import them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ingest" / "docs"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# One fact per format: the tests search for it and expect that file's chunk first.
FACTS = {
    "handbook/bicycle.md": ("bicycle allowance per month", "35 euros"),
    "handbook/cafeteria.html": ("when does the cafeteria open", "07:45"),
    "handbook/badges.txt": ("cost of replacing a lost badge", "12 dollars"),
    "handbook/offices.csv": ("reception extension in Oslo", "4720"),
    "handbook/parking.json": ("parking permit fee zone B", "18"),
    "handbook/fire-drill.eml": ("fire drill assembly point", "Delta"),
    "generated/ergonomics.docx": ("ergonomics budget for a standing desk", "400"),
    "generated/laptops.pdf": ("laptop refresh cycle months", "42 months"),
    "generated/townhall.pptx": ("quarterly town hall room", "Orion"),
    "generated/per-diem.xlsx": ("per diem rate for Lisbon", "61"),
}


def make_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Ergonomics at the desk", level=1)
    d.add_paragraph(
        "Every employee may spend an ergonomics budget of 400 euros on a standing desk, "
        "a chair or a monitor arm. Order through the equipment catalogue."
    )
    d.add_heading("Assessments", level=2)
    d.add_paragraph("A workplace assessment is offered to anyone who asks occupational health.")
    table = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("item", "limit"), ("chair", "250"), ("monitor arm", "90")]):
        table.cell(r, 0).text = a
        table.cell(r, 1).text = b
    d.save(str(path))


def make_pdf(path: Path, pages: int = 2) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(
        0,
        8,
        "Laptop refresh\n\nCompany laptops are replaced on a refresh cycle of 42 months. "
        "Return the old laptop to IT within two weeks of receiving the new one.",
    )
    for n in range(1, pages):
        pdf.add_page()
        pdf.multi_cell(
            0, 8, f"Page {n + 1}. Spare chargers are kept at the IT service desk on floor {n + 3}."
        )
    pdf.output(str(path))


def make_pptx(path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Quarterly town hall"
    slide.placeholders[
        1
    ].text = "The quarterly town hall takes place in room Orion on the top floor."
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Questions"
    slide.placeholders[1].text = "Send questions in advance to the communications team."
    prs.save(str(path))


def make_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Per diem"
    ws.append(["city", "per diem rate", "currency"])
    ws.append(["Lisbon", 61, "EUR"])
    ws.append(["Oslo", 95, "EUR"])
    wb.save(str(path))


def make_bad_files(folder: Path) -> dict[str, str]:
    """Files that must fail or be skipped, with the reason prefix each must get."""
    from pypdf import PdfReader, PdfWriter

    folder.mkdir(parents=True, exist_ok=True)
    good_pdf = folder / "_tmp.pdf"
    make_pdf(good_pdf, pages=1)
    writer = PdfWriter(clone_from=PdfReader(str(good_pdf)))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(folder / "locked.pdf", "wb") as fh:
        writer.write(fh)
    good_pdf.unlink()

    from msoffcrypto.format.ooxml import OOXMLFile

    plain = folder / "_tmp.xlsx"
    make_xlsx(plain)
    with open(plain, "rb") as src, open(folder / "locked.xlsx", "wb") as dst:
        OOXMLFile(src).encrypt("secret", dst)
    plain.unlink()

    (folder / "broken.docx").write_bytes(b"this is not a zip archive at all" * 10)
    (folder / "truncated.pptx").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.md").write_text("   \n\n  \n", encoding="utf-8")
    with zipfile.ZipFile(folder / "bundle.zip", "w") as zf:
        zf.writestr("a.txt", "inside a zip")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (folder / "utf16.txt").write_bytes(
        "Visitors sign the guest book at reception.".encode("utf-16")
    )
    return {
        "locked.pdf": "encrypted",
        "locked.xlsx": "encrypted",
        "broken.docx": "corrupt",
        "truncated.pptx": "corrupt",
        "empty.txt": "empty file",
        "blank.md": "no text",
        "bundle.zip": "unsupported file type",
        "picture.png": "unsupported file type",
    }


def settings_for(tmp: Path, **index):
    from lorebot.settings import Settings

    return Settings(data_dir=tmp / "data", index=index or {})
