"""Waiting on conditions outside our control (rows in a database, a child process's state).

Everything in-process waits on events; conditions owned by another process can only be observed, so
``eventually`` re-checks them at a short interval until a deadline — never a bare fixed sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually", "eventually_sync"]

T = TypeVar("T")


async def eventually(predicate: Callable[[], T | Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05,
                     what: str = "condition") -> T:
    """Return the first truthy result of ``predicate()`` (sync or async), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        res = predicate()
        last = await res if inspect.isawaitable(res) else res  # type: ignore[assignment]
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


def eventually_sync(predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05,
                    what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
