"""Retention, partitions and compression of rollups, per storage tier (DESIGN §4).

* timescale — ``drop_chunks`` on the continuous aggregates and readings_gasday, ``compress_chunk`` on
  readings chunks older than ``storage.compress_after``; or, with
  ``storage.use_timescale_policies``, TimescaleDB refresh/compression/retention policies instead.
* apache    — ``drop_chunks`` on the rollup hypertables.
* postgres  — readings_1m/readings_1h are partitioned by month (created ahead and on demand, dropped
  when expired); readings_1d/readings_gasday are small and trimmed with ``DELETE``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from typing import Any, Final

import asyncpg
import orjson

from ..config.model import TenantConfig
from .migrate import Tier
from .partitions import create_partition, drop_partition
from .rollup_model import Resolution, retention_of
from .rollup_sql import compress_candidates
from .sql import interval_literal

__all__ = [
    "apply_rollup_retention",
    "compress_old_chunks",
    "drop_expired_rollup_partitions",
    "ensure_rollup_partitions",
    "policies_active",
    "policy_statements",
    "rollup_partition_name",
    "sync_timescale_policies",
]

log = logging.getLogger(__name__)

_PARTITIONED: Final = ("readings_1m", "readings_1h")
_PART_RE: Final = re.compile(r"^(readings_1[mh])_p(\d{4})(\d{2})$")
_LOCK_KEY: Final = 0x1A6E581  # advisory lock: rollup partition DDL
_POLICY_META: Final = "timescale_policies"
_US: Final = 1_000_000


def _ts(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / _US, dt.UTC)


def _month(d: dt.date) -> dt.date:
    return d.replace(day=1)


def _next_month(d: dt.date) -> dt.date:
    return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def rollup_partition_name(table: str, month: dt.date) -> str:
    if table not in _PARTITIONED:
        raise ValueError(f"{table!r} is not a partitioned rollup table")
    return f"{table}_p{month:%Y%m}"


async def _partitions(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
        table,
    )
    return {r["relname"] for r in rows}


async def ensure_rollup_partitions(conn: asyncpg.Connection, first_us: int, last_us: int) -> list[str]:
    """Plain PostgreSQL: create the monthly partitions of readings_1m and readings_1h covering
    [first_us, last_us]. Returns the partitions created."""
    first, last = _month(_ts(first_us).date()), _month(_ts(last_us).date())
    if (last - first).days > 3660:
        raise ValueError("refusing to create more than 10 years of rollup partitions at once")
    months = []
    m = first
    while m <= last:
        months.append(m)
        m = _next_month(m)
    created: list[str] = []
    for table in _PARTITIONED:
        existing = await _partitions(conn, table)
        missing = [m for m in months if rollup_partition_name(table, m) not in existing]
        if not missing:
            continue
        for month in missing:
            name = rollup_partition_name(table, month)
            lo = dt.datetime.combine(month, dt.time(), dt.UTC)
            hi = dt.datetime.combine(_next_month(month), dt.time(), dt.UTC)
            # Identifiers come from rollup_partition_name (fixed prefix + digits).
            if await create_partition(conn, table, name, lo, hi, lock_key=_LOCK_KEY, key="bucket"):
                created.append(name)
    return created


async def drop_expired_rollup_partitions(conn: asyncpg.Connection, table: str, older_than_us: int) -> list[str]:
    """Drop the monthly partitions of ``table`` that end at or before ``older_than_us``."""
    cutoff = _ts(older_than_us)
    dropped = []
    for name in sorted(await _partitions(conn, table)):
        m = _PART_RE.match(name)
        if not m or m.group(1) != table:
            continue
        month = dt.date(int(m.group(2)), int(m.group(3)), 1)
        if dt.datetime.combine(_next_month(month), dt.time(), dt.UTC) <= cutoff:
            await drop_partition(conn, table, name)
            dropped.append(name)
    return dropped


def policies_active(tier: Tier, cfg: TenantConfig) -> bool:
    """Whether TimescaleDB's job scheduler (not ingestd) refreshes, compresses and drops."""
    return tier is Tier.TIMESCALE and cfg.storage.use_timescale_policies


async def apply_rollup_retention(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig,
                                 now_us: int) -> dict[str, Any]:
    """Drop rollup rows older than their resolution's retention. Returns what was dropped."""
    out: dict[str, Any] = {}
    for res in Resolution:
        keep = retention_of(res, cfg.retention)
        if keep is None:
            continue
        cutoff_us = now_us - int(keep * _US)
        rel = res.relation
        if tier.has_timescaledb:
            if policies_active(tier, cfg) and res is not Resolution.GASDAY:
                continue  # a retention policy drops these
            rows = await conn.fetch(f"SELECT drop_chunks('{rel}', older_than => $1::timestamptz)", _ts(cutoff_us))
            dropped: list[str] | int = [str(r[0]) for r in rows]
        elif rel in _PARTITIONED:
            dropped = await drop_expired_rollup_partitions(conn, rel, cutoff_us)
        else:
            # Whole buckets older than the cutoff (gas days last at most 25 hours).
            res_s = await conn.execute(f"DELETE FROM {rel} WHERE bucket < $1::timestamptz - INTERVAL '25 hours'",
                                       _ts(cutoff_us))
            dropped = int(res_s.split()[-1]) if res_s else 0
        if dropped:
            out[res.value] = dropped
    return out


async def compress_old_chunks(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int,
                              budget_s: float = 300.0) -> dict[str, Any]:
    """Timescale-licensed tier: compress the chunks of readings that lie entirely before
    now - storage.compress_after, one chunk per statement, within ``budget_s``."""
    after = cfg.storage.compress_after
    if tier is not Tier.TIMESCALE or after is None or policies_active(tier, cfg):
        return {}
    cutoff = _ts(now_us - int(after * _US))
    deadline = time.monotonic() + budget_s
    done: list[str] = []
    for r in await conn.fetch(compress_candidates("readings"), cutoff):
        if time.monotonic() > deadline:
            return {"compressed": done, "more": True}
        await conn.execute("SELECT compress_chunk($1::regclass, if_not_compressed => true)", r["chunk"],
                           timeout=max(budget_s, 60.0))
        done.append(r["chunk"])
    return {"compressed": done} if done else {}


def _policy_plan(cfg: TenantConfig) -> list[str]:
    """The TimescaleDB policies wanted for ``cfg`` (SQL statements), in the order they are added."""
    every = interval_literal(cfg.rollups.refresh_interval)
    ret = cfg.retention

    def offset(seconds: float | None) -> str:
        return "NULL" if seconds is None else f"INTERVAL '{interval_literal(seconds)}'"

    plan: list[str] = []
    if cfg.rollups.enabled:
        # Each level is refreshed back to where its source still exists (the retention of the level below).
        for rel, source_keep in (("readings_1m", ret.raw), ("readings_1h", ret.rollup_1m),
                                 ("readings_1d", ret.rollup_1h)):
            plan.append(
                f"SELECT add_continuous_aggregate_policy('{rel}', start_offset => {offset(source_keep)}, "
                f"end_offset => NULL, schedule_interval => INTERVAL '{every}', if_not_exists => true)"
            )
    if cfg.storage.compress_after is not None:
        plan.append(f"SELECT add_compression_policy('readings', compress_after => "
                    f"{offset(cfg.storage.compress_after)}, if_not_exists => true)")
    for rel, keep in (("readings", ret.raw), ("readings_1m", ret.rollup_1m), ("readings_1h", ret.rollup_1h),
                      ("readings_1d", ret.rollup_1d)):
        if keep is not None:
            plan.append(f"SELECT add_retention_policy('{rel}', drop_after => {offset(keep)}, if_not_exists => true)")
    return plan


_REMOVE_ALL: Final = (
    "SELECT remove_continuous_aggregate_policy('readings_1m', if_exists => true)",
    "SELECT remove_continuous_aggregate_policy('readings_1h', if_exists => true)",
    "SELECT remove_continuous_aggregate_policy('readings_1d', if_exists => true)",
    "SELECT remove_compression_policy('readings', if_exists => true)",
    "SELECT remove_retention_policy('readings', if_exists => true)",
    "SELECT remove_retention_policy('readings_1m', if_exists => true)",
    "SELECT remove_retention_policy('readings_1h', if_exists => true)",
    "SELECT remove_retention_policy('readings_1d', if_exists => true)",
)


def policy_statements(cfg: TenantConfig, applied: list[str] | None) -> list[str]:
    """Statements that bring the policies from ``applied`` (as last recorded) to what ``cfg`` wants."""
    wanted = _policy_plan(cfg) if cfg.storage.use_timescale_policies else []
    if wanted == (applied or []):
        return []
    return [*(_REMOVE_ALL if applied else ()), *wanted]


async def sync_timescale_policies(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig) -> dict[str, Any]:
    """Timescale tier: add or remove TimescaleDB policies when ``storage.use_timescale_policies`` (or the
    settings they derive from) changed. What was applied is recorded in ingestd_meta."""
    if tier is not Tier.TIMESCALE:
        return {}
    raw = await conn.fetchval("SELECT value FROM ingestd_meta WHERE key = $1", _POLICY_META)
    applied: list[str] | None = orjson.loads(raw) if raw else None
    todo = policy_statements(cfg, applied)
    if not todo:
        return {}
    wanted = _policy_plan(cfg) if cfg.storage.use_timescale_policies else []
    async with conn.transaction():
        for stmt in todo:
            await conn.execute(stmt)
        await conn.execute(
            "INSERT INTO ingestd_meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            _POLICY_META, orjson.dumps(wanted).decode(),
        )
    log.info("TimescaleDB policies %s", "updated" if wanted else "removed")
    return {"policies": len(wanted)}
