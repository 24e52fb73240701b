"""Per-webhook send budget: a token bucket (default 1 request/s) plus a sliding window (≤ 60 per 30 s).

Pure and clock-injected: :meth:`WebhookLimiter.reserve` books the next slot and returns how long the caller
must wait before sending. Reservations are made one at a time (the notifier sends sequentially per
webhook), so the budget holds however many alarms arrive at once.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow", "TokenBucket", "WebhookLimiter"]


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._last: float | None = None

    def _level(self, now: float) -> float:
        if self._last is None:
            return self._tokens
        return min(self.burst, self._tokens + (now - self._last) * self.rate)

    def delay(self, now: float) -> float:
        """Seconds until one token is available."""
        return max(0.0, (1.0 - self._level(now)) / self.rate)

    def take(self, at: float) -> None:
        self._tokens = self._level(at) - 1.0
        self._last = at


class SlidingWindow:
    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be ≥ 1 and window positive")
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()

    def delay(self, now: float) -> float:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[len(self._times) - self.limit] + self.window - now

    def take(self, at: float) -> None:
        self._times.append(at)


class WebhookLimiter:
    """Both budgets; ``reserve(now)`` returns the wait in seconds and books the slot at ``now + wait``."""

    __slots__ = ("bucket", "window")

    def __init__(self, rate_per_s: float = 1.0, max_per_30s: int = 60) -> None:
        self.bucket = TokenBucket(rate_per_s)
        self.window = SlidingWindow(max_per_30s, 30.0)

    def reserve(self, now: float) -> float:
        wait = max(self.bucket.delay(now), self.window.delay(now))
        at = now + wait
        wait = max(wait, self.window.delay(at))  # both delays only shrink with time: one re-check suffices
        at = now + wait
        self.bucket.take(at)
        self.window.take(at)
        return wait
