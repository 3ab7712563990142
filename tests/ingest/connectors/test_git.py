"""The Git connector against a local repository: first sync, a commit that changes and
deletes documents, a sync at the same commit that reads nothing, a bad branch."""

from __future__ import annotations

import subprocess

import pytest
from connector_helpers import indexed, settings_with, texts

from ingest.connectors.base import SourceError
from ingest.connectors.sync import load_state, sync_source
from lorebot.errors import IngestError


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            "PATH": "/usr/bin:/bin",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.org",
            "HOME": str(repo),
        },
    )


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "handbook"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "docs").mkdir()
    (r / "docs" / "leave.md").write_text("# Leave\n\nStaff get 31 days of annual leave.\n")
    (r / "docs" / "travel.rst").write_text("Travel\n======\n\nBook trains through Trainline.\n")
    (r / ".github").mkdir()
    (r / ".github" / "CONTRIBUTING.md").write_text("# Contributing\n\nOpen a pull request.\n")
    (r / "setup.py").write_text("print('not a document')\n")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "first")
    return r


def test_git_sync_incremental_by_commit(tmp_path, repo, embedder, parse_pool):
    from ingest import Source, build_index
    from ingest.connectors.sync import remove_source

    settings = settings_with(
        tmp_path, hb={"kind": "git", "url": str(repo), "branch": "main", "collection": "eng"}
    )
    # The only source: removing it would leave an empty index, so it is refused; the
    # mirror it had emptied is fetched whole again by the next sync.
    sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    with pytest.raises(IngestError, match="would leave the index empty"):
        remove_source(settings, "hb", embedder=embedder, pool=parse_pool)
    local = tmp_path / "local"
    local.mkdir()
    (local / "faq.md").write_text("# FAQ\n\nThe office closes at six.\n")
    build_index(settings, [Source(local, "hr")], progress=False, embedder=embedder, pool=parse_pool)
    first = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert first.fetched == 3 and first.built and not first.failures, first.to_dict()
    sources = set(indexed(settings))
    assert {"docs/leave.md", "docs/travel.rst", "_github/CONTRIBUTING.md", "faq.md"} == sources
    commit = load_state(settings, "hb")["cursor"]["commit"]

    same = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert same.fetched == 0 and same.unchanged == 3 and not same.built

    (repo / "docs" / "leave.md").write_text("# Leave\n\nStaff get 35 days of annual leave.\n")
    git(repo, "rm", "-q", "docs/travel.rst")
    git(repo, "commit", "-q", "-am", "change and delete")
    after = sync_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert after.fetched == 1 and after.unchanged == 1 and after.deleted == 1 and after.built
    body = texts(settings)
    assert "35 days" in body and "31 days" not in body and "Trainline" not in body
    assert load_state(settings, "hb")["cursor"]["commit"] != commit

    # Removing the source takes its documents out and leaves the others.
    gone = remove_source(settings, "hb", embedder=embedder, pool=parse_pool)
    assert gone.deleted == 2 and gone.built
    assert set(indexed(settings)) == {"faq.md"}


def test_git_missing_branch_is_a_source_error(tmp_path, repo):
    settings = settings_with(
        tmp_path, hb={"kind": "git", "url": str(repo), "branch": "nope", "collection": "eng"}
    )
    with pytest.raises(SourceError, match="git fetch failed"):
        sync_source(settings, "hb")


def test_git_secret_travels_in_the_environment_not_argv(tmp_path, repo, monkeypatch):
    from ingest.connectors.git import GitConnector
    from lorebot.settings import SourceConfig

    seen = []
    real = subprocess.run

    def spy(cmd, *a, **kw):
        seen.append((list(cmd), dict(kw.get("env") or {})))
        return real(cmd, *a, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    monkeypatch.setenv("HB_GIT_TOKEN", "ghp_tokenvalue123456")
    cfg = SourceConfig(
        kind="git", url=str(repo), collection="eng", username="bot", secret_env="HB_GIT_TOKEN"
    )

    class Sink:
        def known(self, _):
            return None

        def full(self):
            return False

        def put(self, doc, data):
            pass

        def unchanged(self, _):
            pass

        def failed(self, *_a, **_k):
            pass

    GitConnector("hb", cfg, tmp_path / "work").sync(Sink(), {})
    assert seen and all("ghp_tokenvalue123456" not in " ".join(cmd) for cmd, _ in seen)
    assert any(env.get("LOREBOT_GIT_SECRET") == "ghp_tokenvalue123456" for _, env in seen)
