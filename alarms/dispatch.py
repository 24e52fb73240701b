"""Notification planning (pure): intents from the outbox in, :class:`Delivery` objects (one card each) out.

Alertmanager-style stages, per tenant:

1. **Flood** — every annunciating intent feeds the tenant's :class:`~alarms.nuisance.FloodDetector`. In a
   flood, intents below the bypass priorities are held and summarised: one summary card at the start, an
   updated one at most every ``summary_interval`` while it lasts, a final one when it ends.
2. **Routing** — tenant + priority → route (escalations → the route's ``escalate_to``); ``send_resolved`` /
   ``send_updates`` filters.
3. **Silences** — an ops-side maintenance mute (matched on tag/site/rule globs for a time window). Not ISA
   shelving: it mutes Teams only; the alarm list, the journal and the KPIs are untouched (scenario 50).
4. **Grouping** — per (route, site|alarm|tenant): the first intent waits ``group_wait``, later ones go out at
   most every ``group_interval``; one card per flush (a single-alarm card, or a grouped card). A RESOLVE whose
   RAISE is still pending drops both (fleeting alarms never page); an acknowledgement of a pending RAISE drops
   both or keeps the order, per ``on_ack_before_send``; repeated updates of one episode coalesce.

Everything that is not delivered is reported in :attr:`Dispatcher.dropped` (for the notification log).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .config import AlarmsConfig, FloodPolicy, Route
from .config_rules import PRIORITY_NAMES
from .model import IntentKind, NotificationIntent, us
from .nuisance import FloodDetector, FloodTransition

__all__ = ["Delivery", "Dispatcher", "Dropped", "FloodSummary", "Silence"]


@dataclass(frozen=True, slots=True)
class FloodSummary:
    tenant: str
    since: int
    at: int
    active: bool
    """False for the final "flood ended" card."""
    in_window: int
    """Annunciated alarms in the trailing window now."""
    held: int
    """Notifications held back (summarised) since the flood began."""
    by_priority: dict[str, int] = field(default_factory=dict)
    top: tuple[tuple[str, int], ...] = ()
    """Most frequent tags during the flood: (tag, count)."""
    sequence: int = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """One card to send to one route."""

    route: str
    tenant: str
    group: str
    at: int
    intents: tuple[NotificationIntent, ...] = ()
    flood: FloodSummary | None = None

    @property
    def key(self) -> str:
        """Idempotency key of the delivery (notification log)."""
        if self.flood is not None:
            return f"flood-{self.tenant}-{self.flood.since}#{self.flood.sequence}"
        if len(self.intents) == 1:
            return self.intents[0].dedup_key
        h = hashlib.blake2b("|".join(i.dedup_key for i in self.intents).encode(), digest_size=8).hexdigest()
        return f"grp-{h}"


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    tenant: str
    starts: int
    ends: int
    tags: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    """Globs; an empty tuple matches anything. All given criteria must match."""
    created_by: str = ""
    comment: str = ""

    def matches(self, i: NotificationIntent, now: int) -> bool:
        if i.tenant != self.tenant or not self.starts <= now < self.ends:
            return False
        return all(not pats or any(fnmatchcase(v, p) for p in pats)
                   for v, pats in ((i.tag, self.tags), (i.site, self.sites), (i.rule, self.rules)))


@dataclass(frozen=True, slots=True)
class Dropped:
    intent: NotificationIntent
    reason: str
    route: str = ""


@dataclass
class _Group:
    route: Route
    tenant: str
    key: str
    pending: list[NotificationIntent] = field(default_factory=list)
    next_flush: int | None = None
    last_flush: int | None = None


@dataclass
class _Flood:
    detector: FloodDetector
    since: int = 0
    held: int = 0
    by_priority: Counter[str] = field(default_factory=Counter)
    top: Counter[str] = field(default_factory=Counter)
    sequence: int = 0
    last_summary: int = 0
    dirty: bool = False


class Dispatcher:
    def __init__(self, cfg: AlarmsConfig) -> None:
        self.cfg = cfg
        self.silences: list[Silence] = []
        self.dropped: list[Dropped] = []
        self._groups: dict[tuple[str, str, str], _Group] = {}
        self._floods: dict[str, _Flood] = {}

    # ------------------------------------------------------------------------------------------ input
    def submit(self, i: NotificationIntent, now: int) -> list[Delivery]:
        fl, transitions = self._flood_count(i)
        held = fl is not None and fl.detector.in_flood and i.priority.value not in self._policy(i.tenant).bypass
        if held and fl is not None:
            self._hold(fl, i, "")
        out: list[Delivery] = []
        if fl is not None:
            for tr in transitions:  # the held intent is already part of the first summary
                out += self._summary(i.tenant, fl, now if tr.started else tr.at, active=tr.started)
        if held:
            return out
        route = self._route(i)
        if route is None:
            self.dropped.append(Dropped(i, "no route"))
        elif i.kind is IntentKind.RESOLVE and not route.send_resolved:
            self.dropped.append(Dropped(i, "send_resolved is off", route.name))
        elif i.kind is IntentKind.UPDATE and not route.send_updates:
            self.dropped.append(Dropped(i, "send_updates is off", route.name))
        elif any(s.matches(i, now) for s in self.silences):
            self.dropped.append(Dropped(i, "silenced", route.name))
        else:
            self._add(route, i, now)
        return out

    def tick(self, now: int) -> list[Delivery]:
        out: list[Delivery] = []
        for tenant, fl in self._floods.items():
            for tr in fl.detector.advance(now):
                if not tr.started:
                    out += self._summary(tenant, fl, tr.at, active=False)
            if fl.detector.in_flood and fl.dirty and now >= fl.last_summary + self._interval(tenant):
                out += self._summary(tenant, fl, now, active=True)
        for g in self._groups.values():
            if g.next_flush is not None and g.next_flush <= now and g.pending:
                out.append(self._flush(g, now))
        return out

    def next_deadline(self) -> int | None:
        dues = [g.next_flush for g in self._groups.values() if g.next_flush is not None and g.pending]
        for tenant, fl in self._floods.items():
            if (d := fl.detector.next_deadline()) is not None:
                dues.append(d)
            if fl.detector.in_flood and fl.dirty:
                dues.append(fl.last_summary + self._interval(tenant))
        return min(dues) if dues else None

    def in_flood(self, tenant: str) -> bool:
        fl = self._floods.get(tenant)
        return fl is not None and fl.detector.in_flood

    # ----------------------------------------------------------------------------------------- flood
    def _policy(self, tenant: str) -> FloodPolicy:
        return self.cfg.policy_for(tenant).flood

    def _interval(self, tenant: str) -> int:
        return us(self._policy(tenant).summary_interval)

    def _flood_count(self, i: NotificationIntent) -> tuple[_Flood | None, list[FloodTransition]]:
        fl = self._floods.get(i.tenant)
        if not i.annunciation:
            return fl, []
        if fl is None:
            p = self._policy(i.tenant)
            fl = self._floods[i.tenant] = _Flood(FloodDetector(i.tenant, start=p.start, end=p.end,
                                                               window_us=us(p.window)))
        transitions = fl.detector.annunciated(i.at)
        for tr in transitions:
            if tr.started:
                fl.since, fl.held, fl.sequence, fl.dirty = tr.at, 0, 0, False
                fl.by_priority.clear()
                fl.top.clear()
                self._absorb_pending(i.tenant, fl)
        return fl, transitions

    def _hold(self, fl: _Flood, i: NotificationIntent, route: str) -> None:
        fl.held += 1
        fl.by_priority[i.priority.value] += 1
        fl.top[i.tag] += 1
        fl.dirty = True
        self.dropped.append(Dropped(i, "flood", route))

    def _absorb_pending(self, tenant: str, fl: _Flood) -> None:
        """Pending (unsent) intents of the tenant join the flood summary instead of going out one by one."""
        bypass = self._policy(tenant).bypass
        for g in self._groups.values():
            if g.tenant != tenant:
                continue
            keep = []
            for p in g.pending:
                if p.priority.value in bypass:
                    keep.append(p)
                else:
                    self._hold(fl, p, g.route.name)
            g.pending = keep

    def _flood_route(self, tenant: str) -> Route | None:
        return next((r for p in PRIORITY_NAMES if (r := self.cfg.route_for(tenant, p)) is not None), None)

    def _summary(self, tenant: str, fl: _Flood, at: int, *, active: bool) -> list[Delivery]:
        route = self._flood_route(tenant)
        fl.sequence += 1
        fl.last_summary, fl.dirty = at, False
        if route is None:
            return []
        s = FloodSummary(tenant, fl.since, at, active, fl.detector.count(), fl.held, dict(fl.by_priority),
                         tuple(fl.top.most_common(10)), fl.sequence)
        return [Delivery(route.name, tenant, "flood", at, (), s)]

    # -------------------------------------------------------------------------------------- grouping
    def _route(self, i: NotificationIntent) -> Route | None:
        base = self.cfg.route_for(i.tenant, i.priority.value)
        if i.kind is IntentKind.ESCALATE:
            return self.cfg.route(base.escalate_to) if base is not None and base.escalate_to else None
        return base

    def _add(self, route: Route, i: NotificationIntent, now: int) -> None:
        key = {"asset": i.site, "alarm": i.alarm_id, "tenant": ""}[route.group_by]
        g = self._groups.setdefault((route.name, i.tenant, key), _Group(route, i.tenant, key))
        same = [p for p in g.pending if p.event_id == i.event_id]
        raised = any(p.kind is IntentKind.RAISE for p in same)
        acked = i.reason == "acknowledged"
        cleared = (i.kind is IntentKind.RESOLVE and not acked) or i.reason == "returned_unacked"
        if raised and cleared:
            self._drop_event(g, i, "returned to normal before it was sent (fleeting)")
            return
        if raised and acked and route.on_ack_before_send == "drop":
            self._drop_event(g, i, "acknowledged before it was sent")
            return
        if i.kind in (IntentKind.UPDATE, IntentKind.REMINDER):
            for p in [p for p in same if p.kind is i.kind]:
                g.pending.remove(p)
                self.dropped.append(Dropped(p, "superseded", route.name))
        if not g.pending:
            if g.last_flush is None or now >= g.last_flush + us(route.group_interval):
                g.next_flush = now + us(route.group_wait)
            else:
                g.next_flush = g.last_flush + us(route.group_interval)
        g.pending.append(i)

    def _drop_event(self, g: _Group, i: NotificationIntent, reason: str) -> None:
        for p in [p for p in g.pending if p.event_id == i.event_id]:
            g.pending.remove(p)
            self.dropped.append(Dropped(p, reason, g.route.name))
        self.dropped.append(Dropped(i, reason, g.route.name))

    def _flush(self, g: _Group, now: int) -> Delivery:
        items: Sequence[NotificationIntent] = tuple(g.pending)
        g.pending = []
        g.last_flush, g.next_flush = now, None
        return Delivery(g.route.name, g.tenant, g.key, now, tuple(items))
