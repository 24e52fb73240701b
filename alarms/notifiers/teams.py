"""Teams Workflows webhook sender (the only module that imports httpx).

``await notifier.send(route.webhook, body)`` posts one prepared card body and returns a typed
:class:`SendResult`; it never raises for HTTP or network problems:

* 2xx (Workflows answers **202 Accepted**: accepted, not necessarily shown) → ``ACCEPTED``;
* network errors, timeouts, 408, 429 (``Retry-After`` honoured, capped) and 5xx → retried with exponential
  backoff and full jitter until the retry deadline → ``EXHAUSTED`` if it never succeeds;
* any other status (400/401/403/404/413 …) → ``REJECTED`` at once, no retry;
* unusable webhook (secret unavailable, bad URL) or oversized body → ``INVALID`` without sending.

Anything but ``ACCEPTED`` means: raise the "notification channel failed" system alarm and fail over to the
route's fallback (:func:`alarms.notifiers.sender.deliver` does both). Delivery is at-least-once: a timeout
after Teams accepted the post leads to a second identical card, recognisable by its event id + sequence.

Sends to one webhook are serialised (ordering per alarm is preserved) and paced by a token bucket
(default 1/s) and a 60-per-30-s window. The webhook URL is a secret: it never appears in results, logs,
exceptions or reprs, and a logging filter scrubs it from httpx/httpcore records.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import httpx

from ingestd.config.types import Secret, SecretUnavailable

from .cards import HARD_LIMIT_BYTES, encode
from .ratelimit import WebhookLimiter

__all__ = ["RetryPolicy", "SendOutcome", "SendResult", "TeamsNotifier", "webhook_id"]

log = logging.getLogger(__name__)
_LEGACY_THROTTLE: Final = b"Microsoft Teams endpoint returned HTTP error 429"


class SendOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    """Permanent client error (4xx other than 408/429): not retried."""
    EXHAUSTED = "exhausted"
    """Transient errors until the retry deadline (or attempt cap)."""
    INVALID = "invalid"
    """Not sent: webhook unusable or body too large."""


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: SendOutcome
    attempts: int
    status: int | None
    """Last HTTP status, if any response was received."""
    detail: str
    """Human-readable, secret-free (e.g. ``"HTTP 503"``, ``"ConnectTimeout"``)."""
    elapsed_s: float
    webhook: str
    """:func:`webhook_id` of the target (safe to log)."""
    dedup_key: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is SendOutcome.ACCEPTED

    @property
    def fail_over(self) -> bool:
        """The caller should raise the channel-failed system alarm and use the fallback route."""
        return not self.ok


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout_s: float = 10.0
    deadline_s: float = 120.0
    base_s: float = 0.5
    cap_s: float = 30.0
    retry_after_max_s: float = 60.0
    max_attempts: int = 12

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^(attempt-1))]."""
        return float(rng() * min(self.cap_s, self.base_s * 2.0 ** (attempt - 1)))


def webhook_id(url: str) -> str:
    """Stable, non-reversible short id of a webhook URL (for logs and metrics)."""
    return "wh-" + hashlib.sha256(url.encode()).hexdigest()[:10]


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch)


class _Redact(logging.Filter):
    """Scrubs registered webhook URLs (and their query strings) from library log records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}

    def add(self, url: str) -> None:
        wid = webhook_id(url)
        base, _, query = url.partition("?")
        self.secrets[url] = wid
        self.secrets[base] = wid  # httpx may re-encode the query: the prefix and the query go separately
        if query:
            self.secrets[query] = "<redacted>"
            for key, value in parse_qsl(query):  # the SAS signature alone, however it gets re-encoded
                if key.lower() in ("sig", "signature", "code", "key", "token") and len(value) >= 6:
                    self.secrets[value] = self.secrets[quote(value, safe="")] = "<redacted>"

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        red = msg
        for secret, replacement in self.secrets.items():
            red = red.replace(secret, f"<webhook {replacement}>" if replacement.startswith("wh-") else replacement)
        if red != msg:
            record.msg, record.args = red, None
        return True


_REDACT = _Redact()
for _name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy"):
    logging.getLogger(_name).addFilter(_REDACT)


class TeamsNotifier:
    """Async sender for Teams Workflows webhooks. One instance per process; share it between routes."""

    def __init__(self, *, client: httpx.AsyncClient | None = None, retry: RetryPolicy = RetryPolicy(),
                 rate_per_s: float = 1.0, max_per_30s: int = 60,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random,
                 wall: Callable[[], float] = time.time) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": "ingestd-alarms"})
        self._own_client = client is None
        self.retry = retry
        self._rate = (rate_per_s, max_per_30s)
        self._sleep, self._mono, self._rng, self._wall = sleep, monotonic, rng, wall
        self._limiters: dict[str, WebhookLimiter] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"TeamsNotifier(webhooks={len(self._limiters)})"

    async def __aenter__(self) -> TeamsNotifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def _limiter(self, wid: str, rate: tuple[float, int] | None) -> WebhookLimiter:
        if wid not in self._limiters:
            r, w = rate or self._rate
            self._limiters[wid] = WebhookLimiter(r, w)
        return self._limiters[wid]

    async def send(self, webhook: Secret | str, body: bytes | Mapping[str, Any], *, dedup_key: str = "",
                   route: str = "", retry: RetryPolicy | None = None,
                   rate: tuple[float, int] | None = None) -> SendResult:
        """Post ``body`` (prepared bytes, or an envelope dict) to the webhook with retries and pacing."""
        policy = retry or self.retry
        start = self._mono()
        try:
            url = webhook.reveal() if isinstance(webhook, Secret) else webhook
        except SecretUnavailable as exc:
            detail = f"webhook secret unavailable: {exc}"
            return SendResult(SendOutcome.INVALID, 0, None, detail, 0.0, "wh-?", dedup_key)
        wid = webhook_id(url)
        _REDACT.add(url)
        data = body if isinstance(body, bytes) else encode(body)
        if len(data) > HARD_LIMIT_BYTES:
            return SendResult(SendOutcome.INVALID, 0, None, f"body is {len(data)} bytes (> {HARD_LIMIT_BYTES})",
                              0.0, wid, dedup_key)
        lock = self._locks.setdefault(wid, asyncio.Lock())
        async with lock:
            result = await self._attempts(url, wid, data, policy, rate, start, dedup_key)
        if not result.ok:
            log.warning("teams notification via route %r (%s) failed: %s after %d attempt(s) [%s]",
                        route, wid, result.outcome.value, result.attempts, result.detail)
        return result

    async def _attempts(self, url: str, wid: str, data: bytes, policy: RetryPolicy, rate: tuple[float, int] | None,
                        start: float, dedup_key: str) -> SendResult:
        limiter = self._limiter(wid, rate)
        attempt, status, detail = 0, None, ""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if dedup_key:
            headers["X-Ingestd-Event"] = dedup_key
        while True:
            attempt += 1
            wait = limiter.reserve(self._mono())
            if wait > 0:
                await self._sleep(wait)
            retry_after: float | None = None
            try:
                resp = await self._client.post(url, content=data, headers=headers, timeout=policy.timeout_s)
            except httpx.TimeoutException as exc:
                status, detail = None, type(exc).__name__
            except (httpx.UnsupportedProtocol, httpx.InvalidURL):
                return self._result(SendOutcome.INVALID, attempt, None, "webhook URL is not usable", start, wid,
                                    dedup_key)
            except httpx.TransportError as exc:
                status, detail = None, type(exc).__name__
            else:
                status, detail = resp.status_code, f"HTTP {resp.status_code}"
                if 200 <= status < 300 and _LEGACY_THROTTLE not in resp.content:
                    return self._result(SendOutcome.ACCEPTED, attempt, status, detail, start, wid, dedup_key)
                if not (status in (408, 429) or status >= 500 or 200 <= status < 300):
                    return self._result(SendOutcome.REJECTED, attempt, status, detail, start, wid, dedup_key)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._wall())
            delay = policy.backoff(attempt, self._rng)
            if retry_after is not None:
                delay = min(max(retry_after, 0.0), policy.retry_after_max_s)
            if attempt >= policy.max_attempts or self._mono() - start + delay > policy.deadline_s:
                return self._result(SendOutcome.EXHAUSTED, attempt, status, detail, start, wid, dedup_key)
            await self._sleep(delay)

    def _result(self, outcome: SendOutcome, attempts: int, status: int | None, detail: str, start: float, wid: str,
                dedup_key: str) -> SendResult:
        return SendResult(outcome, attempts, status, detail, self._mono() - start, wid, dedup_key)
