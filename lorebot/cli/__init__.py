"""The `lorebot` command line: one package that mounts every package's commands.

Modules: root (the Typer app, settings, errors to exit codes, ``main``), ops (config,
doctor, health), index (ingest), run (worker, beat, up, demo, bot), ask, models (eval,
refresh, adapters), fleet (sync), feedback, sources (source add, list, remove, sync);
doctor and stack hold the checks and the local supervisor. The commands call each
package's own surface (``ingest.cli``, ``workers.cli``, ``bot.cli``, ``slm.evals``) and
import heavy packages (torch, llama_cpp, faiss, unstructured) only inside the commands
that need them, so `lorebot --help` and `lorebot config` stay instant.
"""

from __future__ import annotations

from lorebot.cli import ask, console, feedback, fleet, index, models, ops, run, sources
from lorebot.cli.root import app, main

__all__ = ["app", "main"]

# The order of `lorebot --help`.
for _name, _command in (
    ("config", ops.config_cmd),
    ("doctor", ops.doctor_cmd),
    ("health", ops.health_cmd),
    ("ingest", index.ingest_cmd),
    ("worker", run.worker_cmd),
    ("beat", run.beat_cmd),
    ("ask", ask.ask_cmd),
    ("eval", models.eval_cmd),
    ("up", run.up_cmd),
    ("demo", run.demo_cmd),
    ("bot", run.bot_cmd),
    ("refresh", models.refresh_cmd),
):
    app.command(_name)(_command)
app.add_typer(feedback.feedback_app, name="feedback")
app.add_typer(fleet.sync_app, name="sync")
app.add_typer(models.adapters_app, name="adapters")
app.add_typer(console.console_app, name="console")
app.add_typer(sources.source_app, name="source")
