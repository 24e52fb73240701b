"""Inbox/batcher: flush on size or age, bounded with backpressure, drains on close."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ingestd.model import Batch
from ingestd.pipeline.inbox import Inbox


def rows(n: int, start: int = 0) -> Batch:
    k = np.arange(start, start + n, dtype=np.int32)
    return Batch.of(k, k.astype(np.int64), k.astype(np.float64))


async def test_flush_on_size() -> None:
    ib = Inbox(max_rows=10_000, batch_rows=100, batch_age=60)
    for i in range(3):
        await ib.put(rows(40, i * 40))
    t0 = time.monotonic()
    b = await ib.take()
    assert b is not None and len(b) == 80  # whole batches up to batch_rows
    assert time.monotonic() - t0 < 1
    assert ib.rows == 40


async def test_flush_on_age() -> None:
    ib = Inbox(max_rows=10_000, batch_rows=1000, batch_age=0.05)
    await ib.put(rows(5))
    t0 = time.monotonic()
    b = await asyncio.wait_for(ib.take(), 2)
    assert b is not None and len(b) == 5
    assert 0.03 <= time.monotonic() - t0 < 1


async def test_backpressure_blocks_producer_until_space() -> None:
    ib = Inbox(max_rows=100, batch_rows=50, batch_age=10)
    await ib.put(rows(100))
    producer = asyncio.create_task(ib.put(rows(10, 100)))
    await asyncio.sleep(0)
    assert not producer.done()
    assert ib.statistics().waiting_producers == 1
    taken = await ib.take()
    assert taken is not None
    await asyncio.wait_for(producer, 2)
    assert ib.rows == 110 - len(taken)


async def test_oversized_batch_is_accepted_when_empty() -> None:
    ib = Inbox(max_rows=10, batch_rows=5, batch_age=10)
    await asyncio.wait_for(ib.put(rows(50)), 1)
    assert ib.rows == 50


async def test_close_flushes_remaining_then_returns_none() -> None:
    ib = Inbox(max_rows=100, batch_rows=50, batch_age=10)
    await ib.put(rows(3))
    ib.close()
    b = await asyncio.wait_for(ib.take(), 1)
    assert b is not None and len(b) == 3
    assert await asyncio.wait_for(ib.take(), 1) is None
