"""The building blocks of store-and-forward, without I/O: the tenant database breaker (jittered,
capped open periods on the monotonic clock, exported state) and the bounded, fair inbox."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import numpy as np
import pybreaker
import pytest

from ingestd.errors import StorageUnavailable
from ingestd.metrics import Metrics
from ingestd.model import Batch, Durability
from ingestd.pipeline.breaker import Backoff, BreakerGate
from ingestd.pipeline.inbox import Inbox
from tests.support.wait import eventually


def test_backoff_floor_and_cap() -> None:
    b = Backoff(1.0, 5.0, random.Random(7), floor=0.25)
    delays = [b.next() for _ in range(200)]
    assert min(delays) >= 0.25
    assert max(delays) <= 5.0
    assert max(delays[:1]) <= 1.0  # first step is capped at `initial`
    assert max(delays[5:]) > 4.0  # later steps spread up to the cap


def gate(metrics: Metrics, **kw: Any) -> BreakerGate:
    return BreakerGate(metrics, "tenant_db", "acme", fail_max=1,
                       backoff=Backoff(kw.pop("initial", 0.05), kw.pop("cap", 0.2), random.Random(1), floor=0.01),
                       counts=(StorageUnavailable, TimeoutError))


def fail(g: BreakerGate, exc: BaseException) -> None:
    try:
        with g.calling():
            raise exc
    except (StorageUnavailable, TimeoutError, ValueError, pybreaker.CircuitBreakerError):
        pass


def state(m: Metrics) -> float | None:
    return m.registry.get_sample_value("ingestd_breaker_state", {"kind": "tenant_db", "name": "acme"})


async def test_gate_opens_on_failure_and_half_opens_on_the_monotonic_clock() -> None:
    m = Metrics()
    g = gate(m)
    assert g.ready()
    assert state(m) == 0
    fail(g, StorageUnavailable("down"))
    assert g.state == "open"
    assert state(m) == 2
    assert 0 < g.remaining() <= 0.05
    with pytest.raises(pybreaker.CircuitBreakerError), g.calling():
        pass
    # wall clock is irrelevant: pretend pybreaker's own (wall-clock) open time is in the future
    g.breaker._state_storage.opened_at = g.breaker._state_storage.opened_at.replace(year=2100)
    await eventually(g.ready, timeout=2, interval=0.005, what="gate ready")
    with g.calling():
        pass  # half-open trial succeeds → closed
    assert g.state == "closed"
    assert state(m) == 0
    assert g.backoff.attempt == 0


async def test_gate_open_period_grows_with_failures_up_to_the_cap() -> None:
    m = Metrics()
    g = gate(m, initial=0.05, cap=0.2)
    periods = []
    for _ in range(8):
        fail(g, StorageUnavailable("down"))
        periods.append(g.breaker.reset_timeout)
        await eventually(g.ready, timeout=2, interval=0.005, what="gate ready")
    assert all(0.01 <= p <= 0.2 for p in periods)
    assert max(periods[3:]) > 0.1


def test_data_errors_do_not_open_the_gate() -> None:
    m = Metrics()
    g = gate(m)
    fail(g, ValueError("the database rejected this batch"))
    assert g.state == "closed"
    assert g.ready()


def rows(n: int) -> Batch:
    k = np.arange(n, dtype=np.int32)
    return Batch.of(k, k.astype(np.int64), k.astype(np.float64))


async def test_inbox_bound_is_strict_and_producers_are_served_in_order() -> None:
    ib = Inbox(max_rows=1000, batch_rows=400, batch_age=60)
    await ib.put(rows(900))
    order: list[str] = []

    async def producer(name: str, n: int) -> None:
        await ib.put(rows(n))
        order.append(name)

    big = asyncio.create_task(producer("big", 600))
    await asyncio.sleep(0)
    small = asyncio.create_task(producer("small", 50))  # would fit now, but must not overtake "big"
    await asyncio.sleep(0)
    assert ib.statistics().waiting_producers == 2
    assert ib.rows == 900
    taken = ib.take_nowait(max_rows=1000)
    assert taken is not None
    assert len(taken) == 900
    await asyncio.wait_for(asyncio.gather(big, small), 2)
    assert order == ["big", "small"]
    assert ib.rows == 650
    assert ib.rows <= ib.max_rows


async def test_cancelled_waiting_producer_leaves_no_reservation() -> None:
    ib = Inbox(max_rows=1000, batch_rows=500, batch_age=60)
    await ib.put(rows(1000))
    waiting = asyncio.create_task(ib.put(rows(500)))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    ib.take_nowait(max_rows=1000)
    assert ib.rows == 0
    assert ib.statistics().waiting_producers == 0


async def test_take_expired_takes_only_old_batches() -> None:
    ib = Inbox(max_rows=10_000, batch_rows=1000, batch_age=60)
    await ib.put(rows(10))
    cutoff = time.monotonic()
    ib._items[0] = (ib._items[0][0] - 5, ib._items[0][1])  # queued 5 s ago
    await ib.put(rows(20))
    old = ib.take_expired(cutoff - 1)
    assert old is not None
    assert len(old) == 10
    assert ib.take_expired(cutoff - 1) is None
    assert ib.rows == 20


async def test_a_batch_larger_than_a_flush_is_written_in_parts_and_its_token_completes_once() -> None:
    ib = Inbox(max_rows=100_000, batch_rows=400, batch_age=60)
    ib.split_rows = 400  # the tenant writer sets this from its measured throughput
    done: list[int] = []
    b = rows(1000)
    b.origin = {"field": 1000}
    b.tokens = [Durability(lambda: done.append(1))]
    await ib.put(b)
    parts = []
    while (p := ib.take_nowait()) is not None:
        parts.append(p)
    assert [len(p) for p in parts] == [400, 400, 200]
    assert sum(p.origin["field"] for p in parts) == 1000
    np.testing.assert_array_equal(np.concatenate([p.key for p in parts]), np.arange(1000))
    for p in parts[:-1]:
        p.release()
        assert done == []
    parts[-1].release()
    assert done == [1]
