"""Domain errors shared by every lorebot package.

Each error carries a one-line message naming the problem and, where one exists, the
exact fix. Entry points translate them: the CLI prints ``error: ... (fix: ...)`` and
exits non-zero, the bot posts a visible Slack reply, workers retry only TransientError.
"""

from __future__ import annotations


class LorebotError(Exception):
    """Base class: a problem a user or operator can act on."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class ConfigError(LorebotError):
    """A setting is missing or invalid."""

    exit_code = 2


class AssetMissingError(LorebotError):
    """A model file, package or binary lorebot needs is not installed."""


class IndexMissingError(LorebotError):
    """No index has been built yet (or the pointer names a missing version)."""


class IngestError(LorebotError):
    """An ingest run could not start or finish (not one bad file: those are recorded)."""


class IndexBusyError(IngestError):
    """Another build holds the index's build lock; the same build may be tried again later."""


class DocumentError(LorebotError):
    """One document could not be ingested; the run records it and continues."""

    def __init__(self, message: str, *, reason: str, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.reason = reason


class ServiceUnavailableError(LorebotError):
    """Redis or a worker cannot be reached."""


class TransientError(LorebotError):
    """Worth retrying: the broker hiccupped, a rate limit, a busy resource."""


class AnswerTimeoutError(LorebotError):
    """A question was not answered in time."""


class GenerationError(LorebotError):
    """The language model failed to produce an answer."""


class InvalidPayloadError(LorebotError):
    """A task's arguments break the contract (types, sizes, ids): the task is dropped."""


class AccessDeniedError(LorebotError):
    """A question from a channel that may search nothing (not mapped)."""
