"""The SharePoint/OneDrive connector against a local Microsoft Graph fake: first walk,
delta syncs that fetch only what changed, a deleted file, an expired delta token, a
429 storm, refused credentials, and the token never sent to the download host."""

from __future__ import annotations

import logging

import pytest
from connector_helpers import indexed, settings_with, texts
from fake_graph import FakeGraph

from ingest.connectors.base import SourceError
from ingest.connectors.sync import load_state, sync_source

SECRET = "entra-client-secret-never-logged"


@pytest.fixture
def graph():
    with FakeGraph(SECRET) as g:
        g.put("A1", "Policies", "leave.md", "# Leave\n\nStaff get 31 days of annual leave.\n")
        g.put("A2", "Policies", "travel.md", "# Travel\n\nBook trains through Trainline.\n")
        g.put("A3", "Eng", "oncall.md", "# On-call\n\nThe rota changes every Tuesday.\n")
        yield g


def _settings(tmp_path, graph, secret=SECRET):
    return settings_with(
        tmp_path,
        sp={
            "kind": "sharepoint",
            "url": graph.graph,
            "token_url": graph.root + "/tenant-1/oauth2/v2.0/token",
            "drive": "b!drive1",
            "username": "client-id-1",
            "secret": secret,
            "collection": "hr",
            "collections": {"Eng/": "eng"},
            "backoff_s": 0.01,
            "retries": 3,
        },
    )


def test_sharepoint_delta_sync(tmp_path, graph, embedder, parse_pool, caplog):
    caplog.set_level(logging.DEBUG)
    settings = _settings(tmp_path, graph)
    graph.storm = 2
    first = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert first.fetched == 3 and first.built and not first.failures, first.to_dict()
    assert {v["collection"] for v in indexed(settings).values()} == {"hr", "eng"}
    assert "token=" in load_state(settings, "sp")["cursor"]["delta_link"]
    downloads = [auth for path, auth in graph.calls if path.startswith("/download/")]
    assert len(downloads) == 3 and downloads == [None, None, None]  # no token off-host

    graph.calls.clear()
    same = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert same.fetched == 0 and same.unchanged == 3 and not same.built
    assert not any("/content" in p for p, _ in graph.calls)

    graph.put("A1", "Policies", "leave.md", "# Leave\n\nStaff get 35 days of annual leave.\n")
    graph.delete("A2")
    graph.calls.clear()
    after = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert after.fetched == 1 and after.deleted == 1 and after.unchanged == 1 and after.built
    assert sum("/content" in p for p, _ in graph.calls) == 1
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body and "Trainline" not in body

    # An expired delta token: a whole walk again, nothing lost, nothing fetched twice.
    graph.expired = True
    graph.events.clear()  # the fake's fresh delta link after the walk counts from here
    walked = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert walked.fetched == 0 and walked.unchanged == 2 and walked.deleted == 0
    assert SECRET not in caplog.text and "graph-access-token-1" not in caplog.text


def test_refused_client_secret_stops_the_sync(tmp_path, graph):
    with pytest.raises(SourceError, match="token endpoint refused"):
        sync_source(_settings(tmp_path, graph, secret="wrong"), "sp")


def test_sharepoint_viewers_groups_and_unsharing(tmp_path, graph, embedder, parse_pool):
    """Answer as the asker: each item's permissions (paged: users, groups, links), group
    members from transitiveMembers, and a sharing change that the delta reports (Prefer:
    deltashowsharingchanges) without new content: no download, the viewers change."""
    from ingest import open_index
    from ingest.permissions import AskerRetriever, Permissions

    graph.put("B1", "Board", "minutes.md", "# Minutes\n\nThe merger codename is HERON-88.\n",
              perms=[{"roles": ["read"], "grantedToV2": {"user": {"email": "Ann@contoso.com"}}},
                     {"roles": ["write"], "grantedToV2": {"group": {"id": "g-board"}}},
                     {"roles": ["read"], "link": {"scope": "organization"}}])  # fmt: skip
    graph.groups["g-board"] = ["bo@contoso.com"]
    settings = _settings(tmp_path, graph)
    first = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert not first.failures, first.to_dict()
    assert load_state(settings, "sp")["docs"]["B1"]["acl"] == [
        ["group:g-board", "user:ann@contoso.com"]
    ]

    def hits(email: str) -> str:
        with open_index(settings, embedder=embedder) as reader:
            view = AskerRetriever(reader, Permissions(settings).for_index(reader).mask(email))
            return "\n".join(h.chunk.text for h in view.search("merger codename", k=8))

    assert "HERON-88" in hits("ann@contoso.com") and "HERON-88" in hits("bo@contoso.com")
    assert "HERON-88" not in hits("cy@contoso.com")  # an organisation link grants nothing

    graph.share("B1", [{"roles": ["read"], "grantedToV2": {"user": {"email": "ann@contoso.com"}}}])
    graph.calls.clear()
    after = sync_source(settings, "sp", embedder=embedder, pool=parse_pool)
    assert after.fetched == 0 and not after.failures, after.to_dict()
    assert not any("/content" in p for p, _ in graph.calls)
    assert "HERON-88" in hits("ann@contoso.com") and "HERON-88" not in hits("bo@contoso.com")
