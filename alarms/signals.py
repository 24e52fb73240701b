"""Pure boolean-condition evaluators: digital off-normal, discrepancy, bad quality and comm loss/stale.

Same contract as :mod:`alarms.rules` (injected ``now``, absolute deadlines, JSON snapshots, duplicate and
out-of-order samples ignored). The condition carries no level; its priority comes from the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ingestd.model import STATUS_COMM_LOSS, Quality

from .model import Condition
from .rules import Debounce, Sample

__all__ = [
    "BadQualityEvaluator",
    "BoolParams",
    "CommLossEvaluator",
    "DigitalEvaluator",
    "DiscrepancyEvaluator",
]


@dataclass(frozen=True, slots=True)
class BoolParams:
    on_delay_us: int = 0
    off_delay_us: int = 0


class _BoolEvaluator:
    """Debounced boolean with the common bookkeeping; subclasses compute the raw condition."""

    roles: tuple[str, ...] = ("pv",)

    def __init__(self, params: BoolParams) -> None:
        self.params = params
        self._deb = Debounce()
        self._last: dict[str, Sample] = {}
        self._cur = Condition(False, 0)
        self._value: float | None = None

    @property
    def current(self) -> Condition:
        return self._cur

    def _limit(self) -> float | None:
        return None

    def _feed(self, raw: bool | None, now: int) -> list[Condition]:
        """``raw`` None freezes (bad or missing input)."""
        p = self.params
        flips = (self._deb.freeze(now, p.on_delay_us, p.off_delay_us) if raw is None
                 else self._deb.feed(raw, now, p.on_delay_us, p.off_delay_us))
        return self._emit(flips)

    def _emit(self, flips: list[tuple[int, bool]]) -> list[Condition]:
        out = []
        for t, val in flips:
            if val != self._cur.active:
                self._cur = Condition(val, t, None, self._value, self._limit())
                out.append(self._cur)
        return out

    def _accept(self, role: str, sample: Sample) -> bool:
        prev = self._last.get(role)
        if prev is not None and sample.ts <= prev.ts:
            return False
        self._last[role] = sample
        return True

    def tick(self, now: int) -> list[Condition]:
        return self._emit(self._deb.advance_list(now, self.params.on_delay_us, self.params.off_delay_us))

    def quiet_range(self) -> tuple[float, float]:
        """Closed interval of GOOD values that change nothing but the last sample (engine fast path);
        ``lo > hi``: none. Only meaningful for single-input evaluators; the default is "none"."""
        return math.inf, -math.inf

    def _quiet(self) -> bool:
        return self._deb.pending_since is None and not self._deb.out and not self._cur.active

    def note(self, role: str, ts: int, value: float) -> None:
        """Apply a quiet GOOD sample (see :meth:`quiet_range`)."""
        prev = self._last.get(role)
        if prev is None or ts > prev.ts:
            self._last[role] = Sample(ts, value)
            self._value = self._noted_value(value)

    def _noted_value(self, value: float) -> float:
        return value

    @property
    def last_ts(self) -> int | None:
        ts = [s.ts for s in self._last.values()]
        return max(ts) if ts else None

    def next_deadline(self) -> int | None:
        return self._deb.due(self.params.on_delay_us, self.params.off_delay_us)

    def snapshot(self) -> dict[str, Any]:
        return {
            "deb": self._deb.dump(), "value": self._value,
            "last": {r: [s.ts, s.value if math.isfinite(s.value) else None, s.quality, s.status]
                     for r, s in self._last.items()},
            "cur": [self._cur.active, self._cur.at, self._cur.value],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self._deb = Debounce.load(snap.get("deb", [False, None]))
        self._value = snap.get("value")
        self._last = {r: Sample(int(v[0]), math.nan if v[1] is None else float(v[1]), int(v[2]), int(v[3]))
                      for r, v in snap.get("last", {}).items()}
        a, at, v = snap.get("cur", [False, 0, None])
        self._cur = Condition(bool(a), int(at), None, v, self._limit())


class DigitalEvaluator(_BoolEvaluator):
    """Off-normal: active while the (usable) value differs from ``normal`` (pump state, ESD valve, …)."""

    def __init__(self, normal: float, params: BoolParams = BoolParams()) -> None:
        super().__init__(params)
        self.normal = normal

    def _limit(self) -> float | None:
        return self.normal

    def quiet_range(self) -> tuple[float, float]:
        return (self.normal, self.normal) if self._quiet() else (math.inf, -math.inf)

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        if not self._accept(role, sample):
            return []
        if not sample.usable:
            return self._feed(None, now)
        self._value = sample.value
        return self._feed(sample.value != self.normal, now)


class DiscrepancyEvaluator(_BoolEvaluator):
    """Command vs feedback (roles ``"cmd"``/``"fb"``): active when they differ by more than ``tolerance``
    for longer than the tolerance time (the on-delay). A transition completing within it raises nothing."""

    roles: tuple[str, ...] = ("cmd", "fb")

    def __init__(self, tolerance: float, params: BoolParams) -> None:
        super().__init__(params)
        self.tolerance = tolerance

    def _limit(self) -> float | None:
        cmd = self._last.get("cmd")
        return cmd.value if cmd is not None and cmd.usable else None

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        if not self._accept(role, sample):
            return []
        cmd, fb = self._last.get("cmd"), self._last.get("fb")
        if cmd is None or fb is None:
            return []
        if not (cmd.usable and fb.usable):
            return self._feed(None, now)
        self._value = fb.value
        return self._feed(abs(cmd.value - fb.value) > self.tolerance, now)


class BadQualityEvaluator(_BoolEvaluator):
    """One BAD_QUALITY alarm per tag: active while the tag's samples are BAD (or UNCERTAIN when
    ``include_uncertain``) or non-finite. Samples flagged with the comm-loss status freeze it: comm loss is
    reported once per source by :class:`CommLossEvaluator`, not once per tag."""

    def __init__(self, params: BoolParams = BoolParams(), *, include_uncertain: bool = False) -> None:
        super().__init__(params)
        self.include_uncertain = include_uncertain

    def quiet_range(self) -> tuple[float, float]:
        return (-math.inf, math.inf) if self._quiet() else (math.inf, -math.inf)

    def _noted_value(self, value: float) -> float:
        return float(Quality.GOOD)

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        if not self._accept(role, sample):
            return []
        if sample.status == STATUS_COMM_LOSS:
            return self._feed(None, now)
        bad = (not sample.usable) or (self.include_uncertain and sample.quality == Quality.UNCERTAIN)
        self._value = float(sample.quality)
        return self._feed(bad, now)


class CommLossEvaluator(_BoolEvaluator):
    """Comm loss / stale data of one source: active while the source reports down, or when nothing arrived
    for ``stale_us`` (counted from creation at start-up, so a source never heard from is detected too)."""

    roles: tuple[str, ...] = ()

    def __init__(self, stale_us: int | None, params: BoolParams = BoolParams(), *, created_at: int = 0) -> None:
        super().__init__(params)
        self.stale_us = stale_us
        self._last_seen = created_at
        self._down = False
        self._stale = False

    def update(self, role: str, sample: Sample, now: int) -> list[Condition]:
        return self.seen(now)

    def seen(self, now: int) -> list[Condition]:
        """Data (of any quality except comm-loss) arrived from the source."""
        out = self._check(now)
        self._last_seen = max(self._last_seen, now)
        self._stale = False
        return out + self._feed(self._down, now)

    def status(self, up: bool, now: int) -> list[Condition]:
        """The source (adapter) reported up or down."""
        out = self._check(now)
        self._down = not up
        if up:
            self._last_seen = max(self._last_seen, now)
            self._stale = False
        return out + self._feed(self._down or self._stale, now)

    def resume(self, now: int) -> None:
        """After a restart (the snapshot is restored): the source gets a full stale period from ``now`` to
        deliver again; the debounced output (an active comm-loss alarm) is kept until data or status says
        otherwise."""
        self._last_seen = max(self._last_seen, now)
        self._stale = False

    def _stale_at(self) -> int | None:
        if self.stale_us is None or self._stale or self._down:
            return None
        return self._last_seen + self.stale_us

    def _check(self, now: int) -> list[Condition]:
        t = self._stale_at()
        if t is not None and t <= now:
            self._stale = True
            return self._feed(True, t) + self._emit(self._deb.advance_list(now, self.params.on_delay_us,
                                                                            self.params.off_delay_us))
        return []

    def tick(self, now: int) -> list[Condition]:
        return self._check(now) + super().tick(now)

    def next_deadline(self) -> int | None:
        dues = [d for d in (self._stale_at(), super().next_deadline()) if d is not None]
        return min(dues) if dues else None

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "last_seen": self._last_seen, "down": self._down, "stale": self._stale}

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore(snap)
        self._last_seen = int(snap.get("last_seen", self._last_seen))
        self._down = bool(snap.get("down", False))
        self._stale = bool(snap.get("stale", False))
