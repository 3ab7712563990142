"""Access scopes: which collections an adapter may learn from, and which adapter a question gets.

An adapter can repeat what it was trained on in any channel it answers in, so the promise
is: **an adapter is trained only on collections that every channel it serves may see.**

A channel's *scope* is the set of collections it may search (``slack.channel_collections``,
``default_collections``, ``dm_collections``, and the run-time overrides of ``/lorebot
channel set``). Two designs keep the promise (``training.adapter_scopes``):

* ``intersection``: one adapter, trained on the collections every mapped scope shares; it
  lives at the root of the adapter registry (what fleet sync publishes).
* ``per_scope``: one adapter per distinct scope (at most ``training.max_scopes``), each in
  its own registry under ``adapters/scopes/<key>/``; over the limit, the most used scopes
  keep their own and the intersection adapter serves the rest.

Whatever was trained, the worker enforces the promise when it serves: :func:`select` gives
a question only an adapter whose training collections are all among the collections the
question may search (the largest such one), else none (the base model). An adapter whose
card does not say what it was trained on serves only questions that may search everything.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lorebot import access
from lorebot.settings import Settings

log = logging.getLogger(__name__)

#: Names that mean "every collection" in the mapping settings and in /lorebot channel set.
EVERYTHING = frozenset({"*", "all"})
INTERSECTION = "intersection"
PER_SCOPE = "per_scope"
_KEY_OK = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")


def scope_key(collections: Iterable[str]) -> str:
    """A stable directory name for a set of collections: ``handbook+hr``, or a hash when the
    names would not make a safe one."""
    names = sorted(set(collections))
    readable = "+".join(names)
    if names and _KEY_OK.match(readable):
        return readable
    return "s-" + hashlib.sha1("\0".join(names).encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Scope:
    """A set of collections and who is mapped to it (channel ids, ``default``, ``dm``)."""

    collections: tuple[str, ...]
    channels: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return scope_key(self.collections)


@dataclass
class TrainingPlan:
    """What one refresh trains: a list of collection sets, each into its registry."""

    mode: str
    scopes: list[Scope] = field(default_factory=list)
    #: Registry each scope trains into: None = the root registry.
    registries: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    note: str = ""

    def registry_of(self, scope: Scope) -> str | None:
        return self.registries.get(scope.collections)


def _expand(values: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...] | None:
    """A mapping value as a sorted tuple of existing collections (``*``/``all`` = every one)."""
    if values is None:
        return None
    if any(str(v).strip().lower() in EVERYTHING for v in values):
        return tuple(sorted(available))
    have = set(available)
    return tuple(sorted({v for v in values if v in have}))


def channel_scopes(
    settings: Settings,
    available: Iterable[str],
    overrides: Mapping[str, Sequence[str] | None] | None = None,
) -> list[Scope]:
    """Every distinct scope channels are mapped to, most used first.

    ``overrides`` are the run-time mappings (channel -> collections, None = every one) that
    ``/lorebot channel set`` stored; they replace the settings for their channel. Scopes
    are cut to the collections the index has; an empty scope (nothing to learn) is left out.
    """
    available = sorted(set(available))
    # the same rules that decide, per question, what a channel may search
    mapped = {
        who: _expand(["*"] if values is None else values, available)
        for who, values in access.mapping(settings.slack, overrides).items()
    }
    by_set: dict[tuple[str, ...], list[str]] = {}
    for who, cols in mapped.items():
        if cols:
            by_set.setdefault(cols, []).append(who)
    scopes = [Scope(cols, tuple(sorted(who))) for cols, who in by_set.items()]
    return sorted(scopes, key=lambda s: (-len(s.channels), s.key))


def intersection(scopes: Sequence[Scope]) -> tuple[str, ...]:
    """The collections every scope may see (empty when two scopes share nothing)."""
    if not scopes:
        return ()
    common = set(scopes[0].collections)
    for s in scopes[1:]:
        common &= set(s.collections)
    return tuple(sorted(common))


def plan(
    settings: Settings,
    available: Iterable[str],
    overrides: Mapping[str, Sequence[str] | None] | None = None,
) -> TrainingPlan:
    """The collection sets one refresh trains, and the registry each goes into.

    ``training.collections`` (when set) narrows every scope further: a collection left out
    of it feeds no adapter. With no channel mapped at all (``lorebot ask`` and channels
    mapped to everything are the only askers), the one adapter learns from
    ``training.collections``, else every collection, and serves only questions that may
    see all of them (see :func:`select`).
    """
    t = settings.training
    available = sorted(set(available))
    allowed = set(available) if t.collections is None else set(t.collections) & set(available)
    scopes = []
    for s in channel_scopes(settings, available, overrides):
        cols = tuple(c for c in s.collections if c in allowed)
        if cols:
            scopes.append(Scope(cols, s.channels))
    scopes = _merge(scopes)
    if not channel_scopes(settings, available, overrides):
        cols = tuple(sorted(allowed))
        only = [Scope(cols, ("unmapped",))] if cols else []
        return TrainingPlan(
            t.adapter_scopes, only, {cols: None}, note="no channel is mapped: one adapter"
        )
    common = intersection(scopes)
    if t.adapter_scopes == INTERSECTION or len(scopes) <= 1:
        chosen = [Scope(common, tuple(sorted({c for s in scopes for c in s.channels})))]
        chosen = [s for s in chosen if s.collections]
        note = f"intersection of {len(scopes)} scope(s): {', '.join(common) or 'nothing in common'}"
        return TrainingPlan(INTERSECTION, chosen, {common: None}, note=note)
    chosen = list(scopes)
    note = f"{len(scopes)} scope(s)"
    if len(chosen) > t.max_scopes:
        keep = chosen[: max(t.max_scopes - 1, 0)]
        rest = chosen[len(keep) :]
        note = (
            f"{len(scopes)} scopes, over training.max_scopes={t.max_scopes}: "
            f"{', '.join(s.key for s in rest)} served by the intersection adapter"
        )
        log.warning("adapter scopes: %s", note)
        chosen = keep
        if common and all(s.collections != common for s in chosen):
            chosen.append(Scope(common, tuple(sorted({c for s in rest for c in s.channels}))))
    return TrainingPlan(PER_SCOPE, chosen, {s.collections: s.key for s in chosen}, note=note)


def _merge(scopes: list[Scope]) -> list[Scope]:
    """Scopes that became equal once narrowed, as one (channels joined)."""
    out: dict[tuple[str, ...], set[str]] = {}
    for s in scopes:
        out.setdefault(s.collections, set()).update(s.channels)
    merged = [Scope(cols, tuple(sorted(who))) for cols, who in out.items()]
    return sorted(merged, key=lambda s: (-len(s.channels), s.key))


def may_serve(trained_on: Sequence[str] | None, question_collections: Sequence[str] | None) -> bool:
    """Whether an adapter trained on ``trained_on`` may answer a question that may search
    ``question_collections`` (None = every collection; ``trained_on`` None = unknown)."""
    if question_collections is None:
        return True
    if trained_on is None:
        return False
    return set(trained_on) <= set(question_collections)


def select(candidates: Iterable[tuple[str, Sequence[str] | None]], question_collections):
    """The version (of ``(version, trained_on)`` pairs) a question gets, or None (base model).

    Only adapters :func:`may_serve` allows; among them the one trained on the most
    collections (the question's own scope when there is one), ties by version name.
    """
    best: tuple[int, str] | None = None
    for version, trained_on in candidates:
        if not may_serve(trained_on, question_collections):
            continue
        rank = (len(trained_on) if trained_on is not None else 10**6, version)
        if best is None or rank > best:
            best = rank
    return best[1] if best else None
