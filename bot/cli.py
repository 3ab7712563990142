"""Plain functions behind ``lorebot bot`` and ``lorebot feedback export``.

:mod:`lorebot.cli` loads the settings and calls these; they raise lorebot's domain
errors, which the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

from lorebot.settings import Settings


def run_bot(settings: Settings) -> None:
    """Run the Slack bot until interrupted (Socket Mode with an app token, else HTTP)."""
    from bot.server import run_bot as _run

    _run(settings)


def export_feedback(settings: Settings, out: Path) -> int:
    """Write all 👍 / 👎 feedback to `out` as JSON lines; return the number written."""
    from lorebot.feedback import export_jsonl

    return export_jsonl(settings, out)
