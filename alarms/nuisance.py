"""Nuisance-alarm detection (ISA-18.2 / EEMUA 191): chattering, fleeting, stale, and flood mode.

* **Chattering** — ≥ N activations in a sliding window T (default 3 in 60 s, PAS/Hexagon). The state
  machine keeps the last N activation times per alarm (:func:`record_activation`), flags the alarm once
  (one ``CHATTERING`` notification per chattering period) and clears the flag after a quiet window.
* **Fleeting** — active for less than ``T_fleet`` and cleared without an acknowledgement
  (:func:`fleeting_episodes`, computed from the journal; group_wait ≥ T_fleet keeps them off Teams).
* **Stale** — active longer than 24 h (journaled once per activation as ``STALE`` by the state machine).
* **Flood** — per tenant (the "console" is the tenant's on-call channel): starts when ≥ 10 *annunciated*
  alarms fall in a trailing 10-minute window, ends when the trailing count drops below 5
  (:class:`FloodDetector`; ALMA ACS STARTALARMFLOOD/ENDALARMFLOOD). Exact start/end instants are
  reported so the KPI "% time in flood" can be computed from the same code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .model import US, AlarmState, EventKind, JournalEvent

__all__ = [
    "FloodDetector",
    "FloodInterval",
    "FloodTransition",
    "fleeting_episodes",
    "flood_intervals",
    "record_activation",
]


def record_activation(times: tuple[int, ...], at: int, count: int, window_us: int) -> tuple[tuple[int, ...], bool]:
    """Add an activation at ``at`` to the last activation times. Returns the new (bounded, at most
    ``count`` long) tuple and whether the alarm is chattering (≥ ``count`` activations within
    ``window_us``, i.e. in the half-open window ``(at - window, at]``)."""
    kept = (*tuple(t for t in times if t > at - window_us and t <= at), at)
    kept = kept[-count:] if count > 0 else ()
    return kept, count > 0 and len(kept) >= count


@dataclass(frozen=True, slots=True)
class FloodTransition:
    tenant: str
    started: bool
    """True: flood began at ``at``; False: it ended at ``at``."""
    at: int
    count: int
    """Annunciated alarms in the trailing window at that instant."""


@dataclass(frozen=True, slots=True)
class FloodInterval:
    start: int
    end: int | None


class FloodDetector:
    """Flood mode of one tenant. Feed it every annunciated alarm (:meth:`annunciated`) and the clock
    (:meth:`advance`); both return the transitions that happened, stamped with their exact instants.

    Counts use the trailing window ``(t - window, t]``. The flood ends at the first instant the count
    drops below ``end`` — which is when an old alarm ages out, so the end time is exact even when
    :meth:`advance` is called late. Serialisable with :meth:`snapshot` / :meth:`restore`.
    """

    __slots__ = ("_in_flood", "_since", "_times", "end", "start", "tenant", "window_us")

    def __init__(self, tenant: str, *, start: int = 10, end: int = 5, window_us: int = 600 * US) -> None:
        if not 0 < end <= start:
            raise ValueError("flood thresholds need 0 < end <= start")
        self.tenant = tenant
        self.start = start
        self.end = end
        self.window_us = window_us
        self._times: deque[int] = deque()
        self._in_flood = False
        self._since: int | None = None

    @property
    def in_flood(self) -> bool:
        return self._in_flood

    @property
    def since(self) -> int | None:
        """Start of the current flood (None when not in flood)."""
        return self._since

    def count(self) -> int:
        return len(self._times)

    def annunciated(self, at: int) -> list[FloodTransition]:
        out = self.advance(at)
        if self._times and at < self._times[-1]:
            at = self._times[-1]  # out-of-order input: keep the deque sorted (deterministic)
        self._times.append(at)
        if not self._in_flood and len(self._times) >= self.start:
            self._in_flood, self._since = True, at
            out.append(FloodTransition(self.tenant, True, at, len(self._times)))
        return out

    def advance(self, now: int) -> list[FloodTransition]:
        out: list[FloodTransition] = []
        while self._times and self._times[0] + self.window_us <= now:
            aged_at = self._times.popleft() + self.window_us
            # Several alarms can age out at the same instant: the count at that instant is after all.
            while self._times and self._times[0] + self.window_us == aged_at:
                self._times.popleft()
            if self._in_flood and len(self._times) < self.end:
                self._in_flood, self._since = False, None
                out.append(FloodTransition(self.tenant, False, aged_at, len(self._times)))
        return out

    def next_deadline(self) -> int | None:
        """When the next alarm ages out (only relevant in flood)."""
        return self._times[0] + self.window_us if self._in_flood and self._times else None

    def snapshot(self) -> dict[str, Any]:
        return {"times": list(self._times), "in_flood": self._in_flood, "since": self._since}

    def restore(self, snap: dict[str, Any]) -> None:
        self._times = deque(int(t) for t in snap.get("times", ()))
        self._in_flood = bool(snap.get("in_flood", False))
        self._since = snap.get("since")


def flood_intervals(times: Iterable[int], *, start: int = 10, end: int = 5, window_us: int = 600 * US,
                    until: int | None = None) -> list[FloodInterval]:
    """Flood intervals of a sorted series of annunciation times (KPI helper). A flood still running at
    ``until`` is closed there (or left open when ``until`` is None)."""
    det = FloodDetector("", start=start, end=end, window_us=window_us)
    out: list[FloodInterval] = []
    cur: int | None = None
    for t in times:
        for tr in det.annunciated(t):
            if tr.started:
                cur = tr.at
            elif cur is not None:
                out.append(FloodInterval(cur, tr.at))
                cur = None
    if until is not None:
        for tr in det.advance(until):
            if not tr.started and cur is not None:
                out.append(FloodInterval(cur, tr.at))
                cur = None
    if cur is not None:
        out.append(FloodInterval(cur, until))
    return out


def fleeting_episodes(events: Iterable[JournalEvent], threshold_us: int = 2 * US) -> Iterator[JournalEvent]:
    """Yield the ``ACTIVATED`` events of episodes that were active for less than ``threshold_us`` and
    cleared without an acknowledgement (PAS "fleeting" alarms). Events must be in per-alarm seq order."""
    open_: dict[str, JournalEvent] = {}
    acked: set[str] = set()
    for ev in events:
        if ev.kind is EventKind.ACTIVATED:
            open_[ev.alarm_id] = ev
            acked.discard(ev.alarm_id)
        elif ev.kind is EventKind.ACKED:
            acked.add(ev.alarm_id)
        elif ev.kind is EventKind.CLEARED and ev.from_state in (AlarmState.UNACK_ACTIVE, AlarmState.ACK_ACTIVE):
            start = open_.pop(ev.alarm_id, None)
            if start is not None and ev.alarm_id not in acked and ev.at - start.at < threshold_us:
                yield start
        elif ev.kind in (EventKind.ESCALATED, EventKind.REACTIVATED, EventKind.LATCH_OCCURRENCE):
            open_.pop(ev.alarm_id, None)  # not a simple activate-and-clear
