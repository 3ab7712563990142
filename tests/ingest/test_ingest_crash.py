"""An ingest killed with SIGKILL mid-build leaves the previous version serving."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ingest_fixtures import settings_for

from ingest import Source, build_index, current_version, open_index, store


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ingest import Source, build_index, store
    from lorebot.settings import Settings

    where = sys.argv[3]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "publish":
        store.publish = die
    else:
        store.write_search_indexes = die
    settings = Settings(data_dir=Path(sys.argv[1]))
    build_index(settings, [Source(Path(sys.argv[2]), "hr")], progress=False, workers=1)
    """
)


@pytest.mark.parametrize("where", ["write", "publish"])
def test_sigkill_mid_build_keeps_previous_version(tmp_path, embedder, where, parse_pool):
    root = tmp_path / "docs"
    write(root / "leave.md", "# Leave\n\nEmployees get 27 days of annual leave each year.\n")
    write(root / "vpn.txt", "VPN\n\nThe VPN gateway listens on port 51820.\n")
    settings = settings_for(tmp_path)
    r1 = build_index(
        settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    write(root / "new.md", "# New\n\nThe new policy starts in May.\n")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(settings.data_dir), str(root), where],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert current_version(settings) == r1.version
    assert list(store.tmp_dir(settings).iterdir())  # litter of the killed build
    with open_index(settings, embedder=embedder) as ix:
        assert ix.search("annual leave", k=1)
        assert not any(h.chunk.source == "new.md" for h in ix.search("new policy May", k=10))
    r2 = build_index(
        settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    assert r2.new_version and current_version(settings) == r2.version
    assert not list(store.tmp_dir(settings).iterdir())
    with open_index(settings, embedder=embedder) as ix:
        assert any(h.chunk.source == "new.md" for h in ix.search("new policy May", k=3))
