"""Incremental rollup refresh driven by the batch ledger (DESIGN §4), on every storage tier.

Watermark. ``rollup_state.watermark`` is an ``xid8``: every ingest batch (ledger row written in the
same transaction as its readings) whose ``txid`` is below it has been folded into the rollups. A round
takes ``horizon = pg_snapshot_xmin(pg_current_snapshot())``: no transaction with a smaller id is still
running, so the set of batches with ``txid < horizon`` can no longer grow — unlike ``seq``, which is
handed out at insert time and commits out of order. The round folds the batches with
``watermark <= txid < stop`` (``stop`` = horizon, or an earlier txid to cap a round at ``max_rows``
readings / ``MAX_BATCHES`` batches) and moves the watermark to ``stop`` in the same transaction as
the rollup rows it wrote.

Touched buckets. The (tag, minute) pairs of the window's readings come from ``readings.batch_seq``
(BRIN index) restricted to the window's seq and time range. Only those buckets are recomputed:
1m from raw readings, 1h from 1m, 1d from 1h, the gas day from 1h (or 1m) — each with one
``INSERT … SELECT … ON CONFLICT DO UPDATE`` per resolution (:mod:`.rollup_sql`). Late and backfilled
data is folded like any other batch; recomputing (instead of adding deltas) makes a repeated or
concurrent round harmless. Refreshers are serialised with an advisory lock taken with
``pg_try_advisory_xact_lock``: a second process skips the round instead of waiting.

Retention guard. A bucket is recomputed only if it starts after the retention horizon of the level
it is computed from (plus one hour): recomputing a bucket whose raw rows were partly dropped would
shrink it. Late data older than the raw retention is kept raw (until dropped) but not folded.

Tiers. ``apache``/``postgres``: the above for every resolution. ``timescale``: readings_1m/1h/1d are
continuous aggregates refreshed with ``CALL refresh_continuous_aggregate`` (outside any transaction;
TimescaleDB tracks the invalidated ranges itself), then the gas day is folded from readings_1h as
above. With ``storage.use_timescale_policies`` TimescaleDB's jobs refresh the aggregates and ingestd
only refreshes the window it is about to fold into the gas day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from ..config.model import TenantConfig
from .migrate import Tier
from .rollup_model import GasDay, Resolution, retention_of
from .rollup_retention import ensure_rollup_partitions, policies_active, sync_timescale_policies
from .rollup_sql import (
    TEMP_TABLES,
    TOUCHED_FROM_BATCHES,
    TOUCHED_FROM_RANGE,
    TOUCHED_GASDAY_FROM_1H,
    TOUCHED_GASDAY_FROM_1M,
    refresh_cagg,
    upsert_gasday,
    upsert_level,
)

__all__ = ["LOCK_KEY", "Guards", "RefreshReport", "rebuild_rollups", "refresh_lag", "refresh_rollups"]

log = logging.getLogger(__name__)

LOCK_KEY: Final = 0x1A6E580
"""Advisory lock serialising rollup refreshers of one database."""
DEFAULT_MAX_ROWS: Final = 1_000_000
"""Readings folded per round at most (bounds statement time and transaction size)."""
MAX_BATCHES: Final = 20_000
"""Batches folded per round at most (many tiny batches: bounds the seq list of a round)."""
GUARD_MARGIN_S: Final = 3600.0
GASDAY_REBUILD_SLICE: Final = dt.timedelta(days=7)
CAGG_TIMEOUT_S: Final = 3600.0
_US: Final = 1_000_000
_NO_GUARD: Final = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_LEVELS: Final = (Resolution.M1, Resolution.H1, Resolution.D1)


def _ts(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / _US, dt.UTC)


def _count(status: str) -> int:
    """Row count of an ``INSERT 0 n`` / ``DELETE n`` command tag."""
    try:
        return int(status.split()[-1])
    except (IndexError, ValueError):
        return 0


def _floor(ts: dt.datetime, width: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)
    return epoch + ((ts - epoch) // width) * width


@dataclass(frozen=True, slots=True)
class Guards:
    """Oldest bucket start each level may recompute (see the module docstring)."""

    m1: dt.datetime
    h1: dt.datetime
    d1: dt.datetime
    gasday_from_1h: dt.datetime
    gasday_from_1m: dt.datetime

    @classmethod
    def at(cls, now_us: int, cfg: TenantConfig) -> Guards:
        now = _ts(now_us)

        def cut(*levels: Resolution | None) -> dt.datetime:
            keeps = [k for k in (retention_of(level, cfg.retention) for level in levels) if k is not None]
            if not keeps:
                return _NO_GUARD
            edge = now - dt.timedelta(seconds=min(keeps)) + dt.timedelta(seconds=GUARD_MARGIN_S)
            return _floor(edge, dt.timedelta(hours=1)) + dt.timedelta(hours=1)

        return cls(
            m1=cut(None, Resolution.M1),
            h1=cut(Resolution.M1, Resolution.H1),
            d1=cut(Resolution.H1, Resolution.D1),
            gasday_from_1h=cut(Resolution.H1, Resolution.GASDAY),
            gasday_from_1m=cut(Resolution.M1, Resolution.GASDAY),
        )


@dataclass(slots=True)
class RefreshReport:
    rounds: int = 0
    batches: int = 0
    rows: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    busy: bool = False
    caught_up: bool = True
    lag_seconds: float = 0.0
    seconds: float = 0.0

    def facts(self) -> dict[str, Any]:
        """Facts for the maintenance loop; ``lag_seconds`` is exported per resolution."""
        out: dict[str, Any] = {}
        if self.busy:
            out["skipped"] = "another refresher holds the lock"
        if self.batches:
            out.update(batches=self.batches, rows=self.rows, buckets=dict(self.buckets))
        if not self.caught_up:
            out["behind"] = True
        out["lag_seconds"] = {r.value: self.lag_seconds for r in Resolution}
        return out

    def _add(self, other: _Round) -> None:
        self.rounds += 1
        self.batches += other.batches
        self.rows += other.rows
        for k, v in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + v


@dataclass(slots=True)
class _Round:
    busy: bool = False
    caught_up: bool = True
    batches: int = 0
    rows: int = 0
    buckets: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Window:
    stop: str  # xid8 as text
    batches: int
    rows: int
    min_seq: int
    max_seq: int
    min_ts: dt.datetime | None
    max_ts: dt.datetime | None
    capped: bool
    seqs: list[int]


_WINDOW_SQL: Final = """
WITH w AS (
    SELECT txid, seq, rows, min_ts, max_ts FROM ingest_batches
    WHERE txid >= $1::text::xid8 AND txid < $2::text::xid8
), per_tx AS (
    SELECT txid, sum(rows) AS n, count(*) AS k FROM w GROUP BY txid
), cum AS (
    SELECT txid, sum(n) OVER (ORDER BY txid) - n AS rows_before, sum(k) OVER (ORDER BY txid) - k AS batches_before
    FROM per_tx
), e AS (
    SELECT coalesce((SELECT txid FROM cum WHERE rows_before >= $3 OR batches_before >= $4 ORDER BY txid LIMIT 1),
                    $2::text::xid8) AS stop
)
SELECT e.stop::text AS stop, e.stop <> $2::text::xid8 AS capped, count(w.seq) AS batches,
       coalesce(sum(w.rows), 0)::bigint AS rows, min(w.seq) AS min_seq, max(w.seq) AS max_seq,
       min(w.min_ts) AS min_ts, max(w.max_ts) AS max_ts, array_agg(w.seq) FILTER (WHERE w.seq IS NOT NULL) AS seqs
FROM e LEFT JOIN w ON w.txid < e.stop GROUP BY e.stop
"""


async def _window(conn: asyncpg.Connection, watermark: str, horizon: str, max_rows: int) -> _Window:
    r = await conn.fetchrow(_WINDOW_SQL, watermark, horizon, max_rows, MAX_BATCHES)
    return _Window(r["stop"], int(r["batches"]), int(r["rows"]), int(r["min_seq"] or 0), int(r["max_seq"] or 0),
                   r["min_ts"], r["max_ts"], bool(r["capped"]), list(r["seqs"] or ()))


async def _prepare(conn: asyncpg.Connection) -> None:
    for ddl in TEMP_TABLES:
        await conn.execute(ddl)
    # Parameters are constants for the planner (chunk/partition exclusion on the window's time range).
    # Memoize only adds overhead to the per-bucket lateral lookups, whose keys never repeat; JIT
    # compiles every partition's plan node for seconds to save microseconds.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_memoize = off; "
                       "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")


async def _touched_from_window(conn: asyncpg.Connection, w: _Window, guards: Guards) -> bool:
    """Fill the touched (tag, minute) pairs of the window's batches; False if nothing is foldable."""
    if not w.batches or w.min_ts is None or w.max_ts is None:
        return False
    lo = max(w.min_ts, guards.m1)
    if lo > w.max_ts:
        return False
    await conn.execute(TOUCHED_FROM_BATCHES, w.min_seq, w.max_seq, lo, w.max_ts, w.seqs)
    return True


async def _fold_gasday(conn: asyncpg.Connection, timescaledb: bool, gas: GasDay, guards: Guards,
                       from_touched_1m: bool) -> int:
    if from_touched_1m:
        await conn.execute(TOUCHED_GASDAY_FROM_1M, gas.timezone, gas.contract_hour)
    status = await conn.execute(upsert_gasday(timescaledb=timescaledb), gas.timezone, gas.contract_hour,
                                guards.gasday_from_1h, guards.gasday_from_1m)
    return _count(status)


async def _fold_levels(conn: asyncpg.Connection, tier: Tier, guards: Guards) -> dict[str, int]:
    """Recompute the touched 1m/1h/1d buckets (ingestd-maintained tiers)."""
    out = {}
    for res, guard in zip(_LEVELS, (guards.m1, guards.h1, guards.d1), strict=True):
        out[res.value] = _count(await conn.execute(upsert_level(res, timescaledb=tier.has_timescaledb), guard))
    return out


async def _gasday_settings(conn: asyncpg.Connection, state: asyncpg.Record, gas: GasDay) -> None:
    """If the gas-day settings changed (or were never recorded), empty readings_gasday and schedule a
    rebuild from readings_1h back to its oldest bucket."""
    if state["gasday_tz"] == gas.timezone and state["gasday_hour"] == gas.contract_hour:
        return
    await conn.execute("TRUNCATE readings_gasday")
    span = await conn.fetchrow("SELECT min(bucket) AS lo, max(bucket) + INTERVAL '1 hour' AS hi FROM readings_1h")
    await conn.execute(
        "UPDATE rollup_state SET gasday_tz = $1, gasday_hour = $2, gasday_rebuild_from = $3, "
        "gasday_rebuild_to = $4, updated_at = now() WHERE name = 'rollups'",
        gas.timezone, gas.contract_hour, span["lo"], span["hi"],
    )
    log.info("gas day is now %02d:00 %s: rebuilding readings_gasday", gas.contract_hour, gas.timezone)


async def _gasday_rebuild_slice(conn: asyncpg.Connection, gas: GasDay) -> bool:
    """Add one slice of a pending gas-day rebuild to the touched gas days; True if one was added."""
    row = await conn.fetchrow("SELECT gasday_rebuild_from, gasday_rebuild_to FROM rollup_state WHERE name = 'rollups'")
    lo, hi = row["gasday_rebuild_from"], row["gasday_rebuild_to"]
    if lo is None or hi is None:
        return False
    start = max(lo, hi - GASDAY_REBUILD_SLICE)
    await conn.execute(TOUCHED_GASDAY_FROM_1H, gas.timezone, gas.contract_hour, start, hi)
    done = start <= lo
    await conn.execute(
        "UPDATE rollup_state SET gasday_rebuild_to = $1, gasday_rebuild_from = CASE WHEN $2 THEN NULL "
        "ELSE gasday_rebuild_from END WHERE name = 'rollups'",
        None if done else start, done,
    )
    return True


async def _state(conn: asyncpg.Connection, *, lock_row: bool) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT watermark::text AS watermark, gasday_tz, gasday_hour FROM rollup_state WHERE name = 'rollups'"
        + (" FOR UPDATE" if lock_row else "")
    )
    if row is None:
        await conn.execute("INSERT INTO rollup_state (name) VALUES ('rollups') ON CONFLICT (name) DO NOTHING")
        row = await conn.fetchrow("SELECT watermark::text AS watermark, gasday_tz, gasday_hour "
                                  "FROM rollup_state WHERE name = 'rollups'")
    assert row is not None
    return row


async def _advance(conn: asyncpg.Connection, w: _Window) -> None:
    await conn.execute(
        "UPDATE rollup_state SET watermark = greatest(watermark, $1::text::xid8), refreshed_at = clock_timestamp(), "
        "batches = batches + $2, rows = rows + $3, updated_at = now() WHERE name = 'rollups'",
        w.stop, w.batches, w.rows,
    )


async def _round_ingestd(conn: asyncpg.Connection, tier: Tier, gas: GasDay, guards: Guards,
                         max_rows: int) -> _Round:
    out = _Round()
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
            return _Round(busy=True)
        state = await _state(conn, lock_row=True)
        await _gasday_settings(conn, state, gas)
        horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        w = await _window(conn, state["watermark"], horizon, max_rows)
        out.caught_up, out.batches, out.rows = not w.capped, w.batches, w.rows
        await _prepare(conn)
        if tier is Tier.POSTGRES and w.min_ts is not None and w.max_ts is not None:
            lo = max(w.min_ts, guards.m1)
            if lo <= w.max_ts:
                await ensure_rollup_partitions(conn, int(lo.timestamp() * _US), int(w.max_ts.timestamp() * _US))
        folded = await _touched_from_window(conn, w, guards)
        if folded:
            out.buckets = await _fold_levels(conn, tier, guards)
        rebuilding = await _gasday_rebuild_slice(conn, gas)
        if folded or rebuilding:
            out.buckets[Resolution.GASDAY.value] = await _fold_gasday(conn, tier.has_timescaledb, gas, guards,
                                                                      from_touched_1m=folded)
        if rebuilding:
            out.caught_up = False
        await _advance(conn, w)
    return out


async def _refresh_caggs(conn: asyncpg.Connection, cfg: TenantConfig, guards: Guards, w: _Window) -> None:
    """Timescale tier: refresh the continuous aggregates before their rows are folded into the gas day."""
    if not w.batches or w.min_ts is None or w.max_ts is None:
        return
    if not cfg.storage.use_timescale_policies:
        # Everything that changed since the last refresh (TimescaleDB's invalidation log), back to
        # where the level below still has its data.
        for res, guard in zip(_LEVELS, (guards.m1, guards.h1, guards.d1), strict=True):
            start = None if guard == _NO_GUARD else guard
            await conn.execute(refresh_cagg(res.relation, start, None), timeout=CAGG_TIMEOUT_S)
        return
    # Policies refresh the aggregates; make sure the window about to be folded is up to date.
    for res, guard in ((Resolution.M1, guards.m1), (Resolution.H1, guards.h1)):
        width = dt.timedelta(microseconds=res.width_us or 0)
        start = _floor(max(w.min_ts, guard), width)
        end = _floor(w.max_ts, width) + width
        if start < end:
            await conn.execute(refresh_cagg(res.relation, start, end), timeout=CAGG_TIMEOUT_S)


async def _round_timescale(conn: asyncpg.Connection, cfg: TenantConfig, gas: GasDay, guards: Guards,
                           max_rows: int) -> _Round:
    out = _Round()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        return _Round(busy=True)
    try:
        # The horizon is taken before refreshing: every batch below it is in what the refresh reads.
        horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        state = await _state(conn, lock_row=False)
        w = await _window(conn, state["watermark"], horizon, max_rows)
        out.caught_up, out.batches, out.rows = not w.capped, w.batches, w.rows
        await _refresh_caggs(conn, cfg, guards, w)
        async with conn.transaction():
            state = await _state(conn, lock_row=True)
            await _gasday_settings(conn, state, gas)
            await _prepare(conn)
            folded = await _touched_from_window(conn, w, guards)
            rebuilding = await _gasday_rebuild_slice(conn, gas)
            if folded or rebuilding:
                out.buckets[Resolution.GASDAY.value] = await _fold_gasday(conn, True, gas, guards,
                                                                          from_touched_1m=folded)
            if rebuilding:
                out.caught_up = False
            await _advance(conn, w)
    finally:
        # A broken connection releases the session lock by itself (so does the pool's reset).
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return out


async def refresh_lag(conn: asyncpg.Connection) -> float:
    """Age (s) of the oldest committed batch not yet folded into the rollups; 0 when all are."""
    lag = await conn.fetchval(
        "SELECT extract(epoch FROM clock_timestamp() - min(b.committed_at))::float8 FROM ingest_batches b "
        "WHERE b.txid >= (SELECT watermark FROM rollup_state WHERE name = 'rollups')"
    )
    return max(0.0, float(lag)) if lag is not None else 0.0


async def refresh_rollups(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, now_us: int, *,
                          max_rows: int = DEFAULT_MAX_ROWS, budget_s: float = 30.0) -> RefreshReport:
    """Fold newly committed batches into every rollup; rounds of at most ``max_rows`` readings until
    caught up or ``budget_s`` has passed. Safe to call from several processes at once."""
    t0 = time.monotonic()
    report = RefreshReport()
    gas = GasDay(cfg.rollups.timezone, cfg.rollups.contract_hour)
    guards = Guards.at(now_us, cfg)
    if tier is Tier.TIMESCALE:
        await sync_timescale_policies(conn, tier, cfg)
    while True:
        if tier is Tier.TIMESCALE:
            r = await _round_timescale(conn, cfg, gas, guards, max_rows)
        else:
            r = await _round_ingestd(conn, tier, gas, guards, max_rows)
        if r.busy:
            report.busy = True
            break
        report._add(r)
        report.caught_up = r.caught_up
        if r.caught_up or time.monotonic() - t0 > budget_s:
            break
    report.lag_seconds = await refresh_lag(conn)
    report.seconds = time.monotonic() - t0
    return report


async def rebuild_rollups(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, start_us: int, end_us: int,
                          now_us: int) -> dict[str, int]:
    """Recompute every rollup bucket with raw data in [start, end) from scratch — for data that predates
    the ledger (written before rollups existed, or ledger rows already trimmed) or after repairs.
    Holds the refresher lock for one transaction; call it in slices for long ranges."""
    guards = Guards.at(now_us, cfg)
    gas = GasDay(cfg.rollups.timezone, cfg.rollups.contract_hour)
    lo, hi = _ts(start_us), _ts(end_us)
    if tier is Tier.TIMESCALE and not policies_active(tier, cfg):
        for res in _LEVELS:
            width = dt.timedelta(microseconds=res.width_us or 0)
            await conn.execute(refresh_cagg(res.relation, _floor(lo, width), _floor(hi, width) + width),
                               timeout=CAGG_TIMEOUT_S)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        state = await _state(conn, lock_row=True)
        await _gasday_settings(conn, state, gas)
        await _prepare(conn)
        if tier is Tier.POSTGRES:
            await ensure_rollup_partitions(conn, start_us, end_us)
        await conn.execute(TOUCHED_FROM_RANGE, max(lo, guards.m1), hi)
        out = {} if tier is Tier.TIMESCALE else await _fold_levels(conn, tier, guards)
        out[Resolution.GASDAY.value] = await _fold_gasday(conn, tier.has_timescaledb, gas, guards, from_touched_1m=True)
    return out
