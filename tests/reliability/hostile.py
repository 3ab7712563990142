"""Hostile files, written by the tests themselves (the repository holds no bombs).

Each maker writes one file into a folder and returns its name. Sizes are chosen so a
parser that trusts the file would need gigabytes, while the file itself stays small.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

#: What a bomb would expand to if a parser believed it (bytes).
BOMB_BYTES = 1024**3

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/></Relationships>'
)
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _docx_body(paragraph_xml: str, doctype: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'{doctype}<w:document xmlns:w="{_W}"><w:body>{paragraph_xml}</w:body></w:document>'
    )


def _para(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


def _write_docx(path: Path, document_xml: str, extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", document_xml)
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def write_zip_raw(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A ZIP from members given as (name, raw DEFLATE data, CRC-32, uncompressed size).

    zipfile cannot store data that is already compressed, and compressing a gigabyte
    honestly takes many seconds; the bomb's data is assembled from repeated pieces.
    """
    out = io.BytesIO()
    offsets = []
    for name, raw, crc, size in members:
        offsets.append(out.tell())
        fname = name.encode()
        out.write(
            struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(raw), size, len(fname), 0
            )
        )
        out.write(fname + raw)
    start = out.tell()
    for (name, raw, crc, size), off in zip(members, offsets):
        fname = name.encode()
        out.write(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                0,
                0x21,
                crc,
                len(raw),
                size,
                len(fname),
                0,
                0,
                0,
                0,
                0,
                off,
            )
            + fname
        )
    size_cd = out.tell() - start
    out.write(
        struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), size_cd, start, 0)
    )
    path.write_bytes(out.getvalue())


def _plain_member(name: str, data: bytes) -> tuple[str, bytes, int, int]:
    return name, _deflate(data), zlib.crc32(data), len(data)


def repeated_deflate(
    head: bytes, block: bytes, count: int, tail: bytes
) -> tuple[bytes, int, int, int]:
    """Raw DEFLATE of head + block*count + tail, made in about a second for a gigabyte.

    After a full flush the compressor forgets its window, so every further copy of the
    block compresses to the same bytes: compress it once and repeat the bytes. Returns
    (data, CRC-32, Adler-32, uncompressed size).
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    one = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    last = comp.compress(tail) + comp.flush()
    crc, adler = zlib.crc32(head), zlib.adler32(head)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
        adler = zlib.adler32(block, adler)
    crc, adler = zlib.crc32(tail, crc), zlib.adler32(tail, adler)
    return first + one * count + last, crc, adler, len(head) + len(block) * count + len(tail)


def docx_zip_bomb(folder: Path) -> str:
    """A DOCX whose document.xml inflates to BOMB_BYTES of spaces inside one paragraph."""
    name = "zip-bomb.docx"
    mib = 1 << 20
    head = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{_W}"><w:body><w:p><w:r><w:t>'
    ).encode()
    tail = b"</w:t></w:r></w:p></w:body></w:document>"
    raw, crc, _, size = repeated_deflate(head, b" " * mib, BOMB_BYTES // mib, tail)
    write_zip_raw(
        folder / name,
        [
            _plain_member("[Content_Types].xml", _CONTENT_TYPES.encode()),
            _plain_member("_rels/.rels", _RELS.encode()),
            ("word/document.xml", raw, crc, size),
        ],
    )
    return name


_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


def billion_laughs_html(folder: Path) -> str:
    name = "billion-laughs.html"
    (folder / name).write_text(
        f'<?xml version="1.0"?>{_LAUGHS}<html><head><title>Laughs</title></head>'
        "<body><p>&lol9;</p><p>The fire exit on floor two is behind the kitchen.</p></body></html>",
        encoding="utf-8",
    )
    return name


def billion_laughs_xml(folder: Path) -> str:
    name = "billion-laughs.xml"
    (folder / name).write_text(
        f'<?xml version="1.0"?>{_LAUGHS}<doc><p>&lol9;</p></doc>', encoding="utf-8"
    )
    return name


def billion_laughs_docx(folder: Path) -> str:
    name = "billion-laughs.docx"
    _write_docx(
        folder / name, _docx_body(_para("&lol9;") + _para("Lockers are on floor three."), _LAUGHS)
    )
    return name


def pdf_giant_image(folder: Path) -> str:
    """A one-page PDF with a 40000 x 40000 RGB image: 4.8 GB decoded, 5 MB on disk."""
    name = "giant-image.pdf"
    side = 40000
    mib = 1 << 20
    total = side * side * 3
    raw, _, adler, _ = repeated_deflate(b"", b"\xff" * mib, total // mib, b"\xff" * (total % mib))
    stream = b"\x78\xda" + raw + struct.pack(">I", adler)  # a zlib stream: header, data, Adler-32
    text = (
        b"BT /F1 12 Tf 72 720 Td (Visitors sign in at the north desk.) Tj ET\n"
        b"q 500 0 0 500 50 100 cm /Im1 Do Q\n"
    )
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>"
        ),
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n"
        % (side, side, len(stream))
        + stream
        + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    )
    (folder / name).write_bytes(out.getvalue())
    return name


def zip_traversal(folder: Path) -> str:
    name = "traversal.zip"
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("../../../../tmp/lorebot-escaped-zip.txt", "escaped")
        z.writestr("/etc/lorebot-escaped-abs.txt", "escaped")
    return name


def docx_traversal(folder: Path) -> str:
    """A DOCX (a ZIP) with an extra member whose name climbs out of any extraction folder."""
    name = "traversal.docx"
    _write_docx(
        folder / name,
        _docx_body(_para("Bike racks are behind building C.")),
        {"../../../../tmp/lorebot-escaped-docx.txt": b"escaped"},
    )
    return name


def email_traversal(folder: Path) -> str:
    name = "traversal.eml"
    msg = EmailMessage()
    msg["From"] = "facilities@example.com"
    msg["To"] = "all@example.com"
    msg["Subject"] = "Parking garage closure"
    msg.set_content("The parking garage closes for cleaning on the first Monday of each month.")
    msg.add_attachment(
        b"The escaped attachment text.",
        maintype="text",
        subtype="plain",
        filename="../../../../tmp/lorebot-escaped-eml.txt",
    )
    (folder / name).write_bytes(bytes(msg))
    return name


def zero_byte(folder: Path) -> str:
    name = "zero.pdf"
    (folder / name).write_bytes(b"")
    return name


def random_pdf(folder: Path) -> str:
    name = "random.pdf"
    (folder / name).write_bytes(os.urandom(256 * 1024))
    return name


def nested_html(folder: Path, depth: int = 100_000) -> str:
    name = "nested.html"
    (folder / name).write_text(
        "<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth + "</body></html>",
        encoding="utf-8",
    )
    return name


#: name of the maker → (the file it writes, what must happen: a status and a reason prefix).
#: "ok" means the file was harmless once parsed safely (the payload never expanded).
MAKERS = {
    "docx_zip_bomb": docx_zip_bomb,
    "billion_laughs_html": billion_laughs_html,
    "billion_laughs_xml": billion_laughs_xml,
    "billion_laughs_docx": billion_laughs_docx,
    "pdf_giant_image": pdf_giant_image,
    "zip_traversal": zip_traversal,
    "docx_traversal": docx_traversal,
    "email_traversal": email_traversal,
    "zero_byte": zero_byte,
    "random_pdf": random_pdf,
    "nested_html": nested_html,
}

#: Files that escaped any of these would land here.
ESCAPE_PATHS = [
    Path("/tmp/lorebot-escaped-zip.txt"),
    Path("/etc/lorebot-escaped-abs.txt"),
    Path("/tmp/lorebot-escaped-docx.txt"),
    Path("/tmp/lorebot-escaped-eml.txt"),
]


def write_all(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {key: make(folder) for key, make in MAKERS.items()}
