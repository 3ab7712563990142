"""Helpers of the connector tests: settings with sources, and reading back the index."""

from __future__ import annotations

from pathlib import Path

from lorebot.settings import Settings


def settings_with(tmp: Path, **sources) -> Settings:
    """Settings whose data dir is under ``tmp``, with ``sources.defined`` = ``sources``."""
    return Settings(data_dir=tmp / "data", sources={"defined": sources})


def indexed(settings: Settings) -> dict[str, dict]:
    """The serving version's ok files: source path -> manifest entry (with collection)."""
    from ingest import store

    version = store.current_version(settings)
    if version is None:
        return {}
    manifest = store.read_manifest(store.version_path(settings, version))
    return {v["source"]: v for v in manifest["files"].values() if v["status"] == "ok"}


def chunks(settings: Settings) -> list:
    """Every chunk of the serving version (lorebot.types.Chunk)."""
    from ingest import open_index

    with open_index(settings) as index:
        return list(index.iter_chunks())


def texts(settings: Settings) -> str:
    """Every chunk's text in the serving version, joined (to look for a fact)."""
    return "\n".join(c.text for c in chunks(settings))


def load_state_docs(settings: Settings, name: str) -> dict[str, dict]:
    """The documents a source's last sync recorded (id -> version, path, acl...)."""
    from ingest.connectors.sync import load_state

    return load_state(settings, name).get("docs") or {}
