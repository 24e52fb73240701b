"""Heartbeat and staleness in the core, for every protocol.

* Heartbeat — report by exception with a maximum time between stored samples: a tag with a
  ``heartbeat`` whose source is connected (not stale) but sent nothing worth storing for that long
  (an OPC UA subscription or an MQTT device that only reports changes) gets its current value stored
  again, stamped now. A stale tag never gets a heartbeat: the last good value is never re-emitted
  as current for a source that is down.
* Staleness — a source with ``stale_after`` marks each of its tags stale in the live cache when
  that tag has not been updated for that long (a device that went quiet behind a healthy broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from ..gctune import freeze_long_lived
from ..model import Batch, Quality, now_us
from .router import SourceRoute
from .tags import TagRegistry
from .tenant import TenantPipeline

__all__ = ["heartbeat_batch", "housekeeping_loop", "mark_stale"]

_NEVER = np.iinfo(np.int64).min


def heartbeat_batch(reg: TagRegistry, now_us: int) -> Batch | None:
    """Samples due for a heartbeat (value held, stamped ``now_us``); advances the stored state."""
    n = len(reg)
    if n == 0:
        return None
    hb = reg.heartbeat_us[:n]
    due = (
        (hb > 0)
        & ~reg.stale[:n]
        & (reg.live_quality[:n] == Quality.GOOD)
        & (reg.stored_ts[:n] != _NEVER)
        & (now_us - reg.stored_ts[:n] >= hb)
    )
    keys = np.flatnonzero(due).astype(np.int32)
    if keys.shape[0] == 0:
        return None
    value = reg.live_value[keys].copy()
    quality = reg.live_quality[keys].astype(np.uint8)
    status = reg.live_status[keys].copy()
    ts = np.full(keys.shape[0], now_us, dtype=np.int64)
    reg.stored_value[keys] = value
    reg.stored_ts[keys] = now_us
    reg.stored_quality[keys] = quality
    b = Batch(keys, ts, value, quality, status, now_us)
    b.origin = {"heartbeat": int(keys.shape[0])}
    return b


def mark_stale(reg: TagRegistry, keys: npt.NDArray[np.int32], now_us: int, stale_after_us: int) -> int:
    """Mark ``keys`` stale when not updated within ``stale_after_us``; returns how many turned stale."""
    if keys.shape[0] == 0:
        return 0
    old = (now_us - reg.live_recv[keys] > stale_after_us) & ~reg.stale[keys]
    turned = keys[old]
    reg.stale[turned] = True
    return int(turned.shape[0])


async def housekeeping_loop(
    tenants: Callable[[], Iterable[TenantPipeline]],
    routes: Callable[[], Iterable[tuple[SourceRoute, float | None]]],
    interval: float = 1.0,
) -> None:
    """Every ``interval``: heartbeat samples into each tenant's inbox; stale marking per source.
    Once the sources have settled (a minute after start) the long-lived objects are frozen out of
    the garbage collector's full collections (see :mod:`ingestd.gctune`)."""
    settle = asyncio.get_running_loop().time() + 60.0
    while True:
        await asyncio.sleep(interval)
        if settle and asyncio.get_running_loop().time() >= settle:
            settle = 0.0
            freeze_long_lived()
        now = now_us()
        for route, stale_after in routes():
            if stale_after:
                for tp in route.tenants:
                    mark_stale(tp.registry, route.keys_for(tp), now, int(stale_after * 1e6))
        for tp in list(tenants()):
            batch = heartbeat_batch(tp.registry, now)
            if batch is not None and not tp.inbox.closed:
                await tp.inbox.put(batch)
