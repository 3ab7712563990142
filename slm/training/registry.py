"""The adapter registry: every LoRA candidate the nightly refresh made, and which one serves.

Layout under ``settings.adapters_dir``::

    versions/<version>/adapter.gguf   what llama.cpp loads
    versions/<version>/config.json    LoraConfig + base model file name + sha256
    versions/<version>/card.json      status (candidate|promoted|rejected|retired), reason,
                                      metrics, created, durations
    CURRENT                           the promoted version; absent = the base model
    history.jsonl                     one line per promote / rollback / reject
    tmp/                              versions being written (a killed run leaves litter
                                      here; the next run removes it; never read)
    scopes/<key>/                     the same layout once per access scope, when
                                      ``training.adapter_scopes=per_scope`` (see
                                      slm.training.scopes); the root is the intersection
                                      adapter's (and the only one fleet sync publishes)

The same shape as the index (``ingest.store``): a version is complete before it is renamed
into ``versions/``, and ``CURRENT`` is replaced atomically and last, so a worker reading it
between two tasks sees the old adapter or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorebot.errors import LorebotError
from lorebot.files import atomic_write_text
from lorebot.files import fsync_dir as _fsync_dir
from lorebot.settings import Settings
from lorebot.versioned import VersionedDir, read_pointer, valid_name, write_pointer

log = logging.getLogger(__name__)

HISTORY = "history.jsonl"
ADAPTER_FILE = "adapter.gguf"
CONFIG_FILE = "config.json"
CARD_FILE = "card.json"
STATUSES = ("candidate", "promoted", "rejected", "retired")


class RegistryError(LorebotError):
    """An adapter version is missing, incomplete, or the requested change is impossible."""


SCOPES_DIR = "scopes"


@dataclass(frozen=True)
class AdapterRef:
    """The adapter a worker should load, and the collections it was trained on (None =
    its card does not say: it then serves only questions that may search everything)."""

    version: str
    path: Path
    collections: tuple[str, ...] | None = None
    scope: str | None = None


# -- paths --------------------------------------------------------------------------------


def root(settings: Settings, scope: str | None = None) -> Path:
    """The registry of ``scope`` (None = the root registry)."""
    if scope is None:
        return settings.adapters_dir
    if not valid_name(scope):
        raise RegistryError(f"bad adapter scope {scope!r}", fix="see `lorebot adapters list`")
    return settings.adapters_dir / SCOPES_DIR / scope


def scopes(settings: Settings) -> list[str]:
    """The per-scope registries on disk (not the root one)."""
    base = settings.adapters_dir / SCOPES_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and valid_name(p.name))


def versions_dir(settings: Settings, scope: str | None = None) -> Path:
    return VersionedDir(root(settings, scope)).versions_dir


def tmp_dir(settings: Settings, scope: str | None = None) -> Path:
    return VersionedDir(root(settings, scope)).tmp_dir


def version_dir(settings: Settings, version: str, scope: str | None = None) -> Path:
    if not valid_name(version):
        raise RegistryError(
            f"bad adapter version {version!r}", fix="use a name from `lorebot adapters list`"
        )
    return versions_dir(settings, scope) / version


def history_path(settings: Settings, scope: str | None = None) -> Path:
    return root(settings, scope) / HISTORY


def new_version_id(now: float | None = None) -> str:
    """``aYYYYMMDD-HHMMSS-xxxx``: sorts by creation time, unique across hosts."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"a{stamp}-{secrets.token_hex(2)}"


# -- atomic files --------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")


def _append_history(settings: Settings, event: dict[str, Any], scope: str | None = None) -> None:
    path = history_path(settings, scope)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **event}, ensure_ascii=False, default=str
    )
    # One short O_APPEND write per event: a crash leaves at most one torn last line,
    # which read_history() skips.
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(settings: Settings, scope: str | None = None) -> list[dict[str, Any]]:
    path = history_path(settings, scope)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# -- reading ----------------------------------------------------------------------------------


def current_version(settings: Settings, scope: str | None = None) -> str | None:
    return read_pointer(root(settings, scope))


def is_complete(settings: Settings, version: str, scope: str | None = None) -> bool:
    vdir = version_dir(settings, version, scope)
    return (vdir / ADAPTER_FILE).is_file() and (vdir / CARD_FILE).is_file()


def current_adapter(settings: Settings, scope: str | None = None) -> AdapterRef | None:
    """The promoted adapter of a registry, or None for the base model.

    Workers call this before every task. A pointer naming a missing version (deleted by
    hand, or a partial copy) falls back to the base model with a warning rather than
    failing every question.
    """
    version = current_version(settings, scope)
    if version is None:
        return None
    path = versions_dir(settings, scope) / version / ADAPTER_FILE
    if not path.is_file():
        log.warning(
            "adapter CURRENT names %s but %s is missing: serving the base model", version, path
        )
        return None
    try:
        trained_on = read_card(settings, version, scope).get("collections")
    except RegistryError:
        trained_on = None
    collections = tuple(sorted(trained_on)) if isinstance(trained_on, list) else None
    return AdapterRef(version=version, path=path, collections=collections, scope=scope)


def serving_adapters(settings: Settings) -> list[AdapterRef]:
    """The promoted adapter of every registry (root first): what workers choose from."""
    found = [current_adapter(settings)] + [current_adapter(settings, s) for s in scopes(settings)]
    return [ref for ref in found if ref is not None]


def read_card(settings: Settings, version: str, scope: str | None = None) -> dict[str, Any]:
    path = version_dir(settings, version, scope) / CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(
            f"adapter version {version} does not exist", fix="see `lorebot adapters list`"
        ) from None
    except ValueError:
        raise RegistryError(
            f"adapter version {version} has a damaged card.json",
            fix="delete it or run the refresh again",
        ) from None


def list_adapters(settings: Settings, scope: str | None = None) -> list[dict[str, Any]]:
    """Every complete version's card (oldest first), with ``current`` and ``scope`` marked
    (``scope`` None = the root registry)."""
    vroot = versions_dir(settings, scope)
    if not vroot.is_dir():
        return []
    current = current_version(settings, scope)
    cards = []
    for vdir in sorted(p for p in vroot.iterdir() if p.is_dir()):
        if not is_complete(settings, vdir.name, scope):
            continue
        try:
            card = read_card(settings, vdir.name, scope)
        except RegistryError:
            continue
        card["version"] = vdir.name
        card["current"] = vdir.name == current
        card["scope"] = scope
        cards.append(card)
    # Names sort by second only; two candidates made in the same second keep their order.
    return sorted(cards, key=lambda c: (c.get("created_ns", 0), c["version"]))


# -- writing ----------------------------------------------------------------------------------


def list_all(settings: Settings) -> list[dict[str, Any]]:
    """:func:`list_adapters` of the root registry, then of every scope's."""
    out = list_adapters(settings)
    for scope in scopes(settings):
        out += list_adapters(settings, scope)
    return out


def clean_tmp(settings: Settings, scope: str | None = None) -> list[str]:
    """Remove versions a killed run left half-written (call only while holding the refresh lock)."""
    troot = tmp_dir(settings, scope)
    if not troot.is_dir():
        return []
    removed = []
    for p in troot.iterdir():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p.name)
    if removed:
        log.info(
            "adapters: removed %d stale temporary version(s): %s", len(removed), ", ".join(removed)
        )
    return removed


def start_version(
    settings: Settings, version: str | None = None, scope: str | None = None
) -> tuple[str, Path]:
    """A fresh temporary directory for a candidate being built."""
    version = version or new_version_id()
    path = tmp_dir(settings, scope) / version
    path.mkdir(parents=True, exist_ok=False)
    return version, path


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def commit_version(
    settings: Settings,
    version: str,
    build_dir: Path,
    card: dict[str, Any],
    scope: str | None = None,
) -> Path:
    """Write the card, then rename the finished directory into versions/ (not yet serving)."""
    if not (build_dir / ADAPTER_FILE).is_file():
        raise RegistryError(
            f"candidate {version} has no {ADAPTER_FILE}", fix="run the refresh again"
        )
    card = {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_ns": time.time_ns(),
        **card,
    }
    if card.get("status") not in STATUSES:
        raise ValueError(f"bad status {card.get('status')!r}")
    write_json(build_dir / CARD_FILE, card)
    _fsync_tree(build_dir)
    final = version_dir(settings, version, scope)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(build_dir, final)
    _fsync_dir(final.parent)
    if card["status"] == "rejected":
        _append_history(
            settings,
            {
                "event": "reject",
                "version": version,
                "reason": card.get("reason"),
                "metrics": card.get("metrics"),
            },
            scope,
        )
    return final


def _set_status(
    settings: Settings,
    version: str,
    status: str,
    reason: str | None = None,
    scope: str | None = None,
) -> None:
    card = read_card(settings, version, scope)
    card["status"] = status
    if reason is not None:
        card["reason"] = reason
    card.setdefault("status_history", []).append(
        {"status": status, "reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    )
    write_json(version_dir(settings, version, scope) / CARD_FILE, card)


def _set_pointer(settings: Settings, version: str | None, scope: str | None = None) -> None:
    write_pointer(root(settings, scope), version)


def promote(
    settings: Settings,
    version: str,
    reason: str = "promoted by an admin",
    metrics: dict | None = None,
    scope: str | None = None,
) -> str | None:
    """Make ``version`` the serving adapter; returns the version it replaced (None = base).

    The pointer flips last: a crash before it leaves the previous adapter serving.
    """
    if not is_complete(settings, version, scope):
        raise RegistryError(
            f"adapter version {version} does not exist or is incomplete"
            + (f" in scope {scope}" if scope else ""),
            fix="see `lorebot adapters list`",
        )
    previous = current_version(settings, scope)
    if previous == version:
        return previous
    _set_status(settings, version, "promoted", reason, scope)
    _set_pointer(settings, version, scope)
    if previous and is_complete(settings, previous, scope):
        _set_status(settings, previous, "retired", f"replaced by {version}", scope)
    _append_history(
        settings,
        {
            "event": "promote",
            "version": version,
            "previous": previous,
            "reason": reason,
            "metrics": metrics,
        },
        scope,
    )
    log.info("adapters: promoted %s (previous %s): %s", version, previous or "base", reason)
    return previous


def rollback(
    settings: Settings, reason: str = "rolled back by an admin", scope: str | None = None
) -> str | None:
    """Serve the adapter that served before the current one (None = the base model)."""
    current = current_version(settings, scope)
    if current is None:
        raise RegistryError(
            "no adapter is promoted: the base model already serves", fix="nothing to roll back"
        )
    target: str | None = None
    for event in reversed(read_history(settings, scope)):
        if event.get("event") in ("promote", "rollback") and event.get("version") == current:
            target = (
                event.get("previous") if event["event"] == "promote" else event.get("previous_of")
            )
            break
    if target is not None and not is_complete(settings, target, scope):
        log.warning("adapters: previous version %s is gone; rolling back to the base model", target)
        target = None
    # Remember what preceded the target, so a second rollback keeps walking back.
    previous_of = None
    if target is not None:
        for event in reversed(read_history(settings, scope)):
            if event.get("version") == target and event.get("event") == "promote":
                previous_of = event.get("previous")
                break
        _set_status(settings, target, "promoted", f"restored by rollback from {current}", scope)
    _set_pointer(settings, target, scope)
    _set_status(settings, current, "retired", reason, scope)
    _append_history(
        settings,
        {
            "event": "rollback",
            "version": target,
            "from": current,
            "previous_of": previous_of,
            "reason": reason,
        },
        scope,
    )
    log.info("adapters: rolled back %s -> %s", current, target or "base")
    return target


def prune(settings: Settings, keep: int, scope: str | None = None) -> list[str]:
    """Delete the oldest versions beyond ``keep``, never the current one or the one before it."""
    cards = list_adapters(settings, scope)
    current = current_version(settings, scope)
    protected = {current}
    for event in reversed(read_history(settings, scope)):
        if event.get("event") == "promote" and event.get("version") == current:
            protected.add(event.get("previous"))
            break
    others = [c["version"] for c in cards if c["version"] not in protected]
    doomed = others[: max(0, len(others) - keep)]
    for version in doomed:
        shutil.rmtree(version_dir(settings, version, scope), ignore_errors=True)
    if doomed:
        log.info("adapters: pruned %s", ", ".join(doomed))
    return doomed
