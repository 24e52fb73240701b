"""Pure alarm detection: samples in, debounced :class:`~alarms.model.Condition` changes out.

Each evaluator owns a small, JSON-serialisable state (:meth:`snapshot` / :meth:`restore`) and never reads
a clock: the caller passes ``now`` (µs). Delays are absolute deadlines (``pending_since + delay``), so a
persisted evaluator resumes its on-delay after a restart (scenario 37) and a late :meth:`tick` still stamps
the change at the exact deadline.

Semantics shared by every evaluator:

* a sample whose timestamp is not newer than the last accepted one for the same input is ignored
  (duplicates and out-of-order samples are deterministic no-ops);
* BAD quality or a NaN/±inf value never satisfies a limit: evaluation *freezes* (the debounced output
  stays, pending delays are cancelled) until a usable sample arrives — no LOLO on a 0/NaN after a comms
  failure, and nothing at all before the first good value (start-up, Bad_WaitingForInitialData);
* timers (on/off delays) run on the engine clock ``now``; rates use the samples' own timestamps (actual Δt).

Evaluators: :class:`LimitEvaluator` (HIHI/HI/LO/LOLO, exclusive levels, per-limit deadband/delays/inclusive),
:class:`DeviationEvaluator` (PV − SP against ± limits, moving SP), :class:`RateEvaluator` (units per minute
over a period). Digital, discrepancy, bad-quality and comm-loss evaluators are in :mod:`alarms.signals`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from ingestd.model import STATUS_OK, Quality

from .model import US, Condition, Level

__all__ = [
    "Debounce",
    "DeviationEvaluator",
    "Evaluator",
    "LimitEvaluator",
    "LimitParams",
    "RateEvaluator",
    "RateParams",
    "Sample",
    "admissible",
]

_LEVEL_ORDER: Final = (Level.HIHI, Level.LOLO, Level.HI, Level.LO)
"""Exclusive-level preference: the most severe active level wins, high side first."""
_MAX_RATE_WINDOW: Final = 10_000


@dataclass(frozen=True, slots=True)
class Sample:
    ts: int
    """Source timestamp, µs UTC."""
    value: float
    quality: int = Quality.GOOD
    status: int = STATUS_OK

    @property
    def usable(self) -> bool:
        """GOOD/UNCERTAIN with a finite value."""
        return self.quality != Quality.BAD and math.isfinite(self.value)


def admissible(sample: Sample, now: int, max_future_us: int) -> bool:
    """Whether the engine should feed ``sample`` at ``now``: a timestamp further than ``max_future_us`` ahead
    of the engine clock (device clock skew) would make every later, correct sample look out of order, so such
    samples are dropped (and counted) before evaluation. Old timestamps are fine: ordering is per input."""
    return sample.ts <= now + max_future_us


class Evaluator(Protocol):
    """What the engine needs from a sample-driven evaluator."""

    @property
    def current(self) -> Condition: ...

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]: ...

    def tick(self, now: int) -> list[Condition]: ...

    def next_deadline(self) -> int | None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, snap: dict[str, Any]) -> None: ...


class Debounce:
    """On-delay / off-delay filter of a boolean, with its pending change as an absolute deadline."""

    __slots__ = ("out", "pending_since")

    def __init__(self, out: bool = False, pending_since: int | None = None) -> None:
        self.out = out
        self.pending_since = pending_since

    def due(self, on_us: int, off_us: int) -> int | None:
        if self.pending_since is None:
            return None
        return self.pending_since + (off_us if self.out else on_us)

    def advance(self, now: int, on_us: int, off_us: int) -> int | None:
        """Apply a pending change whose deadline is ≤ now; return its time."""
        due = self.due(on_us, off_us)
        if due is not None and due <= now:
            self.out, self.pending_since = not self.out, None
            return due
        return None

    def feed(self, raw: bool, at: int, on_us: int, off_us: int) -> list[tuple[int, bool]]:
        """Feed the raw condition observed at ``at``; return the output flips (time, new value) in order."""
        flips: list[tuple[int, bool]] = []
        t = self.advance(at, on_us, off_us)
        if t is not None:
            flips.append((t, self.out))
        if raw == self.out:
            self.pending_since = None
        elif self.pending_since is None:
            self.pending_since = at
            t = self.advance(at, on_us, off_us)  # zero delay: immediate
            if t is not None:
                flips.append((t, self.out))
        return flips

    def advance_list(self, now: int, on_us: int, off_us: int) -> list[tuple[int, bool]]:
        t = self.advance(now, on_us, off_us)
        return [] if t is None else [(t, self.out)]

    def freeze(self, at: int, on_us: int, off_us: int) -> list[tuple[int, bool]]:
        """Bad data: apply what was already due, then cancel the pending change."""
        t = self.advance(at, on_us, off_us)
        self.pending_since = None
        return [] if t is None else [(t, self.out)]

    def dump(self) -> list[Any]:
        return [self.out, self.pending_since]

    @classmethod
    def load(cls, d: Sequence[Any]) -> Debounce:
        return cls(bool(d[0]), None if d[1] is None else int(d[1]))


@dataclass(frozen=True, slots=True)
class LimitParams:
    level: Level
    setpoint: float
    deadband: float = 0.0
    on_delay_us: int = 0
    off_delay_us: int = 0
    inclusive: bool = True
    """``value == setpoint`` is in alarm (Ignition's "inclusive" flag)."""

    def enters(self, v: float) -> bool:
        if self.level.direction > 0:
            return v >= self.setpoint if self.inclusive else v > self.setpoint
        return v <= self.setpoint if self.inclusive else v < self.setpoint

    def holds(self, v: float) -> bool:
        """While active: stays active until the value is beyond the deadband on the normal side."""
        if self.deadband <= 0:
            return self.enters(v)
        if self.level.direction > 0:
            return v >= self.setpoint - self.deadband
        return v <= self.setpoint + self.deadband


class LimitEvaluator:
    """Exclusive HIHI/HI/LO/LOLO limit alarm on one value (role ``"pv"``).

    Each level has its own hysteresis (deadband) and debounce (on/off delays); the output level is the most
    severe debounced level. Coming down from HIHI to HI changes the level only; going up is an escalation
    the state machine pages (T14)."""

    roles: tuple[str, ...] = ("pv",)

    def __init__(self, limits: Iterable[LimitParams]) -> None:
        self._limits: dict[Level, LimitParams] = {}
        self._hyst: dict[Level, bool] = {}
        self._deb: dict[Level, Debounce] = {}
        self._last_ts: int | None = None
        self._last_value: float | None = None
        self._cur = Condition(False, 0)
        self._set_limits(limits)

    def _set_limits(self, limits: Iterable[LimitParams]) -> None:
        new = {p.level: p for p in limits}
        if not new:
            raise ValueError("a limit alarm needs at least one limit")
        self._hyst = {lv: self._hyst.get(lv, False) for lv in new}
        self._deb = {lv: self._deb.get(lv, Debounce()) for lv in new}
        self._limits = new

    @property
    def current(self) -> Condition:
        return self._cur

    @property
    def limits(self) -> tuple[LimitParams, ...]:
        return tuple(self._limits.values())

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        if self._last_ts is not None and sample.ts <= self._last_ts:
            return []
        self._last_ts = sample.ts
        if not sample.usable:
            return self._apply([(t, lv, out) for lv, p in self._limits.items()
                                for t, out in self._deb[lv].freeze(now, p.on_delay_us, p.off_delay_us)])
        return self.feed_value(sample.value, now)

    def feed_value(self, v: float, now: int) -> list[Condition]:
        """Evaluate a usable value observed at ``now`` (also used by :class:`DeviationEvaluator`)."""
        if not math.isfinite(v):
            return self._apply([(t, lv, out) for lv, p in self._limits.items()
                                for t, out in self._deb[lv].freeze(now, p.on_delay_us, p.off_delay_us)])
        flips: list[tuple[int, Level, bool]] = []
        held = self._last_value
        for lv, p in self._limits.items():
            raw = p.holds(v) if self._hyst[lv] else p.enters(v)
            self._hyst[lv] = raw
            flips += [(t, lv, out) for t, out in self._deb[lv].feed(raw, now, p.on_delay_us, p.off_delay_us)]
        self._last_value = v
        return self._apply(flips, held_value=held, at_now=now)

    def quiet_range(self) -> tuple[float, float]:
        """Closed interval of GOOD values whose sample would change nothing but the last timestamp/value
        (no level flips, no delay started or cancelled): the engine's vectorised fast path skips
        :meth:`update` for them and calls :meth:`note` instead. ``lo > hi``: no such value."""
        lo, hi = -math.inf, math.inf
        for lv, p in self._limits.items():
            d, h = self._deb[lv], self._hyst[lv]
            if d.pending_since is not None or d.out != h:
                return math.inf, -math.inf
            if lv.direction > 0:
                if h:  # stays active while v >= sp - deadband (or enters) -> strictly above is safe
                    lo = max(lo, math.nextafter(p.setpoint - p.deadband if p.deadband > 0 else p.setpoint, math.inf))
                else:  # stays normal while v < sp
                    hi = min(hi, math.nextafter(p.setpoint, -math.inf))
            elif h:
                hi = min(hi, math.nextafter(p.setpoint + p.deadband if p.deadband > 0 else p.setpoint, -math.inf))
            else:
                lo = max(lo, math.nextafter(p.setpoint, math.inf))
        return lo, hi

    def note(self, role: str, ts: int, value: float) -> None:
        """Apply a quiet sample (see :meth:`quiet_range`): only the last timestamp and value change."""
        if self._last_ts is None or ts > self._last_ts:
            self._last_ts, self._last_value = ts, value

    @property
    def last_ts(self) -> int | None:
        return self._last_ts

    def tick(self, now: int) -> list[Condition]:
        flips: list[tuple[int, Level, bool]] = []
        for lv, p in self._limits.items():
            t = self._deb[lv].advance(now, p.on_delay_us, p.off_delay_us)
            if t is not None:
                flips.append((t, lv, self._deb[lv].out))
        return self._apply(flips)

    def next_deadline(self) -> int | None:
        dues = [d for lv, p in self._limits.items()
                if (d := self._deb[lv].due(p.on_delay_us, p.off_delay_us)) is not None]
        return min(dues) if dues else None

    def reconfigure(self, limits: Iterable[LimitParams], now: int) -> list[Condition]:
        """Setpoint/deadband change (MOC): keep states of levels that remain, re-evaluate the last value."""
        self._set_limits(limits)
        out = self._apply([], derive_at=now)  # a removed level may change the exclusive output
        if self._last_value is not None:
            out += self.feed_value(self._last_value, now)
        return out

    def _apply(self, flips: list[tuple[int, Level, bool]], *, held_value: float | None = None,
               at_now: int | None = None, derive_at: int | None = None) -> list[Condition]:
        """Turn per-level output flips (already applied to the debouncers) into exclusive-level changes,
        replayed in time order from the outputs before the flips."""
        ordered = sorted(flips, key=lambda f: (f[0], _LEVEL_ORDER.index(f[1])))
        outs = {lv: d.out for lv, d in self._deb.items()}
        for lv in {f[1] for f in ordered}:
            outs[lv] = not next(f[2] for f in ordered if f[1] == lv)
        steps: list[tuple[int, Level | None, bool]] = [(t, lv, val) for t, lv, val in ordered]
        if derive_at is not None:
            steps.append((derive_at, None, False))
        out: list[Condition] = []
        for t, flipped, val in steps:
            if flipped is not None:
                outs[flipped] = val
            level = next((x for x in _LEVEL_ORDER if outs.get(x)), None)
            if (level is not None) == self._cur.active and level == self._cur.level:
                continue
            value = self._last_value if at_now is None or t == at_now or held_value is None else held_value
            shown = level if level is not None else self._cur.level
            p = self._limits.get(shown) if shown is not None else None
            self._cur = Condition(level is not None, t, level, value, p.setpoint if p else self._cur.limit)
            out.append(self._cur)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "hyst": {lv.value: h for lv, h in self._hyst.items()},
            "deb": {lv.value: d.dump() for lv, d in self._deb.items()},
            "last_ts": self._last_ts, "last_value": self._last_value,
            "cur": [self._cur.active, self._cur.at, self._cur.level, self._cur.value, self._cur.limit],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        for k, h in snap.get("hyst", {}).items():
            if Level(k) in self._hyst:
                self._hyst[Level(k)] = bool(h)
        for k, d in snap.get("deb", {}).items():
            if Level(k) in self._deb:
                self._deb[Level(k)] = Debounce.load(d)
        self._last_ts = snap.get("last_ts")
        self._last_value = snap.get("last_value")
        a, at, lv, v, lim = snap.get("cur", [False, 0, None, None, None])
        self._cur = Condition(bool(a), int(at), Level(lv) if lv else None, v, lim)


class DeviationEvaluator:
    """|PV − SP| beyond ± limits (roles ``"pv"`` and ``"sp"``); the setpoint may move (OPC UA Deviation).
    Limits are offsets: HI/HIHI positive, LO/LOLO negative. Either input unusable freezes the alarm."""

    roles: tuple[str, ...] = ("pv", "sp")

    def __init__(self, limits: Iterable[LimitParams]) -> None:
        self._core = LimitEvaluator(limits)
        self._last: dict[str, Sample] = {}

    @property
    def current(self) -> Condition:
        return self._map(self._core.current)

    def _map(self, c: Condition) -> Condition:
        pv, sp = self._last.get("pv"), self._last.get("sp")
        limit = sp.value + c.limit if sp is not None and c.limit is not None else c.limit
        return Condition(c.active, c.at, c.level, pv.value if pv is not None else c.value, limit)

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        prev = self._last.get(role)
        if prev is not None and sample.ts <= prev.ts:
            return []
        self._last[role] = sample
        pv, sp = self._last.get("pv"), self._last.get("sp")
        if pv is None or sp is None:
            return []
        d = pv.value - sp.value if pv.usable and sp.usable else math.nan
        return [self._map(c) for c in self._core.feed_value(d, now)]

    def tick(self, now: int) -> list[Condition]:
        return [self._map(c) for c in self._core.tick(now)]

    def next_deadline(self) -> int | None:
        return self._core.next_deadline()

    def reconfigure(self, limits: Iterable[LimitParams], now: int) -> list[Condition]:
        return [self._map(c) for c in self._core.reconfigure(limits, now)]

    def snapshot(self) -> dict[str, Any]:
        return {"core": self._core.snapshot(),
                "last": {r: [s.ts, s.value, s.quality, s.status] for r, s in self._last.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        self._core.restore(snap.get("core", {}))
        self._last = {r: Sample(int(v[0]), float(v[1]) if v[1] is not None else math.nan, int(v[2]), int(v[3]))
                      for r, v in snap.get("last", {}).items()}


@dataclass(frozen=True, slots=True)
class RateParams:
    rate_per_min: float
    """Alarm when the rate of change reaches this many units per minute."""
    period_us: int = 60 * US
    direction: Literal["both", "rise", "fall"] = "both"
    deadband: float = 0.0
    """In units per minute: clears below ``rate_per_min - deadband``."""
    on_delay_us: int = 0
    off_delay_us: int = 0


class RateEvaluator:
    """Rate of change over ``period`` using the samples' actual Δt (irregular sampling).

    The rate at a sample is ``(v - v_a) / (t - t_a)`` scaled to units/minute, where the anchor ``a`` is the
    newest sample at least one period older, or the oldest one kept while the window is still filling.
    A BAD/non-finite sample freezes the alarm and clears the window (no rate across a data gap)."""

    roles: tuple[str, ...] = ("pv",)

    def __init__(self, params: RateParams) -> None:
        if params.rate_per_min <= 0 or params.period_us <= 0:
            raise ValueError("rate and period must be positive")
        self.params = params
        self._win: deque[tuple[int, float]] = deque()
        self._hyst = False
        self._deb = Debounce()
        self._last_ts: int | None = None
        self._cur = Condition(False, 0)

    @property
    def current(self) -> Condition:
        return self._cur

    def rate(self) -> float | None:
        """Current rate (units/min) from the kept window, or None without two samples."""
        if len(self._win) < 2:
            return None
        t, v = self._win[-1]
        anchor = self._win[0]
        for ts, val in self._win:
            if ts <= t - self.params.period_us:
                anchor = (ts, val)
            else:
                break
        dt = t - anchor[0]
        return (v - anchor[1]) / dt * 60 * US if dt > 0 else None

    def _measure(self, rate: float) -> float:
        d = self.params.direction
        return abs(rate) if d == "both" else rate if d == "rise" else -rate

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        p = self.params
        if self._last_ts is not None and sample.ts <= self._last_ts:
            return []
        self._last_ts = sample.ts
        if not sample.usable:
            self._win.clear()
            return self._emit(self._deb.freeze(now, p.on_delay_us, p.off_delay_us), None)
        self._win.append((sample.ts, sample.value))
        # keep one anchor older than a period, drop everything before it
        while len(self._win) >= 2 and self._win[1][0] <= sample.ts - p.period_us:
            self._win.popleft()
        while len(self._win) > _MAX_RATE_WINDOW:
            self._win.popleft()
        rate = self.rate()
        if rate is None:
            return self._emit(self._deb.advance_list(now, p.on_delay_us, p.off_delay_us), None)
        m = self._measure(rate)
        self._hyst = m >= p.rate_per_min - p.deadband if self._hyst and p.deadband > 0 else m >= p.rate_per_min
        return self._emit(self._deb.feed(self._hyst, now, p.on_delay_us, p.off_delay_us), rate)

    def tick(self, now: int) -> list[Condition]:
        return self._emit(self._deb.advance_list(now, self.params.on_delay_us, self.params.off_delay_us), None)

    def next_deadline(self) -> int | None:
        return self._deb.due(self.params.on_delay_us, self.params.off_delay_us)

    def _emit(self, flips: list[tuple[int, bool]], rate: float | None) -> list[Condition]:
        out = []
        lim = self.params.rate_per_min * (-1 if self.params.direction == "fall" else 1)
        for t, val in flips:
            if val != self._cur.active:
                self._cur = Condition(val, t, None, rate if rate is not None else self._cur.value, lim)
                out.append(self._cur)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"win": [list(x) for x in self._win], "hyst": self._hyst, "deb": self._deb.dump(),
                "last_ts": self._last_ts, "cur": [self._cur.active, self._cur.at, self._cur.value]}

    def restore(self, snap: dict[str, Any]) -> None:
        self._win = deque((int(t), float(v)) for t, v in snap.get("win", ()))
        self._hyst = bool(snap.get("hyst", False))
        self._deb = Debounce.load(snap.get("deb", [False, None]))
        self._last_ts = snap.get("last_ts")
        a, at, v = snap.get("cur", [False, 0, None])
        lim = self.params.rate_per_min * (-1 if self.params.direction == "fall" else 1)
        self._cur = Condition(bool(a), int(at), None, v, lim)
