"""Front-matter URLs become citation links only for configured hosts, over https.

Reliability promise (issue 14, item 10): a document cannot turn its citation into a link
to any host it likes: only https URLs on ``index.link_hosts`` (none by default) become the
document's url; anything else (another host, plain http, ``javascript:``) leaves the
citation as title and path. A rendered link always shows its host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_fixtures import settings_for

from bot import render
from ingest import Source, build_index, open_index
from lorebot.types import Citation

DOCS = {
    "allowed.md": ("https://wiki.example.org/leave", "annual leave is 27 days"),
    "subdomain.md": ("https://hr.wiki.example.org/parking", "parking spots are in level B2"),
    "unlisted.md": ("https://evil.example.net/login", "the canteen opens at 11:30"),
    "plain_http.md": ("http://wiki.example.org/bikes", "bikes are stored in the courtyard"),
    "script.md": ("javascript:alert(document.cookie)", "the library closes at 18:00"),
    "lookalike.md": ("https://wiki.example.org.evil.example.net/x", "lockers need a code"),
}
ALLOWED = {"allowed.md": "wiki.example.org", "subdomain.md": "hr.wiki.example.org"}


def write_docs(root: Path) -> None:
    root.mkdir(parents=True)
    for name, (url, fact) in DOCS.items():
        body = f"---\ntitle: {name}\nurl: '{url}'\n---\n# {name}\n\nAt the office {fact}.\n"
        (root / name).write_text(body, encoding="utf-8")


def cite(chunk) -> Citation:
    return Citation(
        n=1,
        chunk_id=chunk.chunk_id,
        title=chunk.title,
        source=chunk.source,
        collection=chunk.collection,
        url=chunk.url,
        score=0.9,
        text=chunk.text,
    )


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embedder, parse_pool):
    tmp = tmp_path_factory.mktemp("links")
    write_docs(tmp / "docs")
    settings = settings_for(tmp, link_hosts=["wiki.example.org", "*.wiki.example.org"])
    build_index(
        settings, [Source(tmp / "docs", "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    with open_index(settings, embedder=embedder) as ix:
        yield {
            name: ix.search(fact, k=1, collections=["hr"])[0].chunk
            for name, (_, fact) in DOCS.items()
        }


@pytest.mark.parametrize("name", sorted(DOCS))
def test_only_configured_https_hosts_become_citation_links(indexed, name):
    chunk = indexed[name]
    text = render.citation_text(cite(chunk))
    url = DOCS[name][0]
    if name in ALLOWED:
        assert chunk.url == url
        assert f"<{url}|{name}>" in text and f"`{ALLOWED[name]}`" in text, text
    else:
        assert chunk.url is None and chunk.source == name, chunk
        assert "<" not in text and url not in text, text


def test_no_link_hosts_by_default(tmp_path, embedder, parse_pool):
    write_docs(tmp_path / "docs")
    settings = settings_for(tmp_path)
    build_index(
        settings,
        [Source(tmp_path / "docs", "hr")],
        progress=False,
        embedder=embedder,
        pool=parse_pool,
    )
    with open_index(settings, embedder=embedder) as ix:
        urls = {r[0] for r in ix.db.execute("SELECT url FROM chunks")}
    assert urls == {None}


@pytest.mark.parametrize(
    "url",
    [
        "http://wiki.example.org/leave",
        "javascript:alert(1)",
        "https://user:pw@wiki.example.org/leave",
        "https:///nohost",
        "https://wiki.example.org/a|<!channel>",
    ],
)
def test_render_never_links_anything_but_a_plain_https_url(url):
    c = Citation(
        n=1,
        chunk_id="c",
        title="Leave",
        source="leave.md",
        collection="hr",
        url=url,
        score=1,
        text="Leave is 27 days.",
    )
    text = render.citation_text(c)
    assert not text.split("\n")[0].count("<") and "`leave.md`" in text, text


def test_render_shows_the_host_of_a_link():
    c = Citation(
        n=1,
        chunk_id="c",
        title="Leave",
        source="leave.md",
        collection="hr",
        url="https://Wiki.Example.org/leave",
        score=1,
        text="Leave is 27 days.",
    )
    head = render.citation_text(c).split("\n")[0]
    assert head.startswith("*[1]* <https://Wiki.Example.org/leave|Leave>")
    assert "`wiki.example.org`" in head
