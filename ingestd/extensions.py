"""Which optional parts of the daemon start for a configuration (query API, alarm engine, leases)."""

from __future__ import annotations

from alarms.engine import AlarmExtension

from .api.server import ApiExtension
from .config.load import IngestdConfig
from .daemon import Extension

__all__ = ["default_extensions"]


def default_extensions(cfg: IngestdConfig) -> list[Extension]:
    return [AlarmExtension(), ApiExtension()]
