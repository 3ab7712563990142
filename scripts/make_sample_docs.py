"""Generate the DOCX and PDF pages of lorebot's sample handbook.

The sample handbook (``lorebot/sample_docs``) belongs to Brightwater Instruments,
a fictional maker of water-quality sensors. Most of its pages are Markdown, HTML
or plain text and are edited by hand. Four pages are binary formats, because a
real company's wiki export always contains some Word files and PDFs and the
ingest pipeline must prove it can read them. Binary files cannot be reviewed in
a diff, so their text lives here, as data, and this script renders it:

* DOCX through python-docx, with real ``Heading 1``/``Heading 2`` styles, list
  styles and a table, so that a parser sees document structure, not just text;
* PDF through fpdf2 with a real text layer (core Helvetica font), one of them
  long enough to span several pages.

The output is deterministic: fixed document dates, fixed zip timestamps for
DOCX, a fixed creation date for PDF. Running the script twice with the same
library versions gives byte-identical files, so the committed binaries only
change in git when the text here changes.

Usage::

    python scripts/make_sample_docs.py                 # writes into lorebot/sample_docs
    python scripts/make_sample_docs.py --out /tmp/docs # anywhere else
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "lorebot" / "sample_docs"
COMPANY = "Brightwater Instruments"
# One instant for every date stamped into the files; change it only on purpose.
FIXED_TIME = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
ZIP_TIME = (2025, 1, 6, 9, 0, 0)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Heading:
    """A section heading; level 1 is the document title."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A plain paragraph."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """An unordered list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Numbered:
    """An ordered list (steps of a procedure)."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table with one header row."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Heading | Para | Bullets | Numbered | Table


@dataclass(frozen=True)
class SampleDoc:
    """One handbook page to render; ``filename`` decides the format by suffix."""

    filename: str
    title: str
    owner: str
    blocks: tuple[Block, ...]


# --------------------------------------------------------------------------- text
BENEFITS = SampleDoc(
    filename="benefits.docx",
    title="Benefits: Health Insurance, Pension and More",
    owner="People Team",
    blocks=(
        Heading(1, "Benefits: Health Insurance, Pension and More"),
        Para(
            "Owner: People Team. This page summarises the benefits every permanent "
            "employee of Brightwater Instruments receives, what they cost you and how "
            "to sign up. Interns and contractors have a separate, shorter package."
        ),
        Heading(2, "Health insurance"),
        Para(
            "Our group health plan is provided by Meridian Health. It covers doctor "
            "visits, hospital stays, prescriptions and basic dental care, and it is "
            "available to your partner and children as well."
        ),
        Bullets(
            (
                (
                    "Brightwater pays 80 percent of the premium for you and half of the "
                    "premium for each family member you add."
                ),
                (
                    "Enrol within 30 days of your start date in Harbour under Benefits > "
                    "Health. If you miss that window, you can only join in the November "
                    "enrolment window or after a life event such as a birth or marriage."
                ),
                (
                    "An optional dental top-up and an eye-care top-up are available at "
                    "your own cost, deducted from your salary."
                ),
                (
                    "Your Meridian Health member card arrives by post about two weeks "
                    "after enrolment; the digital card is in the Meridian app straight away."
                ),
            )
        ),
        Heading(2, "Pension"),
        Para(
            "The Brightwater Pension Plan is run by Northgate Pensions. You are "
            "enrolled automatically in your first month and can opt out in Harbour."
        ),
        Bullets(
            (
                (
                    "Core contribution: Brightwater pays 1 percent of your base salary "
                    "into your pension, whether or not you contribute yourself."
                ),
                (
                    "Matching: Brightwater matches your own contributions one to one, up "
                    "to 5.5 percent of your base salary. Contributing less than that "
                    "leaves free money on the table."
                ),
                (
                    "All company contributions belong to you immediately; there is no "
                    "vesting period."
                ),
                (
                    "You can change your contribution rate once a month in Harbour. "
                    "Contributions are taken before income tax (salary sacrifice)."
                ),
            )
        ),
        Heading(2, "Wellbeing and other benefits"),
        Bullets(
            (
                (
                    "Sports allowance: 35 EUR per month towards a gym, swimming pool, "
                    "climbing hall or sports club membership. Upload proof of membership "
                    "once a year; the allowance is paid with your salary."
                ),
                (
                    "Employee Assistance Programme: free, confidential counselling by "
                    "phone or video on personal, financial or legal worries, up to six "
                    "sessions per topic per year. Call 0800 555 3180; nobody at "
                    "Brightwater learns that you called."
                ),
                ("Life insurance worth three times your annual base salary, paid by the company."),
                (
                    "Bike leasing: lease a bicycle or e-bike through salary sacrifice, "
                    "with insurance and servicing included."
                ),
                (
                    "Public transport: the company pays half of a monthly or annual "
                    "season ticket for your commute."
                ),
            )
        ),
        Heading(2, "Overview"),
        Table(
            header=("Benefit", "Company pays", "You pay", "How to join"),
            rows=(
                ("Health insurance (you)", "80 percent", "The rest", "Harbour > Benefits > Health"),
                ("Health insurance (family)", "Half", "Half", "Harbour > Benefits > Health"),
                ("Pension core", "1 percent of base salary", "Nothing", "Automatic"),
                ("Pension matching", "Up to 5.5 percent", "Same as company", "Automatic, opt out"),
                ("Sports allowance", "35 EUR per month", "Nothing", "Upload proof in Harbour"),
                ("Life insurance", "Full premium", "Nothing", "Automatic"),
            ),
        ),
        Heading(2, "Questions"),
        Para(
            "Open a ticket in the PEOPLE-BENEFITS queue or ask in the #ask-people "
            "Slack channel. For questions about a specific medical claim, contact "
            "Meridian Health directly; the People Team cannot see your claims."
        ),
    ),
)

HOLIDAYS = SampleDoc(
    filename="holiday_calendar_2026.docx",
    title="Holiday Calendar 2026",
    owner="People Team",
    blocks=(
        Heading(1, "Holiday Calendar 2026"),
        Para(
            "Owner: People Team. This calendar lists the public holidays and company "
            "days observed at the Aldenport headquarters and the home-country sales "
            "offices in 2026. On these days offices are closed and you do not need to "
            "book leave. Staff at sales offices abroad follow their local public "
            "holidays, which are listed in Harbour under Absence > Calendars."
        ),
        Heading(2, "Dates"),
        Table(
            header=("Date", "Day", "Holiday", "Notes"),
            rows=(
                ("1 January", "Thursday", "New Year's Day", "Public holiday"),
                ("3 April", "Friday", "Good Friday", "Public holiday"),
                ("6 April", "Monday", "Easter Monday", "Public holiday"),
                ("1 May", "Friday", "Labour Day", "Public holiday"),
                ("14 May", "Thursday", "Ascension Day", "Public holiday"),
                ("25 May", "Monday", "Whit Monday", "Public holiday"),
                ("17 September", "Thursday", "Founders' Day", "Company holiday, offices closed"),
                (
                    "3 October",
                    "Saturday",
                    "National Day",
                    "Falls on a Saturday, no replacement day",
                ),
                ("24 December", "Thursday", "Christmas Eve", "Company day, offices closed"),
                ("25 December", "Friday", "Christmas Day", "Public holiday"),
                (
                    "26 December",
                    "Saturday",
                    "Second Christmas Day",
                    "Falls on a Saturday, no replacement day",
                ),
                (
                    "28 to 31 December",
                    "Monday to Thursday",
                    "Year-end closure",
                    "Company days, offices closed",
                ),
            ),
        ),
        Heading(2, "Founders' Day"),
        Para(
            "Founders' Day is our own company holiday. It marks the day the first "
            "Brightwater sensor was shipped to a customer. The whole company has the "
            "day off; teams that must keep production or customer support running "
            "receive a replacement day of their choice."
        ),
        Heading(2, "Rules"),
        Bullets(
            (
                (
                    "Company days and the year-end closure are paid days off. They are "
                    "not deducted from your annual leave."
                ),
                "Holidays that fall on a weekend are not moved to a working day.",
                (
                    "If you work part-time and a holiday falls on a day you do not "
                    "normally work, you do not receive an extra day off."
                ),
                (
                    "If your manager asks you to work on a public holiday, for example "
                    "for on-call duty or a production run, you receive a replacement day "
                    "and the holiday supplement described in the payroll rules."
                ),
            )
        ),
        Heading(2, "Swapping a holiday"),
        Para(
            "We know that the public calendar does not reflect every faith or "
            "culture. You may swap up to two of the public holidays above for other "
            "days that matter to you, such as Eid, Diwali, Yom Kippur or Lunar New "
            "Year."
        ),
        Numbered(
            (
                "Choose the holidays you want to work and the days you want off instead.",
                "Request the swap in the PEOPLE-LEAVE queue by the end of January.",
                "Your manager confirms, and the People Team updates your calendar in Harbour.",
            )
        ),
    ),
)

EQUIPMENT = SampleDoc(
    filename="equipment_and_laptops.pdf",
    title="Equipment and Laptops",
    owner="IT Operations",
    blocks=(
        Heading(1, "Equipment and Laptops"),
        Para(
            "Owner: IT Operations. This page explains which equipment you receive, how "
            "to order more, how long devices last and what to do when something breaks "
            "or goes missing. All equipment remains the property of Brightwater "
            "Instruments unless you buy it as described at the end."
        ),
        Heading(2, "Standard equipment"),
        Para("Every employee receives the following on their first day:"),
        Bullets(
            (
                (
                    "A laptop: a lightweight business model for most roles, or a "
                    "high-memory workstation laptop for software, data and firmware "
                    "engineers."
                ),
                (
                    "One external monitor, a keyboard, a mouse and a laptop stand for the "
                    "office desk."
                ),
                "A noise-cancelling headset for calls.",
                "A backpack with a padded laptop compartment.",
            )
        ),
        Para(
            "Hybrid workers may order a second monitor, keyboard and mouse for home. "
            "These are delivered to your home address."
        ),
        Heading(2, "Ordering equipment"),
        Numbered(
            (
                ("Open a ticket in the EQUIP-REQ queue and choose the item from the catalogue."),
                ("Standard items are approved automatically and ship within five working days."),
                (
                    "Non-standard items, such as a larger screen or a special keyboard, "
                    "need your manager's approval and a short justification. Items needed "
                    "for health reasons are always approved with a note from occupational "
                    "health."
                ),
                (
                    "Collect your items at the IT service point on the third floor or have "
                    "them sent to you."
                ),
            )
        ),
        Heading(2, "How long devices last"),
        Bullets(
            (
                (
                    "Laptops are replaced every 48 months. IT contacts you about a "
                    "replacement about a month before your laptop reaches that age."
                ),
                "Company phones are replaced every three years.",
                (
                    "A device that breaks earlier is repaired or replaced straight away if "
                    "a repair is not economical. You do not need to wait for the refresh "
                    "date."
                ),
            )
        ),
        Heading(2, "Looking after your equipment"),
        Bullets(
            (
                "Never leave a laptop visible in a car, not even for a few minutes.",
                "Carry the laptop in your hand luggage when flying.",
                (
                    "Full-disk encryption is switched on for every laptop. Do not try to "
                    "turn it off."
                ),
                (
                    "Install operating system updates within seven days of being "
                    "prompted. After that, the laptop restarts on its own at night."
                ),
                (
                    "Install software only from App Shelf, the self-service software "
                    "catalogue. If something you need is missing, request it through the "
                    "EQUIP-REQ queue."
                ),
            )
        ),
        Heading(2, "Lost, stolen or damaged equipment"),
        Bullets(
            (
                (
                    "Loss or theft of any device is a security incident. Report it "
                    "immediately using the security hotline described on the Security "
                    "Incident Reporting page, so the device can be locked and wiped "
                    "remotely."
                ),
                (
                    "Report a theft to the police as well, and add the police reference "
                    "number to an EQUIP-REQ ticket so that IT can order a replacement."
                ),
                (
                    "Accidental damage is not charged to you. Bring the device to the IT "
                    "service point; you get a loan laptop while yours is repaired."
                ),
            )
        ),
        Heading(2, "Personal use"),
        Para(
            "Reasonable personal use of your laptop and phone is allowed: reading the "
            "news at lunch, online banking, a private video call. Do not use company "
            "devices for side businesses, and never let family members or friends use "
            "them. IT does not back up private files."
        ),
        Heading(2, "Company phones"),
        Para(
            "Field engineers, sales staff and everyone on an on-call rota receive a "
            "company phone with a data plan. Other employees can use their own phone "
            "for the authenticator app and Slack; this is voluntary, and IT never "
            "manages or reads a private phone."
        ),
        Heading(2, "When you leave"),
        Bullets(
            (
                ("Return all equipment on your last working day at the IT service point."),
                (
                    "Remote employees receive a prepaid courier box. Send everything "
                    "back within seven days of your last day."
                ),
                (
                    "The value of equipment that is not returned may be deducted from "
                    "your final salary."
                ),
            )
        ),
        Heading(2, "Buying your old laptop"),
        Para(
            "When your laptop is replaced at the end of its refresh cycle, you may "
            "buy the old one for a flat price of 99 EUR. IT wipes the device securely "
            "and reinstalls a clean operating system before handing it over. Laptops "
            "that held customer production data, or that were replaced because of a "
            "fault, cannot be sold. Ask for a purchase in your refresh ticket."
        ),
    ),
)

CONDUCT = SampleDoc(
    filename="code_of_conduct.pdf",
    title="Code of Conduct",
    owner="Legal and Compliance",
    blocks=(
        Heading(1, "Code of Conduct"),
        Para(
            "Owner: Legal and Compliance. Our customers rely on Brightwater "
            "Instruments to tell them whether their water is safe. That trust depends "
            "on how each of us behaves. This code applies to every employee, "
            "contractor and member of the leadership team, in the office, at customer "
            "sites and online."
        ),
        Heading(2, "Respect at work"),
        Bullets(
            (
                (
                    "Treat everyone with respect, whatever their role, background, gender, "
                    "age, religion, disability or sexual orientation."
                ),
                (
                    "Harassment, bullying and discrimination are never acceptable, "
                    "including jokes and messages in chat."
                ),
                "Disagree openly about ideas, never about people.",
                (
                    "Managers must act on any concern raised with them and may not ignore "
                    "it because it seems minor."
                ),
            )
        ),
        Heading(2, "Gifts and hospitality"),
        Para(
            "Gifts can create a feeling of obligation, even when nobody intends it. "
            "The rules are therefore simple and strict."
        ),
        Bullets(
            (
                (
                    "You may accept gifts with a total value of up to 75 EUR per giver per "
                    "calendar year, for example a bottle of wine or a book."
                ),
                (
                    "Anything above that limit must be declined politely or, if refusing "
                    "would cause offence, registered in the gift register at "
                    "intranet.brightwater.example/compliance/gifts and handed to Legal."
                ),
                "Never accept cash, vouchers or anything that can be turned into cash.",
                (
                    "During a tender or a contract negotiation, accept no gifts or "
                    "hospitality at all from the companies involved."
                ),
                "The same limits apply to gifts we give to customers.",
            )
        ),
        Heading(2, "Conflicts of interest"),
        Para(
            "A conflict of interest exists when your private interests could influence, "
            "or appear to influence, your decisions at work. Examples are a relative who "
            "works for a supplier you choose, shares in a competitor, or a side job in "
            "the same industry."
        ),
        Bullets(
            (
                (
                    "Declare any possible conflict within 30 days of becoming aware of it, "
                    "using the declaration form in the compliance portal."
                ),
                (
                    "Side jobs need written approval from your manager and Legal before you "
                    "start them."
                ),
                "A declared conflict is rarely a problem; a hidden one always is.",
            )
        ),
        Heading(2, "Anti-bribery and fair competition"),
        Bullets(
            (
                "We do not offer, pay or accept bribes, directly or through agents.",
                (
                    "Facilitation payments, small payments to speed up routine official "
                    "actions, are forbidden, even where they are common practice."
                ),
                (
                    "Never discuss prices, bids, customers or market shares with "
                    "competitors, including at trade fairs and industry associations."
                ),
                "Record every payment accurately; no off-the-books accounts.",
            )
        ),
        Heading(2, "Confidential information and social media"),
        Bullets(
            (
                (
                    "Customer measurement data, product plans and financial results are "
                    "confidential. Share them only with people who need them for their work."
                ),
                (
                    "You may say where you work on social media. Do not post about "
                    "customers, unreleased products or internal incidents."
                ),
                (
                    "Only the communications team speaks to journalists on behalf of the "
                    "company. Forward press enquiries to them."
                ),
            )
        ),
        Heading(2, "Data and measurement integrity"),
        Para(
            "Calibration certificates and test reports must reflect what was actually "
            "measured. Never adjust, omit or back-date results, even under time "
            "pressure from a customer. If you are asked to do so, speak up."
        ),
        Heading(2, "Speaking up"),
        Para("If you see or suspect a breach of this code, you have several options:"),
        Numbered(
            (
                "Talk to your manager or to their manager.",
                "Contact Legal and Compliance directly.",
                (
                    "Call the ethics line on extension 6161. It is answered by an "
                    "independent provider, and you do not have to give your name."
                ),
                (
                    "Use the anonymous speak-up form at "
                    "intranet.brightwater.example/compliance/speak-up."
                ),
            )
        ),
        Para(
            "Every report is investigated confidentially. Retaliation against anyone "
            "who raises a concern in good faith is itself a serious breach of this code "
            "and leads to disciplinary action."
        ),
        Heading(2, "Consequences"),
        Para(
            "Breaches of this code can lead to disciplinary action up to and including "
            "dismissal, and in some cases to criminal prosecution. If you are unsure "
            "whether something is allowed, ask before you act: Legal and Compliance "
            "would much rather answer a question than investigate a breach."
        ),
    ),
)

DOCUMENTS: tuple[SampleDoc, ...] = (BENEFITS, HOLIDAYS, EQUIPMENT, CONDUCT)


# --------------------------------------------------------------------------- DOCX
def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps: python-docx stamps the current time."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(item.filename))
    return out.getvalue()


def write_docx(doc: SampleDoc, path: Path) -> Path:
    """Render ``doc`` as a Word file with real heading, list and table styles."""
    import docx  # python-docx; imported here so --help works without it

    document = docx.Document()
    props = document.core_properties
    props.title = doc.title
    props.author = f"{COMPANY} {doc.owner}"
    props.last_modified_by = props.author
    props.created = FIXED_TIME.replace(tzinfo=None)
    props.modified = FIXED_TIME.replace(tzinfo=None)
    props.revision = 1
    props.comments = "Fictional sample document for lorebot."

    for block in doc.blocks:
        if isinstance(block, Heading):
            # level 0 would be the "Title" style; the page title is Heading 1 so
            # that every page has the same outline shape as the other formats
            document.add_heading(block.text, level=block.level)
        elif isinstance(block, Para):
            document.add_paragraph(block.text)
        elif isinstance(block, Bullets):
            for item in block.items:
                document.add_paragraph(item, style="List Bullet")
        elif isinstance(block, Numbered):
            for item in block.items:
                document.add_paragraph(item, style="List Number")
        elif isinstance(block, Table):
            table = document.add_table(rows=1, cols=len(block.header))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, block.header):
                cell.text = ""
                cell.paragraphs[0].add_run(text).bold = True
            for row in block.rows:
                cells = table.add_row().cells
                for cell, text in zip(cells, row):
                    cell.text = text
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {block!r}")

    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(_normalise_zip(buffer.getvalue()))
    return path


# --------------------------------------------------------------------------- PDF
def _pdf_class():  # type: ignore[no-untyped-def]
    """Build the FPDF subclass lazily, so importing this module needs no fpdf2."""
    from fpdf import FPDF

    class HandbookPDF(FPDF):
        """A4 page with a running footer naming the company and the page."""

        page_title = ""

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", "I", 8)
            self.set_text_color(110, 110, 110)
            self.cell(
                0,
                10,
                f"{COMPANY} - {self.page_title} - page {self.page_no()} of {{nb}}",
                align="C",
            )
            self.set_text_color(0, 0, 0)

    return HandbookPDF


def _check_latin1(doc: SampleDoc) -> None:
    """Core PDF fonts only encode Latin-1; fail early with the offending text."""
    for block in doc.blocks:
        parts: tuple[str, ...]
        if isinstance(block, (Heading, Para)):
            parts = (block.text,)
        elif isinstance(block, (Bullets, Numbered)):
            parts = block.items
        else:
            parts = block.header + tuple(c for row in block.rows for c in row)
        for text in parts:
            try:
                text.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{doc.filename}: non Latin-1 text in {text!r}") from exc


def write_pdf(doc: SampleDoc, path: Path) -> Path:
    """Render ``doc`` as a PDF with a selectable text layer."""
    from fpdf.enums import XPos, YPos

    _check_latin1(doc)
    pdf = _pdf_class()(format="A4")
    pdf.page_title = doc.title
    pdf.set_title(doc.title)
    pdf.set_author(f"{COMPANY} {doc.owner}")
    pdf.set_creator("lorebot scripts/make_sample_docs.py")
    pdf.set_creation_date(FIXED_TIME)
    pdf.set_margins(22, 20, 22)
    pdf.set_auto_page_break(auto=True, margin=22)
    pdf.add_page()

    line = 6.0
    for block in doc.blocks:
        if isinstance(block, Heading):
            size = 18 if block.level == 1 else 13
            pdf.ln(2 if block.level == 1 else 4)
            pdf.set_font("Helvetica", "B", size)
            pdf.multi_cell(0, size * 0.5, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2)
        elif isinstance(block, Para):
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(0, line, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2)
        elif isinstance(block, (Bullets, Numbered)):
            pdf.set_font("Helvetica", "", 11)
            for number, item in enumerate(block.items, start=1):
                marker = "-" if isinstance(block, Bullets) else f"{number}."
                pdf.set_x(pdf.l_margin + 3)
                pdf.cell(7, line, marker)
                pdf.multi_cell(0, line, item, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(1)
            pdf.ln(1)
        elif isinstance(block, Table):
            pdf.set_font("Helvetica", "", 10)
            with pdf.table(line_height=line) as table:
                for row in (block.header, *block.rows):
                    pdf_row = table.row()
                    for text in row:
                        pdf_row.cell(text)
            pdf.ln(3)
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {block!r}")

    pdf.output(str(path))
    logger.debug("%s has %d pages", path.name, pdf.pages_count)
    return path


# --------------------------------------------------------------------------- entry
def generate(out_dir: Path, documents: tuple[SampleDoc, ...] = DOCUMENTS) -> list[Path]:
    """Write every binary sample page into ``out_dir`` and return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for doc in documents:
        target = out_dir / doc.filename
        if target.suffix == ".docx":
            written.append(write_docx(doc, target))
        elif target.suffix == ".pdf":
            written.append(write_pdf(doc, target))
        else:
            raise ValueError(f"{doc.filename}: only .docx and .pdf are generated")
        logger.info("wrote %s (%d bytes)", target, target.stat().st_size)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python scripts/make_sample_docs.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory to write into (default: lorebot/sample_docs)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        paths = generate(args.out)
    except ImportError as exc:
        print(
            f"error: {exc}. fix: pip install -e '.[dev]' (python-docx and fpdf2)",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {len(paths)} documents to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
