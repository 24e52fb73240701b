"""Benchmark: incremental rollup refresh while ingest runs at 50,000 points/s.

Starts a local TimescaleDB (Apache edition, fsync on) through tests.support.pg, creates a tenant
database, then

1. ingests through the real write path (binary COPY + batch ledger) at ``--rate`` points/s for
   ``--seconds`` without rollups (baseline);
2. ingests the same way while the rollup refresher (ingestd.storage.rollups.refresh_rollups, the code
   the maintenance loop runs) folds new batches every ``--interval`` seconds on its own connection;
3. checks that every ingested sample is in readings_1m/1h/1d/gasday exactly once.

Prints progress, then ONE JSON object on the last line:
  refresh_rows_per_s        readings folded per second of refresh work
  refresh_lag_p99_s         99th percentile of (batch folded into the rollups) − (batch committed)
  ingest_ratio_with_rollups ingest rate achieved with the refresher running ÷ without

    .venv/bin/python bench/rollups.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestd.config.model import StorageConfig, TenantConfig
from ingestd.model import Batch, now_us
from ingestd.storage.migrate import Tier, migrate
from ingestd.storage.rollups import refresh_rollups
from ingestd.storage.store import TagRow, upsert_tags, write_readings
from tests.support.pg import PgServer

US = 1_000_000


@dataclass
class Ingest:
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    write_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


async def ingest(conn: asyncpg.Connection, tier: Tier, tag_ids: np.ndarray, rate: float, seconds: float,
                 batch_rows: int, rng: np.random.Generator, start_row: int) -> Ingest:
    """Write ``rate`` points/s for ``seconds``: every tag in turn, one sample per tag per round
    (``len(tag_ids) / rate`` seconds apart), in batches of about ``batch_rows``."""
    n_tags = len(tag_ids)
    period_us = int(n_tags / rate * US)
    t_origin = now_us()
    out = Ingest()
    t0 = time.monotonic()
    next_row = start_row
    tick = batch_rows / rate
    deadline = t0 + seconds
    while (now := time.monotonic()) < deadline:
        due = start_row + int((now - t0) * rate)
        if due - next_row < batch_rows:
            await asyncio.sleep(min(tick, deadline - now))  # paced source: the next batch is not due yet
            continue
        n = min(due - next_row, 4 * batch_rows)
        rows = np.arange(next_row, next_row + n, dtype=np.int64)
        tag_idx = rows % n_tags
        ts = t_origin + (rows // n_tags - start_row // n_tags) * period_us + tag_idx  # unique per tag
        value = rng.normal(500.0, 50.0, n)
        quality = np.zeros(n, np.uint8)
        bad = rng.random(n) < 0.02
        value[bad] = np.nan
        quality[bad] = 2
        batch = Batch.of(np.zeros(n, np.int32), ts, value, quality)
        w0 = time.perf_counter()
        await write_readings(conn, tier, uuid.uuid4(), "bench", tag_ids[tag_idx], batch)
        out.write_s.append(time.perf_counter() - w0)
        out.rows += n
        out.batches += 1
        next_row += n
    out.seconds = time.monotonic() - t0
    return out


@dataclass
class Refresher:
    rows: int = 0
    busy_s: float = 0.0
    rounds: int = 0
    lags: list[float] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)


async def refresh_loop(conn: asyncpg.Connection, tier: Tier, cfg: TenantConfig, interval: float,
                       stop: asyncio.Event, out: Refresher) -> None:
    while True:
        before = await conn.fetchval("SELECT watermark::text FROM rollup_state WHERE name = 'rollups'")
        t0 = time.perf_counter()
        report = await refresh_rollups(conn, tier, cfg, now_us(), budget_s=interval * 4)
        spent = time.perf_counter() - t0
        out.busy_s += spent
        out.rows += report.rows
        out.rounds += report.rounds
        out.round_s.append(spent)
        # Lag of every batch this refresh folded: folded (now) − committed.
        lags = await conn.fetch(
            "SELECT extract(epoch FROM clock_timestamp() - committed_at)::float8 AS lag FROM ingest_batches "
            "WHERE txid >= $1::text::xid8 AND txid < (SELECT watermark FROM rollup_state WHERE name = 'rollups')",
            before,
        )
        out.lags.extend(float(r["lag"]) for r in lags)
        if stop.is_set() and report.caught_up:
            return
        with contextlib.suppress(TimeoutError):  # the next round is due, or the ingest phase ended
            await asyncio.wait_for(stop.wait(), max(0.0, interval - spent))


async def check(conn: asyncpg.Connection) -> dict[str, bool]:
    raw = await conn.fetchval("SELECT count(*) FROM readings")
    out = {}
    for rel in ("readings_1m", "readings_1h", "readings_1d", "readings_gasday"):
        out[rel] = int(await conn.fetchval(f"SELECT coalesce(sum(samples), 0) FROM {rel}")) == raw
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    server = PgServer(timescaledb=not args.plain, fsync=True)
    server.start()
    try:
        db = server.create_database()
        conn = await asyncpg.connect(server.dsn(db), server_settings={"timezone": "UTC"})
        refresher_conn = await asyncpg.connect(server.dsn(db), server_settings={"timezone": "UTC"})
        report = await migrate(conn, StorageConfig())
        tier = report.tier
        print(f"# {report.describe()}", flush=True)
        cfg = TenantConfig.model_validate({
            "slug": "bench", "dsn": "env:UNUSED",
            "rollups": {"timezone": "America/Chicago", "contract_hour": 9, "refresh_interval": args.interval},
        })
        ids_by_name = await upsert_tags(conn, [TagRow(f"well{i:05d}.value", source="bench") for i in range(args.tags)])
        tag_ids = np.array(sorted(ids_by_name.values()), dtype=np.int32)
        rng = np.random.default_rng(1)

        print(f"# baseline: {args.rate:.0f} points/s for {args.seconds:.0f} s, {args.tags} tags, no rollups",
              flush=True)
        base = await ingest(conn, tier, tag_ids, args.rate, args.seconds, args.batch, rng, 0)
        print(f"#   achieved {base.rate:,.0f} points/s, write p99 {np.percentile(base.write_s, 99) * 1e3:.1f} ms",
              flush=True)
        # Fold the baseline data first so phase 2 measures steady-state incremental work.
        warm = await refresh_rollups(refresher_conn, tier, cfg, now_us(), budget_s=600)
        print(f"#   initial refresh of {warm.rows:,} rows took {warm.seconds:.1f} s", flush=True)

        print(f"# with rollups: refresh every {args.interval:.0f} s on its own connection", flush=True)
        stop = asyncio.Event()
        ref = Refresher()
        task = asyncio.create_task(refresh_loop(refresher_conn, tier, cfg, args.interval, stop, ref))
        loaded = await ingest(conn, tier, tag_ids, args.rate, args.seconds, args.batch, rng, base.rows + 10 * args.tags)
        stop.set()
        await task
        print(f"#   achieved {loaded.rate:,.0f} points/s, write p99 {np.percentile(loaded.write_s, 99) * 1e3:.1f} ms; "
              f"{ref.rounds} refresh rounds, {ref.rows:,} rows in {ref.busy_s:.1f} s busy "
              f"(round p50 {np.percentile(ref.round_s, 50):.2f} s, max {max(ref.round_s):.2f} s)", flush=True)
        ok = await check(conn)
        print(f"#   every sample folded exactly once: {ok}", flush=True)
        await conn.close()
        await refresher_conn.close()
        return {
            "bench": "rollups",
            "tier": tier.value,
            "target_points_per_s": args.rate,
            "tags": args.tags,
            "refresh_interval_s": args.interval,
            "seconds_per_phase": args.seconds,
            "ingest_points_per_s_without_rollups": round(base.rate),
            "ingest_points_per_s_with_rollups": round(loaded.rate),
            "refresh_rows_per_s": round(ref.rows / ref.busy_s) if ref.busy_s else None,
            "refresh_busy_fraction": round(ref.busy_s / loaded.seconds, 3),
            "refresh_lag_p50_s": round(float(np.percentile(ref.lags, 50)), 3) if ref.lags else None,
            "refresh_lag_p99_s": round(float(np.percentile(ref.lags, 99)), 3) if ref.lags else None,
            "ingest_ratio_with_rollups": round(loaded.rate / base.rate, 4) if base.rate else None,
            "exact": all(ok.values()),
        }
    finally:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute in total")
    p.add_argument("--rate", type=float, default=50_000.0, help="points per second")
    p.add_argument("--tags", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=5_000, help="rows per batch (pipeline.batch_max_rows)")
    p.add_argument("--interval", type=float, default=5.0, help="refresh interval (s)")
    p.add_argument("--seconds", type=float, default=None, help="duration of each phase")
    p.add_argument("--plain", action="store_true", help="plain PostgreSQL (tier 3) instead of TimescaleDB")
    args = p.parse_args()
    if args.seconds is None:
        args.seconds = 20.0 if args.quick else 90.0
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
