"""The Confluence connector against a local server speaking its REST API subset: paging,
spaces mapped to collections, page versions, a restricted (unshared) page, a deleted
page, a 429 storm, a broken answer, refused credentials."""

from __future__ import annotations

import base64
import logging

import pytest
from connector_helpers import chunks, settings_with, texts
from fake_confluence import FakeConfluence

from ingest.connectors.base import SourceError
from ingest.connectors.sync import sync_source

TOKEN = "atlassian-api-token-never-logged"


@pytest.fixture
def wiki():
    header = "Basic " + base64.b64encode(f"bot@example.org:{TOKEN}".encode()).decode()
    with FakeConfluence(header) as w:
        w.page("101", "HR", "Annual leave", "<p>Staff get 31 days of annual leave.</p>")
        w.page("102", "HR", "Travel", "<p>Book trains through Trainline Corporate.</p>")
        w.page("103", "HR", "Salaries", "<p>The CEO earns a secret amount.</p>", restricted=True)
        w.page("201", "ENG", "On-call", "<p>The on-call rota changes every Tuesday.</p>")
        w.page("202", "ENG", "Broken", "<p>x</p>")
        w.broken.add("202")
        w.attach("a1", "101", "leave-form.txt", "Use form L-17 to request leave.")
        w.attach("a2", "102", "travel-form.txt", "Claim travel with form T-9.")
        w.attach("a3", "103", "salary-bands.txt", "Band 7 earns a secret amount.")
        yield w


def test_confluence_spaces_versions_restrictions(
    tmp_path, wiki, embedder, parse_pool, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("WIKI_TOKEN", TOKEN)
    settings = settings_with(
        tmp_path,
        wiki={
            "kind": "confluence",
            "url": wiki.base,
            "spaces": ["HR", "ENG"],
            "collection": "general",
            "collections": {"HR": "hr", "ENG": "eng"},
            "username": "bot@example.org",
            "secret_env": "WIKI_TOKEN",
            "backoff_s": 0.01,
            "permissions": "collections",
        },
    )
    wiki.storm = 3
    first = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert first.fetched == 5 and first.built, first.to_dict()  # 3 pages, 2 attachments
    assert [f["id"] for f in first.failures] == ["ENG:202"]
    by_coll = {}
    for c in chunks(settings):
        by_coll.setdefault(c.collection, "")
        by_coll[c.collection] += c.text
    assert "31 days" in by_coll["hr"] and "on-call rota" in by_coll["eng"]
    body = texts(settings)
    assert "L-17" in body and "T-9" in body
    assert "CEO" not in body and "Band 7" not in body  # restricted page and its attachment
    listed = [c for c in wiki.calls if c.startswith("/wiki/rest/api/content?")]
    assert len(listed) >= 3  # HR needed two listing pages (paging followed)

    wiki.calls.clear()
    again = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert again.fetched == 0 and not again.built
    assert all("body.storage" not in c for c in wiki.calls if "/content/202" not in c)
    assert not any("/download/" in c for c in wiki.calls)

    wiki.page("101", "HR", "Annual leave", "<p>Staff get 35 days of annual leave.</p>", version=2)
    wiki.pages["102"]["restricted"] = True  # unshared
    del wiki.pages["201"]  # deleted
    wiki.attach("a1", "101", "leave-form.txt", "Use form L-18 to request leave.", version=2)
    third = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert third.fetched == 2 and third.built
    body = texts(settings)
    assert "L-18" in body and "L-17" not in body and "T-9" not in body
    assert "35 days" in body and "31 days" not in body
    assert "Trainline" not in body and "on-call rota" not in body
    assert caplog.text and TOKEN not in caplog.text
    assert base64.b64encode(f"bot@example.org:{TOKEN}".encode()).decode() not in caplog.text


def test_refused_credentials_stop_the_sync(tmp_path, wiki):
    settings = settings_with(
        tmp_path,
        wiki={
            "kind": "confluence",
            "url": wiki.base,
            "spaces": ["HR"],
            "collection": "hr",
            "secret": "wrong-token",
            "retries": 0,
        },  # fmt: skip
    )
    with pytest.raises(SourceError, match="HTTP 401"):
        sync_source(settings, "wiki")


def test_data_center_personal_access_token_is_a_bearer_token():
    from ingest.connectors.confluence import ConfluenceConnector
    from lorebot.settings import SourceConfig

    class Sink:
        def __init__(self):
            self.put_ids, self.failures = [], []

        def known(self, _):
            return None

        def full(self):
            return False

        def unchanged(self, _):
            pass

        def put(self, doc, data):
            self.put_ids.append(doc.id)

        def failed(self, doc_id, reason, gone=False):
            self.failures.append(doc_id)

    with FakeConfluence("Bearer dc-pat-123") as w:
        w.page("7", "OPS", "Runbook", "<p>Restart the pager with pagerctl.</p>")
        cfg = SourceConfig(kind="confluence", url=w.base, spaces=["OPS"], collection="ops",
                           secret="dc-pat-123", permissions="collections")  # fmt: skip
        sink = Sink()
        ConfluenceConnector("dc", cfg, user_agent="t").sync(sink, {})
    assert sink.put_ids == ["OPS:7"] and not sink.failures


def test_confluence_answer_as_the_asker(tmp_path, wiki, embedder, parse_pool):
    """Asker mode (the default): every page with its viewers (the space's, its own
    restriction, its ancestors'), attachments with their page's, group members paged; a
    restriction added later takes the page from the others' results at the next sync."""
    from connector_helpers import load_state_docs

    from ingest import open_index
    from ingest.permissions import AskerRetriever, Permissions

    wiki.space_viewers = {"HR": ["group:staff", "ext@partner.org"]}
    wiki.groups = {"staff": ["ann@example.org", "bo@example.org", "cy@example.org"]}
    wiki.pages["103"]["restricted"] = ["ann@example.org", "group:payroll"]
    wiki.groups["payroll"] = ["cy@example.org"]
    wiki.page("104", "HR", "Bonus", "<p>The bonus pool code is POOL-5521.</p>", parent="103")
    settings = settings_with(
        tmp_path,
        wiki={
            "kind": "confluence",
            "url": wiki.base,
            "spaces": ["HR"],
            "collection": "hr",
            "username": "bot@example.org",
            "secret": TOKEN,
        },  # fmt: skip
    )
    first = sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert not first.failures, first.to_dict()
    docs = load_state_docs(settings, "wiki")
    space = ["group:staff", "user:ext@partner.org"]
    salary = ["group:payroll", "user:ann@example.org"]
    assert docs["HR:101"]["acl"] == [space]
    assert docs["HR:103"]["acl"] == [space, salary]
    assert docs["HR:104"]["acl"] == [space, salary]  # inherited from its parent
    assert docs["HR:103:a3"]["acl"] == [space, salary]  # the page's attachment

    def hits(email, q):
        with open_index(settings, embedder=embedder) as reader:
            view = AskerRetriever(reader, Permissions(settings).for_index(reader).mask(email))
            return "\n".join(h.chunk.text for h in view.search(q, k=8))

    for who in ("ann@example.org", "cy@example.org"):
        assert "CEO" in hits(who, "CEO salary") and "POOL-5521" in hits(who, "bonus pool code")
        assert "Band 7" in hits(who, "salary bands")
    for who in ("bo@example.org", "ext@partner.org", "zed@example.org"):
        assert "CEO" not in hits(who, "CEO salary"), who
        assert "POOL-5521" not in hits(who, "bonus pool code"), who
        assert "Band 7" not in hits(who, "salary bands"), who
    assert "31 days" in hits("bo@example.org", "annual leave")
    assert "31 days" not in hits("zed@example.org", "annual leave")

    wiki.pages["101"]["restricted"] = ["cy@example.org"]
    sync_source(settings, "wiki", embedder=embedder, pool=parse_pool)
    assert "31 days" not in hits("bo@example.org", "annual leave")
    assert "31 days" in hits("cy@example.org", "annual leave")
