"""Maintenance jobs run by each tenant's pipeline (DESIGN §4): one loop drives partitions,
retention, rollup refresh and compression on every tier, instead of TimescaleDB's job scheduler.

A job is due every ``interval`` seconds and runs only while the tenant database is reachable;
errors are logged and the job retried at its next interval. ``default_jobs`` lists what runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..config.model import TenantConfig
from .migrate import Tier
from .partitions import drop_expired_partitions, ensure_partitions
from .rollup_retention import (
    apply_rollup_retention,
    compress_old_chunks,
    ensure_rollup_partitions,
    policies_active,
)
from .rollups import refresh_rollups

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Compression", "MaintenanceJob", "PartitionsAhead", "RawRetention", "RollupRefresh", "default_jobs"]

log = logging.getLogger(__name__)

_DAY_US = 86_400_000_000
LEDGER_KEEP_S = 7 * 86400.0
"""How long the batch ledger (and so the change-feed history) is kept."""


class MaintenanceJob(Protocol):
    name: str
    interval: float

    async def run(self, conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int) -> dict[str, Any]:
        """Do one round; return facts worth logging (may be empty). A ``lag_seconds`` entry
        (resolution → seconds) is exported as ``ingestd_rollup_refresh_lag_seconds``."""


class PartitionsAhead:
    """Plain PostgreSQL: daily partitions from yesterday to ``partitions_ahead`` days ahead, and the
    monthly rollup partitions of this month and the next (late data creates older ones on demand)."""

    name = "partitions"
    interval = 3600.0

    async def run(self, conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int) -> dict[str, Any]:
        if tier is not Tier.POSTGRES:
            return {}
        out: dict[str, Any] = {}
        created = await ensure_partitions(conn, now_us - _DAY_US, now_us + cfg.storage.partitions_ahead * _DAY_US)
        if created:
            out["created"] = created
        if cfg.rollups.enabled:
            rollup_parts = await ensure_rollup_partitions(conn, now_us - _DAY_US, now_us + 32 * _DAY_US)
            if rollup_parts:
                out["rollup_partitions"] = rollup_parts
        return out


class RawRetention:
    """Drop raw readings older than ``retention.raw`` (whole chunks/partitions), rollups older than
    their resolution's retention, and trim the ledger (never past batches not yet folded into the
    rollups)."""

    name = "retention"
    interval = 3600.0

    async def run(self, conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keep = cfg.retention.raw
        if keep is not None and not policies_active(tier, cfg):
            cutoff_us = now_us - int(keep * 1e6)
            if tier is Tier.POSTGRES:
                dropped = await drop_expired_partitions(conn, cutoff_us)
            else:
                cutoff = dt.datetime.fromtimestamp(cutoff_us / 1e6, dt.UTC)
                rows = await conn.fetch("SELECT drop_chunks('readings', older_than => $1::timestamptz)", cutoff)
                dropped = [str(r[0]) for r in rows]
            if dropped:
                out["dropped"] = dropped
        rolled = await apply_rollup_retention(conn, tier, cfg, now_us)
        if rolled:
            out["rollups_dropped"] = rolled
        ledger_cutoff = dt.datetime.fromtimestamp((now_us - int(LEDGER_KEEP_S * 1e6)) / 1e6, dt.UTC)
        if cfg.rollups.enabled:
            res = await conn.execute(
                "DELETE FROM ingest_batches WHERE committed_at < $1 "
                "AND txid < (SELECT watermark FROM rollup_state WHERE name = 'rollups')", ledger_cutoff)
        else:
            res = await conn.execute("DELETE FROM ingest_batches WHERE committed_at < $1", ledger_cutoff)
        n = int(res.split()[-1]) if res else 0
        if n:
            out["ledger_rows_deleted"] = n
        return out


class RollupRefresh:
    """Fold newly committed batches into the 1m/1h/1d/gas-day rollups (every tier; see
    :mod:`.rollups`). Reports ``lag_seconds`` per resolution."""

    name = "rollups"

    def __init__(self, cfg: TenantConfig) -> None:
        self.interval = cfg.rollups.refresh_interval

    async def run(self, conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int) -> dict[str, Any]:
        if not cfg.rollups.enabled:
            return {}
        budget = max(5.0, min(cfg.rollups.refresh_interval, 30.0))
        report = await refresh_rollups(conn, tier, cfg, now_us, budget_s=budget)
        return report.facts()


class Compression:
    """Timescale-licensed tier: compress chunks older than ``storage.compress_after``."""

    name = "compression"
    interval = 3600.0

    async def run(self, conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int) -> dict[str, Any]:
        return await compress_old_chunks(conn, tier, cfg, now_us)


def default_jobs(cfg: TenantConfig) -> list[MaintenanceJob]:
    """The maintenance jobs of one tenant, in the order they run."""
    return [PartitionsAhead(), RollupRefresh(cfg), RawRetention(), Compression()]
