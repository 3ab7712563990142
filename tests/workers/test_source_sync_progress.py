"""``lorebot.source_sync`` hands its progress callback to the sync (the console's job page
shows the build's stages from the task's PROGRESS state)."""

from __future__ import annotations


def test_sync_impl_passes_on_progress_to_each_sync(tmp_path, monkeypatch):
    from ingest.connectors import sync
    from lorebot.settings import Settings
    from workers.tasks.sources import sync_impl

    seen = []

    def fake_sync(settings, name, *, on_progress=None, **_):
        seen.append((name, on_progress))
        on_progress("embed", 1, 2)
        return sync.SyncReport(source=name, kind="web", message=f"source {name}: ok")

    monkeypatch.setattr(sync, "sync_source", fake_sync)
    stages = []
    result = sync_impl(Settings(data_dir=tmp_path), "wiki", on_progress=lambda *a: stages.append(a))
    assert result["status"] == "ok" and result["sources"][0]["message"] == "source wiki: ok"
    assert [n for n, _ in seen] == ["wiki"] and stages == [("embed", 1, 2)]
