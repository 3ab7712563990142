"""Elements of one document → token-sized chunks, aware of the document's structure.

Pure functions over plain records, so they are tested without any parser. The rules:

* sections follow the headings; a chunk never spans two sections unless the first is
  too small to stand alone (then the later heading is kept inline in the text);
* sizes are measured in the embedding model's tokens: every chunk's text holds at most
  ``chunk_tokens`` tokens, and consecutive chunks of one section share up to
  ``overlap_tokens`` tokens so a fact cut at a boundary is still found whole;
* tables become chunks of their own, whole when they fit, otherwise split by rows with
  the header row repeated;
* headers, footers, page numbers and paragraphs repeated inside a document are kept
  once; empty chunks are never produced;
* the text that is embedded is prefixed with the title and heading path (the stored
  text, shown to users, is not), because MiniLM retrieves a bare paragraph poorly when
  its subject is only named in the heading above it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from ingest.tokens import TokenCounter, normalise

HEADING_SEP = " > "
# Room left for the title/heading prefix of the embedded text: chunk_tokens (<= 256 by
# settings) + prefix must stay under MiniLM's 256-token window in the common case; the
# prefix is cut to this many tokens.
PREFIX_TOKENS = 40

# Element kinds produced by ingest.parse (a small, parser-independent vocabulary).
TITLE = "title"
TEXT = "text"
LIST = "list"
TABLE = "table"
CODE = "code"
HEADER = "header"
FOOTER = "footer"
PAGE_NUMBER = "page_number"


@dataclass
class Element:
    """One structural piece of a document as the parser saw it."""

    kind: str
    text: str
    depth: int = 0
    page: int | None = None
    html: str | None = None


@dataclass
class DraftChunk:
    """A chunk before it gets ids and file metadata."""

    text: str
    embed_text: str
    heading: str
    page: int | None
    tokens: int
    kind: str = TEXT


@dataclass
class _Atom:
    text: str
    tokens: int
    sep: str  # joins this atom to the one before it


@dataclass
class _Builder:
    path: tuple[str, ...]
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    overlap_tokens: int = 0
    page: int | None = None

    @property
    def content_tokens(self) -> int:
        return self.tokens - self.overlap_tokens

    def text(self) -> str:
        return "".join(self.parts).strip()


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[\"'(\[]?[A-Z0-9])")


def _split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def split_text(
    text: str, limit: int, counter: TokenCounter, known: int | None = None
) -> list[tuple[str, str]]:
    """Split text into (piece, separator) pairs of at most `limit` tokens each.

    Tries line breaks, then sentence ends, then word-boundary windows, so a piece is cut
    at the most natural place that makes it fit. The separator says how the piece joins
    the one before it (a space inside a paragraph, a newline between lines). ``known``
    is the token count of `text` when the caller has it already.
    """
    text = text.strip()
    if not text:
        return []
    if (known if known is not None else counter.count(text)) <= limit:
        return [(text, "")]
    for splitter, sep in ((lambda t: t.split("\n"), "\n"), (_split_sentences, " ")):
        parts = [p.strip() for p in splitter(text) if p.strip()]
        if len(parts) > 1:
            out: list[tuple[str, str]] = []
            for i, part in enumerate(parts):
                sub = split_text(part, limit, counter)
                for j, (piece, inner_sep) in enumerate(sub):
                    out.append((piece, inner_sep if j else (sep if i else "")))
            return out
    windows = (
        counter.windows(text, limit)
        if hasattr(counter, "windows")
        else _windows(text, limit, counter)
    )
    return [(w, " " if i else "") for i, w in enumerate(windows)]


def _windows(text: str, limit: int, counter: TokenCounter) -> list[str]:
    out = []
    rest = text
    while rest:
        piece = counter.head(rest, limit) or rest[: max(1, len(rest) // 2)]
        out.append(piece.strip())
        rest = rest[len(piece) :].strip()
    return [p for p in out if p]


# -- tables -------------------------------------------------------------------------


class _RowParser(HTMLParser):
    """Rows of an HTML table as lists of cell texts (unstructured's text_as_html)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if any(c for c in self._row):
                self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[str]:
    """An HTML table as one ' | '-joined line per row."""
    parser = _RowParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # malformed markup: the caller falls back to the flat text
        return []
    return [" | ".join(row) for row in parser.rows]


def chunk_table(el: Element, limit: int, counter: TokenCounter) -> list[str]:
    """A table as chunk texts: whole when it fits, else row groups under a repeated header."""
    rows = table_rows(el.html) if el.html else []
    if not rows:
        rows = [line for line in el.text.split("\n") if line.strip()]
    if not rows:
        return []
    whole = "\n".join(rows)
    if counter.count(whole) <= limit:
        return [whole]
    header, body = rows[0], rows[1:]
    header_tokens = counter.count(header)
    if not body or header_tokens > limit // 2:  # no usable header: plain row packing
        header, header_tokens, body = "", 0, rows
    room = limit - header_tokens - (1 if header else 0)
    out: list[str] = []
    current: list[str] = []
    used = 0
    for row in body:
        for piece, _sep in split_text(row, room, counter):
            n = counter.count(piece) + 1  # + the newline that joins rows
            if current and used + n > room:
                out.append("\n".join(([header] if header else []) + current))
                current, used = [], 0
            current.append(piece)
            used += n
    if current:
        out.append("\n".join(([header] if header else []) + current))
    return out


# -- boilerplate ------------------------------------------------------------------


def drop_boilerplate(elements: list[Element]) -> list[Element]:
    """Keep headers, footers and repeated paragraphs once; drop page numbers.

    A paragraph counts as repeated when its normalised text occurs again in the same
    document and is either long enough to be a sentence (>= 3 words) or occurs three
    times or more (running heads, "Confidential" lines); short answers such as "Yes"
    that occur twice are kept.
    """
    # Each element's key, computed once (None for titles and tables, which are never dropped).
    keys = [None if el.kind in (TITLE, TABLE) else normalise(el.text) for el in elements]
    counts: dict[str, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    seen: set[str] = set()
    out: list[Element] = []
    for el, key in zip(elements, keys):
        if el.kind == PAGE_NUMBER or not el.text.strip():
            continue
        if key is None:
            out.append(el)
            continue
        if not key:
            continue
        repeated = counts.get(key, 0) > 1 and (len(key.split()) >= 3 or counts[key] >= 3)
        if el.kind in (HEADER, FOOTER) or repeated:
            if key in seen:
                continue
            seen.add(key)
        out.append(el)
    return out


# -- the chunker --------------------------------------------------------------------


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def embed_prefix(title: str, heading: str, counter: TokenCounter) -> str:
    """'Title > Heading path' cut to PREFIX_TOKENS tokens (the embedded text's first line)."""
    label = title.strip()
    if heading:
        label = f"{label}{HEADING_SEP}{heading}" if label else heading
    return counter.head(label, PREFIX_TOKENS) if label else ""


class Chunker:
    """Packs a document's elements into chunks; one instance per document."""

    def __init__(
        self,
        counter: TokenCounter,
        *,
        chunk_tokens: int = 200,
        overlap_tokens: int = 32,
        min_tokens: int | None = None,
    ) -> None:
        if overlap_tokens >= chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        self.counter = counter
        self.size = chunk_tokens
        self.overlap = overlap_tokens
        # A section smaller than this is merged with the next one instead of standing
        # alone as a chunk too small to be retrieved well.
        self.min_tokens = chunk_tokens // 4 if min_tokens is None else min_tokens
        self.out: list[DraftChunk] = []
        self.title = ""
        self._cur: _Builder | None = None
        self._prefixes: dict[str, str] = {}

    # builder plumbing
    def _emit(self, b: _Builder | None) -> None:
        if b is None or b.content_tokens <= 0:
            return
        text = b.text()
        if not normalise(text):
            return
        # WordPiece splits on whitespace first, so pieces joined by whitespace count as
        # the sum of their counts: b.tokens is exact without encoding the chunk again.
        self._add_draft(text, b.path, b.page, TEXT, b.tokens)

    def _add_draft(
        self, text: str, path: tuple[str, ...], page: int | None, kind: str, n: int | None = None
    ) -> None:
        heading = HEADING_SEP.join(path)
        prefix = self._prefixes.get(heading)
        if prefix is None:
            prefix = self._prefixes[heading] = embed_prefix(self.title, heading, self.counter)
        self.out.append(
            DraftChunk(
                text=text,
                embed_text=f"{prefix}\n{text}" if prefix else text,
                heading=heading,
                page=page,
                tokens=self.counter.count(text) if n is None else n,
                kind=kind,
            )
        )

    def _flush(self, *, keep_overlap: bool) -> None:
        b = self._cur
        self._cur = None
        if b is None or b.content_tokens <= 0:
            # only overlap (or nothing) collected: nothing new to say
            self._cur = b if keep_overlap else None
            return
        self._emit(b)
        if keep_overlap and self.overlap:
            tail = self.counter.tail(b.text(), self.overlap)
            n = self.counter.count(tail)
            if tail and n <= self.overlap:
                self._cur = _Builder(b.path, [tail], n, n, b.page)

    def _add_atom(self, atom: _Atom, path: tuple[str, ...], page: int | None) -> None:
        b = self._cur
        if b is not None and b.path != path:
            if b.content_tokens <= 0:
                b = self._cur = None  # leftover overlap of another section: drop it
            elif b.content_tokens >= self.min_tokens:
                self._flush(keep_overlap=False)
                b = None
            else:
                b = self._merge_section(b, path, atom)
        if b is not None and b.tokens + atom.tokens > self.size:
            self._flush(keep_overlap=True)
            b = self._cur
            if b is not None and b.tokens + atom.tokens > self.size:
                b = self._cur = None  # the overlap would not leave room: start clean
        if b is None:
            b = self._cur = _Builder(path, page=page)
        if b.page is None or b.content_tokens <= 0:
            b.page = page if page is not None else b.page
        b.parts.append((atom.sep or "\n\n") + atom.text if b.parts else atom.text)
        b.tokens += atom.tokens

    def _merge_section(self, b: _Builder, path: tuple[str, ...], atom: _Atom) -> _Builder | None:
        """Continue a too-small chunk into the next section, keeping headings as text."""
        common = _common(b.path, path)
        lost = b.path[len(common) :]
        new = path[len(common) :]
        lost_line = HEADING_SEP.join(lost)
        new_line = HEADING_SEP.join(new)
        extra = self.counter.count(lost_line) + self.counter.count(new_line)
        if b.tokens + extra + atom.tokens > self.size:
            self._flush(keep_overlap=False)
            return None
        if lost_line:
            b.parts.insert(0, lost_line + "\n\n")
        b.path = common
        if new_line:
            b.parts.append("\n\n" + new_line)
        b.tokens += extra
        return b

    # public
    def chunk(self, elements: list[Element], title: str = "") -> list[DraftChunk]:
        """All chunks of one document, in document order."""
        self.out, self._cur, self.title, self._prefixes = [], None, title, {}
        atom_limit = self.size - self.overlap
        elements = drop_boilerplate(elements)
        # One batched tokenizer call for every element instead of one call each.
        bodies = [
            ("- " + el.text.strip()) if el.kind == LIST else el.text.strip() for el in elements
        ]
        many = getattr(self.counter, "count_many", None)
        counts = many(bodies) if many else [self.counter.count(b) for b in bodies]
        stack: list[list] = []  # [depth, text, has_content]
        title_key = normalise(title)
        prev_kind = None
        skipped_title: str | None = None
        for el, text, n in zip(elements, bodies, counts):
            if el.kind == TITLE:
                text = " ".join(el.text.split())
                if (
                    not stack
                    and not self.out
                    and self._cur is None
                    and normalise(text) == title_key
                ):
                    skipped_title = text  # the document's own title: already in every prefix
                    continue
                while stack and stack[-1][0] >= el.depth:
                    self._pop_heading(stack, atom_limit)
                stack.append([el.depth, text, False])
                prev_kind = TITLE
                continue
            for entry in stack:
                entry[2] = True
            path = tuple(entry[1] for entry in stack)
            if el.kind == TABLE:
                self._flush(keep_overlap=False)
                for piece in chunk_table(el, self.size, self.counter):
                    self._add_draft(piece, path, el.page, TABLE)
                prev_kind = TABLE
                continue
            first_sep = "\n" if el.kind == LIST and prev_kind == LIST else "\n\n"
            pieces = split_text(text, atom_limit, self.counter, known=n)
            for i, (piece, sep) in enumerate(pieces):
                tokens = n if len(pieces) == 1 else self.counter.count(piece)
                self._add_atom(_Atom(piece, tokens, sep if i else first_sep), path, el.page)
            prev_kind = el.kind
        while stack:
            self._pop_heading(stack, atom_limit)
        self._flush(keep_overlap=False)
        if not self.out and skipped_title:
            # A document that is nothing but its title (a one-line page) still says it.
            for i, (piece, sep) in enumerate(split_text(skipped_title, atom_limit, self.counter)):
                self._add_atom(_Atom(piece, self.counter.count(piece), sep if i else ""), (), None)
            self._flush(keep_overlap=False)
        return self.out

    def _pop_heading(self, stack: list[list], atom_limit: int) -> None:
        """Remove the innermost heading; one that never got content becomes content.

        PDF parsers often mistake short lines for titles; this keeps their text.
        """
        depth, text, had_content = stack.pop()
        if had_content:
            return
        for entry in stack:
            entry[2] = True
        path = tuple(entry[1] for entry in stack)
        for i, (piece, sep) in enumerate(split_text(text, atom_limit, self.counter)):
            self._add_atom(
                _Atom(piece, self.counter.count(piece), sep if i else "\n\n"), path, None
            )


def chunk_elements(
    elements: list[Element],
    counter: TokenCounter,
    *,
    title: str = "",
    chunk_tokens: int = 200,
    overlap_tokens: int = 32,
) -> list[DraftChunk]:
    """Chunk one document's elements (see the module docstring for the rules)."""
    return Chunker(counter, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens).chunk(
        elements, title
    )


def chunk_id(collection: str, path: str, ordinal: int, text: str) -> str:
    """Stable id: the same text at the same place of the same file keeps its id."""
    h = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return hashlib.sha1(f"{collection}\0{path}\0{ordinal}\0{h}".encode()).hexdigest()[:20]
