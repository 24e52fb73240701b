"""A simulated field of rod-pumped oil wells (pure Python, no I/O, no protocol library).

Each well has a pump-off controller: the pump runs until the well "pumps off" (fillage drops), then
idles while fluid and casing gas build up, then starts again. Time is compressed so that a demo shows
a few cycles: a run lasts 4-8 minutes, an idle period 1-2.5 minutes.

* strokes per minute: 0 when off; when running, the well's base rate plus a slow random walk;
* flow rate: proportional to strokes and fillage, which falls towards the end of each run;
* casing pressure: builds while the pump is off, bleeds down while it runs, a daily temperature
  cycle and noise on top (one well — :func:`ingestd.sim.layout.alarm_well` — periodically builds far
  past its high limit, to trip an alarm);
* tubing pressure: pulses with each stroke while running, decays towards static pressure when off;
* tank level: filled by production (sped up 60×), hauled down by a truck near the top;
* comm faults: now and then a well stops answering for 20-60 s (sensors and RTU unreachable).

Random walks are Ornstein-Uhlenbeck processes (mean-reverting), so values wander realistically but
stay in range for days. Everything derives from one seed: a demo run is reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ingestd.sim.layout import TAGS, alarm_well

__all__ = ["Field", "Well"]

_DAY = 86400.0
_TANK_SPEEDUP = 60.0
"""Tank level moves 60× faster than production would fill it: visible in a short demo."""
_BBL_PER_FT = 20.0
_HAUL_AT, _HAUL_TO, _HAUL_RATE = 18.0, 3.0, 0.25
_ALARM_PERIOD, _ALARM_START, _ALARM_END = 300.0, 8.0, 120.0
"""The alarm well's casing pressure builds from 8 s to 120 s of every 5-minute cycle (counted from the
start of the simulation, so a demo shows it within its first minute)."""
_FAULT_RATE = 1 / 1800.0
"""Chance per well and second that its communication fails (about one fault per field per 1.5 min)."""


@dataclass
class _Walk:
    """Ornstein-Uhlenbeck noise around 0: reverts with rate ``theta`` (1/s), volatility ``sigma``."""

    theta: float
    sigma: float
    x: float = 0.0

    def step(self, rng: random.Random, dt: float) -> float:
        self.x += -self.theta * self.x * dt + self.sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0)
        return self.x


@dataclass
class Well:
    number: int
    rng: random.Random
    base_spm: float
    base_rate: float
    base_casing: float
    base_tubing: float
    run_s: float
    idle_s: float
    phase: float
    tank: float
    alarm: bool = False
    hauling: bool = False
    fault_until: float = 0.0
    casing_extra: float = 0.0
    spm_walk: _Walk = field(default_factory=lambda: _Walk(0.01, 0.005))  # ±3.5 % (1σ): a VFD holds its speed
    rate_walk: _Walk = field(default_factory=lambda: _Walk(0.02, 0.01))
    casing_walk: _Walk = field(default_factory=lambda: _Walk(0.05, 1.5))
    tubing_walk: _Walk = field(default_factory=lambda: _Walk(0.1, 1.0))
    values: dict[str, float] = field(default_factory=dict)

    def faulted(self, now: float) -> bool:
        return now < self.fault_until

    def step(self, now: float, dt: float, elapsed: float, faults: bool) -> None:
        rng = self.rng
        if faults and not self.faulted(now) and rng.random() < _FAULT_RATE * dt:
            self.fault_until = now + rng.uniform(20.0, 60.0)
        cycle = self.run_s + self.idle_s
        t = (now + self.phase) % cycle
        running = t < self.run_s
        if running:
            spm = max(0.0, self.base_spm * (1.0 + self.spm_walk.step(rng, dt)))
            fillage = 1.0 - 0.5 * (t / self.run_s) ** 2
            rate = self.base_rate * (spm / self.base_spm) * fillage * (1.0 + self.rate_walk.step(rng, dt))
            stroke = math.sin(2 * math.pi * spm / 60.0 * now)
            tubing = self.base_tubing * (1.08 + 0.07 * stroke)
            self.casing_extra = max(0.0, self.casing_extra - 0.6 * dt)
        else:
            spm = rate = 0.0
            tubing = self.base_tubing * (0.8 + 0.2 * math.exp(-(t - self.run_s) / 30.0))
            self.casing_extra += 0.35 * dt
        daily = 1.0 + 0.015 * math.sin(2 * math.pi * now / _DAY)
        casing = (self.base_casing + self.casing_extra) * daily + self.casing_walk.step(rng, dt)
        if self.alarm:
            c = elapsed % _ALARM_PERIOD
            if _ALARM_START <= c < _ALARM_END:
                casing += min(300.0, 8.0 * (c - _ALARM_START))
        self.tank += rate * dt / 86400.0 / _BBL_PER_FT * _TANK_SPEEDUP
        if self.tank >= _HAUL_AT:
            self.hauling = True
        if self.hauling:
            self.tank = max(_HAUL_TO, self.tank - _HAUL_RATE * dt)
            self.hauling = self.tank > _HAUL_TO
        self.values = {
            "tubing_pressure": round(tubing + self.tubing_walk.step(rng, dt), 2),
            "casing_pressure": round(casing, 2),
            "flow_rate": round(max(0.0, rate), 2),
            "spm": round(spm, 2),
            "tank_level": round(self.tank, 3),
            "pump_running": 1.0 if running else 0.0,
        }


class Field:
    """The whole field, advanced to a time with :meth:`step`; values read from :attr:`wells`."""

    def __init__(self, wells: int, *, seed: int = 1, faults: bool = True) -> None:
        master = random.Random(seed)
        self.faults = faults
        self.wells: dict[int, Well] = {}
        tripping = alarm_well(wells)
        for n in range(1, wells + 1):
            rng = random.Random(master.getrandbits(64))
            base_casing = rng.uniform(300.0, 700.0) if n != tripping else 800.0
            self.wells[n] = Well(
                number=n, rng=rng, base_spm=rng.uniform(5.5, 9.0), base_rate=rng.uniform(40.0, 250.0),
                base_casing=base_casing, base_tubing=rng.uniform(90.0, 220.0), run_s=rng.uniform(240.0, 480.0),
                idle_s=rng.uniform(60.0, 150.0), phase=rng.uniform(0.0, 600.0), tank=rng.uniform(2.0, 12.0),
                alarm=n == tripping,
            )
        self.now: float | None = None
        self.start: float | None = None

    def step(self, now: float) -> None:
        """Advance every well to ``now`` (seconds; any monotonic or wall clock)."""
        dt = 1.0 if self.now is None else max(0.0, min(now - self.now, 60.0))
        self.now = now
        if self.start is None:
            self.start = now
        for w in self.wells.values():
            w.step(now, dt, now - self.start, self.faults)

    def values(self, n: int) -> dict[str, float]:
        return self.wells[n].values

    def faulted(self, n: int) -> bool:
        return self.now is not None and self.wells[n].faulted(self.now)

    @staticmethod
    def tags() -> tuple[str, ...]:
        return TAGS
