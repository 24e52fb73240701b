"""Rollup SQL and refresher bookkeeping without a database: statements per dialect and resolution,
TimescaleDB calls, policy reconciliation, retention guards, job wiring, reported facts."""

from __future__ import annotations

import datetime as dt

import pytest

from ingestd.config.model import TenantConfig
from ingestd.storage.maintenance import Compression, PartitionsAhead, RawRetention, RollupRefresh, default_jobs
from ingestd.storage.rollup_model import Resolution
from ingestd.storage.rollup_retention import policy_statements, rollup_partition_name
from ingestd.storage.rollup_sql import compress_candidates, refresh_cagg, upsert_gasday, upsert_level
from ingestd.storage.rollups import Guards, RefreshReport

US = 1_000_000


def cfg(**over: object) -> TenantConfig:
    return TenantConfig.model_validate({"slug": "acme", "dsn": "env:UNUSED", **over})


def test_levels_read_the_level_below_with_both_dialects() -> None:
    m1_ts, m1_pg = upsert_level(Resolution.M1, timescaledb=True), upsert_level(Resolution.M1, timescaledb=False)
    assert "FROM readings r WHERE r.tag_id = t.tag_id" in m1_ts
    assert "first(r.value, r.ts) FILTER (WHERE r.value IS NOT NULL)" in m1_ts
    assert "(min(ARRAY[date_part('epoch', r.ts), r.value]) FILTER (WHERE r.value IS NOT NULL))[2]" in m1_pg
    h1 = upsert_level(Resolution.H1, timescaledb=False)
    assert "INSERT INTO readings_1h" in h1 and "FROM readings_1m m" in h1
    assert "(max(ARRAY[date_part('epoch', m.last_ts), m.last]) FILTER (WHERE m.last_ts IS NOT NULL))[2]" in h1
    assert "FROM readings_1h m" in upsert_level(Resolution.D1, timescaledb=True)
    for sql in (m1_ts, h1, upsert_gasday(timescaledb=True)):
        assert "ON CONFLICT (tag_id, bucket) DO UPDATE SET" in sql
        assert "avg = EXCLUDED.avg" in sql and "a.sum / nullif(a.count, 0)" in sql
    with pytest.raises(ValueError, match="does not handle"):
        upsert_level(Resolution.GASDAY, timescaledb=True)


def test_gas_day_statement_picks_1h_or_1m_per_day() -> None:
    sql = upsert_gasday(timescaledb=False)
    assert "FROM readings_1h h WHERE t.hourly" in sql and "FROM readings_1m m WHERE NOT t.hourly" in sql
    assert "SELECT DISTINCT x.tag_id, x.gas_day" in sql  # slices of a rebuild and new batches may overlap


def test_timescale_calls_are_literal_and_checked() -> None:
    start = dt.datetime(2026, 3, 8, 6, tzinfo=dt.timezone(dt.timedelta(hours=-6)))
    assert refresh_cagg("readings_1h", start, None) == (
        "CALL refresh_continuous_aggregate('readings_1h', TIMESTAMPTZ '2026-03-08T12:00:00+00:00', NULL)")
    with pytest.raises(ValueError, match="not a continuous aggregate"):
        refresh_cagg("readings; DROP TABLE tags", None, None)
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh_cagg("readings_1m", dt.datetime(2026, 1, 1), None)  # naive on purpose
    assert "show_chunks('readings'" in compress_candidates("readings")
    with pytest.raises(ValueError, match="compression"):
        compress_candidates("readings_1h")


def test_policies_are_reconciled_only_when_the_plan_changes() -> None:
    off = cfg()
    assert policy_statements(off, None) == []
    on = cfg(storage={"use_timescale_policies": True, "compress_after": "7d"},
             retention={"raw": "90d", "rollup_1m": "365d", "rollup_1h": None, "rollup_1d": None},
             rollups={"refresh_interval": "30s"})
    plan = policy_statements(on, None)
    assert plan[0] == ("SELECT add_continuous_aggregate_policy('readings_1m', start_offset => INTERVAL "
                       "'7776000 seconds', end_offset => NULL, schedule_interval => INTERVAL '30 seconds', "
                       "if_not_exists => true)")
    assert "'readings_1d', start_offset => NULL" in plan[2]  # 1h is kept forever
    assert plan[3].startswith("SELECT add_compression_policy('readings', compress_after => INTERVAL '604800")
    assert [p.split("'")[1] for p in plan[4:]] == ["readings", "readings_1m"]  # retention policies
    assert policy_statements(on, plan) == []
    changed = policy_statements(on.model_copy(update={"rollups": on.rollups.model_copy(
        update={"refresh_interval": 60.0})}), plan)
    assert changed[0].startswith("SELECT remove_") and changed[-1].startswith("SELECT add_retention_policy")
    assert all(s.startswith("SELECT remove_") for s in policy_statements(off, plan))


def test_retention_guards_follow_the_source_level() -> None:
    now = int(dt.datetime(2026, 11, 24, 5, 41, tzinfo=dt.UTC).timestamp() * US)
    g = Guards.at(now, cfg(retention={"raw": "90d", "rollup_1m": "365d", "rollup_1h": None, "rollup_1d": None}))
    assert g.m1 == dt.datetime(2026, 8, 26, 7, tzinfo=dt.UTC)  # now - 90 d + 1 h, next full hour
    assert g.h1 == dt.datetime(2025, 11, 24, 7, tzinfo=dt.UTC)
    assert g.d1 == g.gasday_from_1h == dt.datetime(1900, 1, 1, tzinfo=dt.UTC)  # nothing below 1d expires
    assert g.gasday_from_1m == g.h1


def test_report_facts_export_lag_for_every_resolution() -> None:
    r = RefreshReport(batches=3, rows=10, buckets={"1m": 4}, lag_seconds=1.5, caught_up=False)
    facts = r.facts()
    assert facts["lag_seconds"] == {"1m": 1.5, "1h": 1.5, "1d": 1.5, "gasday": 1.5}
    assert facts["behind"] is True and facts["rows"] == 10
    idle = RefreshReport().facts()
    assert set(idle) == {"lag_seconds"}
    assert "skipped" in RefreshReport(busy=True).facts()


def test_default_jobs_and_partition_names() -> None:
    jobs = default_jobs(cfg(rollups={"refresh_interval": "15s"}))
    assert [type(j) for j in jobs] == [PartitionsAhead, RollupRefresh, RawRetention, Compression]
    assert jobs[1].interval == 15.0
    assert rollup_partition_name("readings_1m", dt.date(2026, 3, 1)) == "readings_1m_p202603"
    with pytest.raises(ValueError, match="not a partitioned"):
        rollup_partition_name("readings_1d", dt.date(2026, 3, 1))
