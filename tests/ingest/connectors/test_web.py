"""The web crawler against a real local HTTP server (uvicorn + Starlette): robots.txt,
sitemap, depth and path limits, canonical URLs, a 429 storm, ETag revalidation, a
changed, an unshared (403) and a deleted (404) page, and a broken PDF."""

from __future__ import annotations

import pytest
from connector_helpers import indexed, settings_with, texts

from ingest.connectors.base import SourceError
from ingest.connectors.sync import load_state, source_dir, sync_source


def _page(title: str, body: str, links: str = "", head: str = "") -> str:
    return (
        f"<html><head><title>{title}</title>{head}</head><body><h1>{title}</h1>"
        f"<p>{body}</p>{links}</body></html>"
    )


@pytest.fixture
def site():
    from fake_site import Site as LocalSite

    with LocalSite() as s:
        base = s.base
        s.page(
            "/robots.txt",
            f"User-agent: *\nDisallow: /handbook/private/\nSitemap: {base}/sitemap.xml\n",
            "text/plain",
        )
        s.page(
            "/sitemap.xml",
            f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>{base}/handbook/orphan.html</loc></url></urlset>",
            "application/xml",
        )
        s.page(
            "/handbook/",
            _page(
                "Handbook",
                "Welcome to the staff handbook.",
                '<a href="leave.html">Leave</a> <a href="leave.html?utm=mail#top">Leave again</a>'
                '<a href="travel.html">Travel</a> <a href="private/salaries.html">Pay</a>'
                '<a href="/blog/post.html">Blog</a> <a href="https://elsewhere.example/x">Out</a>'
                '<a href="deep1.html">Deep</a> <a href="flaky.html">Flaky</a>'
                '<a href="broken.pdf">Broken</a> <a href="logo.png">Logo</a>'
                '<a href="away.html">Away</a> <a href="moved.html">Moved</a>',
            ),
        )
        canon = f'<link rel="canonical" href="{base}/handbook/leave.html">'
        s.page(
            "/handbook/leave.html", _page("Leave", "Staff get 31 days of annual leave.", head=canon)
        )
        s.page(
            "/handbook/leave.html?utm=mail",
            _page("Leave", "Staff get 31 days of annual leave.", head=canon),
        )
        s.page("/handbook/travel.html", _page("Travel", "Book trains through Trainline Corporate."))
        s.page("/handbook/private/salaries.html", _page("Pay", "The CEO earns a secret amount."))
        s.page("/blog/post.html", _page("Blog", "Outside the path prefix."))
        s.page(
            "/handbook/orphan.html", _page("Orphan", "Only the sitemap links the parking rules.")
        )
        s.page("/handbook/deep1.html", _page("Deep1", "Level one.", '<a href="deep2.html">2</a>'))
        s.page("/handbook/deep2.html", _page("Deep2", "Level two.", '<a href="deep3.html">3</a>'))
        s.page("/handbook/deep3.html", _page("Deep3", "Level three is too deep."))
        s.page("/handbook/flaky.html", _page("Flaky", "The canteen opens at eight."))
        s.page("/handbook/broken.pdf", "%PDF-1.7 not really a pdf", "application/pdf")
        s.storm["/handbook/flaky.html"] = 3
        # Off the site (another host): not followed. On the site: followed.
        s.redirects["/handbook/away.html"] = f"http://localhost:{s.port}/internal/metadata"
        s.redirects["/handbook/moved.html"] = "/handbook/travel.html"
        yield s


def test_web_crawl_incremental_with_limits(tmp_path, site, embedder, parse_pool):
    settings = settings_with(
        tmp_path,
        wiki={
            "kind": "web",
            "url": site.base + "/handbook/",
            "collection": "handbook",
            "max_depth": 2,
            "backoff_s": 0.01,
        },
    )
    first = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    fetched = set(site.fetched(200))
    assert "/handbook/private/salaries.html" not in fetched  # robots.txt
    assert "/blog/post.html" not in fetched  # outside the path prefix
    assert "/handbook/deep3.html" not in fetched  # deeper than max_depth
    assert "/handbook/orphan.html" in fetched  # from the sitemap
    assert "/logo.png" not in {p for p, _ in site.log}
    assert "/internal/metadata" not in {p for p, _ in site.log}  # off-site redirect refused
    assert site.log.count(("/handbook/flaky.html", 429)) == 3  # the storm, then 200
    state = load_state(settings, "wiki")
    ids = set(state["docs"])
    leave = site.base + "/handbook/leave.html"
    assert leave in ids and not any("utm" in i for i in ids)  # canonical: one document
    assert first.fetched == 8, first.to_dict()
    reasons = {f["id"]: f["reason"] for f in first.failures}
    assert set(reasons) == {site.base + "/handbook/away.html", site.base + "/handbook/broken.pdf"}
    assert reasons[site.base + "/handbook/away.html"].startswith("redirects off the site")
    body = texts(settings)
    assert "31 days" in body and "canteen opens at eight" in body and "CEO" not in body
    copy = source_dir(settings, "wiki") / "docs" / "handbook" / state["docs"][leave]["path"]
    assert copy.read_text().startswith(f'---\nurl: "{leave}"\n---\n')  # the citation link

    # Nothing changed: every page revalidated with a 304, nothing parsed, no new version.
    site.log.clear()
    again = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert again.fetched == 0 and not again.built and again.unchanged == 8
    assert not site.fetched(200) or set(site.fetched(200)) <= {"/robots.txt", "/sitemap.xml"}

    # A change, an unshared page (403) and a deleted page (404).
    canon = f'<link rel="canonical" href="{leave}">'
    site.page(
        "/handbook/leave.html", _page("Leave", "Staff get 35 days of annual leave.", head=canon)
    )
    site.status["/handbook/travel.html"] = 403
    del site.pages["/handbook/orphan.html"]
    third = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert third.built and third.fetched == 1
    reasons = {f["id"]: f["reason"] for f in third.failures}
    assert reasons[site.base + "/handbook/travel.html"].startswith("HTTP 403")
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body
    assert "Trainline" not in body and "parking rules" not in body
    assert not any("travel" in s or "orphan" in s for s in indexed(settings))

    # The start page in a 503 storm (or refusing our credentials): the sync stops and
    # nothing is deleted.
    before = indexed(settings)
    site.status["/handbook/"] = 503
    with pytest.raises(SourceError, match="start page"):
        sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert indexed(settings) == before
    assert (
        source_dir(settings, "wiki") / "docs" / "handbook" / "handbook" / "leave.html"
    ).is_file()
