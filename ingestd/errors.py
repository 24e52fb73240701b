"""Typed errors, named by what the caller should do.

Exception hierarchy::

    IngestdError
    ├── ConfigError                 invalid configuration; carries every problem with its key path
    ├── SourceError                 raised by Source.run() (adapters translate foreign errors into these)
    │   ├── SourceUnavailable       transient: the supervisor retries with backoff; counted by the breaker
    │   ├── SourceAuthError         credentials/certificates rejected: parked until config changes
    │   └── SourceConfigError       the device rejects the configuration itself: source disabled
    ├── StorageError                tenant database problems
    │   ├── StorageUnavailable      transient: batches go to the spool, the writer retries
    │   └── StorageSchemaError      the database is not migrated / wrong tier: operator action needed
    └── PayloadError                one message could not be decoded (dead-lettered, never fatal)

Adapters translate protocol-library exceptions at their boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "IngestdError",
    "PayloadError",
    "SourceAuthError",
    "SourceConfigError",
    "SourceError",
    "SourceUnavailable",
    "StorageError",
    "StorageSchemaError",
    "StorageUnavailable",
]


class IngestdError(Exception):
    """Base class of every error ingestd raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem: where (a key path such as ``sources[2].tags[5].address``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(IngestdError):
    """The configuration is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem], *, file: str | None = None) -> None:
        self.problems = tuple(problems)
        self.file = file
        where = f"{file}: " if file else ""
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{where}{len(self.problems)} configuration error(s)\n{lines}")


class SourceError(IngestdError):
    """Raised by a source's run loop. ``detail`` is safe to log (never contains secrets)."""


class SourceUnavailable(SourceError):
    """The device or broker cannot be reached right now; retry with backoff."""


class SourceAuthError(SourceError):
    """Credentials or certificates were rejected; retrying will not help until the config changes."""


class SourceConfigError(SourceError):
    """The device rejected the configuration (unknown node, illegal address for every tag, ...)."""


class StorageError(IngestdError):
    """A tenant database operation failed."""


class StorageUnavailable(StorageError):
    """The tenant database cannot be reached or failed transiently; data goes to the spool."""


class StorageSchemaError(StorageError):
    """The tenant database schema is missing or incompatible; run ``ingestd migrate``."""


class PayloadError(IngestdError):
    """A single message or device answer could not be decoded.

    ``reason`` is a short, stable, metric-label-safe kind such as ``bad_json`` or ``nan_value``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
