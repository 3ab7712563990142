"""Fixtures for tests that run the real answer model (the GGUF installed with lorebot).

The model ships with the install, so these tests do not skip when it is missing: a
missing model is a broken install and should fail loudly.
"""

from __future__ import annotations

import os

import pytest

from lorebot.assets import answer_model_path
from slm.serving.generator import LlamaGenerator


@pytest.fixture(scope="session", autouse=True)
def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def generator() -> LlamaGenerator:
    """One model for the whole session, as a worker process would hold it."""
    gen = LlamaGenerator(answer_model_path(), n_threads=min(2, os.cpu_count() or 1), n_ctx=2048)
    gen.load()
    yield gen
    gen.close()
