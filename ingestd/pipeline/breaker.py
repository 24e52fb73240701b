"""pybreaker glue: breakers whose state is exported as a metric, used with ``with breaker.calling():``
around awaits (pybreaker's ``call_async`` needs Tornado)."""

from __future__ import annotations

import random
from typing import Any

import pybreaker

from ..metrics import BREAKER_STATES, Metrics

__all__ = ["Backoff", "make_breaker"]


class _Export(pybreaker.CircuitBreakerListener):
    def __init__(self, metrics: Metrics, kind: str, name: str) -> None:
        self._gauge = metrics.breaker_state.labels(kind, name)
        self._gauge.set(0)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._gauge.set(BREAKER_STATES.get(str(new_state.name), 2))


def make_breaker(metrics: Metrics, kind: str, name: str, *, fail_max: int, reset_timeout: float) -> Any:
    """A breaker that re-raises the original error when it trips (not CircuitBreakerError)."""
    return pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=reset_timeout, name=f"{kind}:{name}",
        listeners=[_Export(metrics, kind, name)], throw_new_error_on_trip=False,
    )


class Backoff:
    """Capped exponential backoff with full jitter: sleep U(0, min(cap, initial·2^n))."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = max(initial, 0.001)
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        step = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(0, step)

    def reset(self) -> None:
        self.attempt = 0
