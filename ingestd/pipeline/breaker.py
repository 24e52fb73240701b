"""pybreaker glue: breakers whose state is exported as a metric, used with ``with breaker.calling():``
around awaits (pybreaker's ``call_async`` needs Tornado), and capped full-jitter backoff.

* :func:`make_breaker` — a pybreaker breaker exporting ``ingestd_breaker_state{kind,name}``; with a
  ``backoff`` its open period grows after every failed trial call (jittered, capped) and shrinks back
  when a call succeeds, so a dead dependency is retried ever less often but never less than once per
  ``backoff.cap`` seconds.
* :class:`BreakerGate` — readiness of such a breaker measured on the monotonic clock (pybreaker uses
  the wall clock, so a clock step backwards would otherwise hold the breaker open for that long).
* :class:`Backoff` — capped exponential backoff with full jitter, optionally with a floor.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from typing import Any

import pybreaker

from ..metrics import BREAKER_STATES, Metrics

__all__ = ["Backoff", "BreakerGate", "make_breaker"]


class Backoff:
    """Capped exponential backoff with full jitter: sleep U(floor, min(cap, initial·2^n))."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None, *, floor: float = 0.0) -> None:
        self.initial = max(initial, 0.001)
        self.cap = cap
        self.floor = max(0.0, floor)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        step = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(min(self.floor, step), step)

    def reset(self) -> None:
        self.attempt = 0


class _Export(pybreaker.CircuitBreakerListener):
    """Exports the state; with a backoff, re-arms the open period on every trip."""

    def __init__(self, metrics: Metrics, kind: str, name: str, backoff: Backoff | None) -> None:
        self._gauge = metrics.breaker_state.labels(kind, name)
        self._gauge.set(0)
        self._backoff = backoff
        self.opened_mono: float | None = None

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = str(new_state.name)
        self._gauge.set(BREAKER_STATES.get(name, 2))
        if name == "open":
            self.opened_mono = time.monotonic()
            if self._backoff is not None:
                cb.reset_timeout = self._backoff.next()
        elif name == "closed":
            self.opened_mono = None
            if self._backoff is not None:
                self._backoff.reset()


def make_breaker(metrics: Metrics, kind: str, name: str, *, fail_max: int, reset_timeout: float,
                 backoff: Backoff | None = None,
                 counts: tuple[type[BaseException], ...] | None = None) -> Any:
    """A breaker that re-raises the original error when it trips (not CircuitBreakerError).

    ``counts``: only these exception types count as failures (default: every exception)."""
    exclude: list[Any] = []
    if counts is not None:
        exclude.append(lambda exc: not isinstance(exc, counts))
    return pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=reset_timeout, exclude=exclude,
        name=f"{kind}:{name}", listeners=[_Export(metrics, kind, name, backoff)], throw_new_error_on_trip=False,
    )


class BreakerGate:
    """One dependency (a tenant database): a breaker with jittered, capped open periods.

    ``ready()`` says whether a call would be let through now; ``calling()`` wraps the call like
    pybreaker's ``calling()`` but half-opens the breaker itself once the open period has elapsed on
    the monotonic clock.
    """

    def __init__(self, metrics: Metrics, kind: str, name: str, *, fail_max: int, backoff: Backoff,
                 counts: tuple[type[BaseException], ...] | None = None) -> None:
        self.backoff = backoff
        self.breaker: Any = make_breaker(metrics, kind, name, fail_max=fail_max, reset_timeout=backoff.initial,
                                         backoff=backoff, counts=counts)
        self._export: _Export = self.breaker.listeners[0]

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def remaining(self) -> float:
        """Seconds until a call would be let through (0 when closed, half-open or due)."""
        if self.breaker.current_state != "open":
            return 0.0
        opened = self._export.opened_mono
        if opened is None:
            return 0.0
        return max(0.0, float(self.breaker.reset_timeout) - (time.monotonic() - opened))

    def ready(self) -> bool:
        return self.remaining() <= 0.0

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Guard one call; raises ``pybreaker.CircuitBreakerError`` while the breaker is open."""
        if self.breaker.current_state == "open" and self.ready():
            self.breaker.half_open()
        with self.breaker.calling():
            yield
