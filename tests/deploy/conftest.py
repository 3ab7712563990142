"""Fixtures of the deployment checks (helpers live in _support.py)."""

from __future__ import annotations

import pytest

from tests.deploy._support import COMPOSE_FILE, load_yaml


@pytest.fixture(scope="session")
def compose() -> dict:
    """The compose file as PyYAML reads it (anchors and merge keys resolved)."""
    return load_yaml(COMPOSE_FILE)
