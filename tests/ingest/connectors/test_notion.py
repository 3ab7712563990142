"""The Notion connector against a local fake of its API: paged search and block children,
nested blocks, an edited page, an archived one and one no longer shared with the
integration, a 429 storm, a refused token."""

from __future__ import annotations

import logging

import pytest
from connector_helpers import settings_with, texts
from fake_notion import FakeNotion, para

from ingest.connectors.base import SourceError
from ingest.connectors.sync import sync_source

TOKEN = "secret_notion_integration_token_1"


@pytest.fixture
def notion():
    with FakeNotion(TOKEN) as n:
        day = "2026-12-01T10:00:00.000Z"
        leave = [
            para("Leave", "heading_1"),
            para("Staff get 31 days of annual leave."),
            para("Details", "toggle", [para("Carry over up to five days.")]),
        ]
        n.page("p1", "Leave", leave, day)
        n.page("p2", "Travel", [para("Book trains through Trainline.")], day)
        n.page("p3", "Canteen", [para("The canteen opens at eight.")], day)
        yield n


def test_notion_pages_by_last_edit(tmp_path, notion, embedder, parse_pool, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NOTION_TOKEN", TOKEN)
    settings = settings_with(
        tmp_path,
        kb={
            "kind": "notion",
            "url": notion.api,
            "secret_env": "NOTION_TOKEN",
            "collection": "handbook",
            "backoff_s": 0.01,
        },  # fmt: skip
    )
    notion.storm = 2
    first = sync_source(settings, "kb", embedder=embedder, pool=parse_pool)
    assert first.fetched == 3 and first.built and not first.failures, first.to_dict()
    body = texts(settings)
    assert "31 days" in body and "five days" in body and "Trainline" in body

    notion.calls.clear()
    same = sync_source(settings, "kb", embedder=embedder, pool=parse_pool)
    assert same.fetched == 0 and same.unchanged == 3 and not same.built
    assert not any("/blocks/" in c for c in notion.calls)

    notion.page(
        "p1", "Leave", [para("Staff get 35 days of annual leave.")], "2026-12-02T09:00:00.000Z"
    )
    notion.pages["p2"]["archived"] = True
    notion.pages["p3"]["shared"] = False  # removed from the integration's connections
    after = sync_source(settings, "kb", embedder=embedder, pool=parse_pool)
    assert after.fetched == 1 and after.deleted == 2 and after.built
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body
    assert "Trainline" not in body and "canteen" not in body
    assert TOKEN not in caplog.text


def test_a_refused_token_stops_the_sync(tmp_path, notion):
    settings = settings_with(
        tmp_path, kb={"kind": "notion", "url": notion.api, "secret": "wrong", "collection": "h"}
    )
    with pytest.raises(SourceError, match="HTTP 401"):
        sync_source(settings, "kb")
