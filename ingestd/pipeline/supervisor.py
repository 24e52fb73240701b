"""Runs one source: breaker, capped full-jitter backoff, typed-error policy, log-once status.

Policy by error type (DESIGN §3):

* :class:`SourceUnavailable` — counted by the breaker, retried after ``Backoff.next()``;
  an open breaker additionally holds retries for ``breaker_reset`` seconds;
* :class:`SourceAuthError` — parked: no retries until the configuration changes (reload);
* :class:`SourceConfigError` — disabled until the configuration changes;
* anything else is a bug in an adapter: logged with its traceback, counted, retried with backoff
  so that one broken adapter never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pybreaker

from ..config.base import SourceConfig
from ..errors import SourceAuthError, SourceConfigError, SourceError, SourceUnavailable
from ..metrics import Metrics
from ..ports import Source, SourceContext
from .breaker import Backoff, make_breaker

__all__ = ["RunState", "SourceRunner"]

log = logging.getLogger(__name__)


class RunState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    PARKED = "parked"      # auth failure: waiting for a config change
    DISABLED = "disabled"  # configuration rejected by the device
    STOPPED = "stopped"
    STANDBY = "standby"    # another instance holds the lease


ContextFactory = Callable[["SourceRunner"], SourceContext]
Lease = Callable[[], Awaitable[Any]]


class SourceRunner:
    def __init__(
        self,
        cfg: SourceConfig,
        factory: Callable[[SourceConfig], Source],
        make_context: ContextFactory,
        metrics: Metrics,
        *,
        mark_down: Callable[[str], None],
        lease: Callable[[], Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._factory = factory
        self._make_context = make_context
        self._metrics = metrics
        self._mark_down = mark_down
        self._lease = lease
        self.breaker = make_breaker(metrics, "source", cfg.name, fail_max=cfg.breaker_fail_max,
                                    reset_timeout=cfg.breaker_reset)
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self.state = RunState.STARTING
        self.last_error: str | None = None
        self.attempts = 0

    def healthy(self) -> None:
        """Called by the context when the source connects or delivers data: resets breaker and backoff."""
        if self.backoff.attempt or self.breaker.fail_counter:
            self.backoff.reset()
            self.breaker.close()
        self.state = RunState.RUNNING

    async def run(self) -> None:
        if self._lease is not None:
            async with self._lease() as held:
                if not held:
                    return
                await self._loop()
        else:
            await self._loop()

    async def _loop(self) -> None:
        while True:
            await self._wait_breaker()
            self.attempts += 1
            self.state = RunState.RUNNING if self.attempts == 1 else RunState.STARTING
            try:
                with self.breaker.calling():
                    source = self._factory(self.cfg)
                    await source.run(self._make_context(self))
                raise SourceUnavailable(f"source {self.name}: run() returned without an error")
            except pybreaker.CircuitBreakerError:
                continue
            except SourceAuthError as exc:
                self._failed(exc, "auth")
                self.state = RunState.PARKED
                log.error("source %s: authentication rejected, parked until the configuration changes: %s",
                          self.name, exc)
                await asyncio.Event().wait()  # parked; a reload replaces this runner
            except SourceConfigError as exc:
                self._failed(exc, "config")
                self.state = RunState.DISABLED
                log.error("source %s: disabled, the device rejected its configuration: %s", self.name, exc)
                await asyncio.Event().wait()
            except SourceError as exc:
                self._failed(exc, "unavailable")
            except Exception as exc:  # a bug in an adapter must not stop the daemon (logged with traceback)
                self._failed(exc, "bug")
                log.exception("source %s: unexpected error in adapter (restarting with backoff)", self.name)
            self.state = RunState.BACKOFF
            delay = self.backoff.next()
            await asyncio.sleep(delay)

    def _failed(self, exc: BaseException, kind: str) -> None:
        msg = str(exc) or type(exc).__name__
        self.last_error = msg
        self._metrics.source_restarts.labels(self.name, kind).inc()
        self._mark_down(msg)

    async def _wait_breaker(self) -> None:
        """Hold retries while the breaker is open, timed on the monotonic clock (a wall-clock step
        neither shortens nor stretches it), then let one attempt through (half-open)."""
        if self.breaker.current_state != "open":
            return
        opened = getattr(self.breaker.listeners[0], "opened_mono", None)
        remaining = self.breaker.reset_timeout - (time.monotonic() - opened) if opened is not None else 0.0
        if remaining > 0:
            self.state = RunState.BACKOFF
            await asyncio.sleep(remaining)
        self.breaker.half_open()
