"""Value types of the alarm core: states, priorities, conditions, journal events, notification intents.

Everything here is plain data: frozen dataclasses and string enums that serialise to JSON-friendly dicts
(``to_dict``/``from_dict``) so the engine can store them in the tenant database (``alarm_state.record``,
``alarm_journal.changes``, ``notification_outbox.intent``). Times are integers in µs since the Unix
epoch (UTC), like :class:`ingestd.model.Batch` timestamps.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "SYSTEM",
    "US",
    "AlarmPolicy",
    "AlarmRecord",
    "AlarmState",
    "Condition",
    "EventKind",
    "IntentKind",
    "JournalEvent",
    "Level",
    "NotificationIntent",
    "NotifyTiming",
    "OosInfo",
    "Operator",
    "Outcome",
    "Priority",
    "ShelveInfo",
    "ShelveKind",
    "episode_event_id",
    "finite_or_none",
    "us",
]

US: Final = 1_000_000
"""Microseconds per second."""


def us(seconds: float) -> int:
    """Seconds (config ``Duration``) → integer µs."""
    return round(seconds * US)


def finite_or_none(v: float | None) -> float | None:
    """JSON (and PostgreSQL jsonb) cannot hold NaN/±inf: store them as ``None``."""
    return v if v is not None and math.isfinite(v) else None


class AlarmState(StrEnum):
    """ISA-18.2 core states (keyed by name, never by the edition-dependent letters)."""

    NORMAL = "NORMAL"
    UNACK_ACTIVE = "UNACK_ACTIVE"
    ACK_ACTIVE = "ACK_ACTIVE"
    RTN_UNACK = "RTN_UNACK"
    LATCHED_UNACK = "LATCHED_UNACK"
    LATCHED_ACK = "LATCHED_ACK"

    @property
    def unacked(self) -> bool:
        return self in (AlarmState.UNACK_ACTIVE, AlarmState.RTN_UNACK, AlarmState.LATCHED_UNACK)

    @property
    def latched(self) -> bool:
        return self in (AlarmState.LATCHED_UNACK, AlarmState.LATCHED_ACK)


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical … 3 for low (sort key: most urgent first)."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK: Final = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class Level(StrEnum):
    """Exclusive limit sub-state (OPC UA ExclusiveLimitAlarm ``Active/HighHigh`` …)."""

    HIHI = "HIHI"
    HI = "HI"
    LO = "LO"
    LOLO = "LOLO"

    @property
    def severity(self) -> int:
        return 2 if self in (Level.HIHI, Level.LOLO) else 1

    @property
    def direction(self) -> int:
        return 1 if self in (Level.HIHI, Level.HI) else -1


class ShelveKind(StrEnum):
    TIMED = "timed"
    ONE_SHOT = "one_shot"


class EventKind(StrEnum):
    """Journal row kinds. ``*`` marks kinds that annunciate (count as an alarm in the KPIs)."""

    ACTIVATED = "ACTIVATED"  # * T1  NORMAL → UNACK_ACTIVE, new episode
    REACTIVATED = "REACTIVATED"  # * T8  RTN_UNACK → UNACK_ACTIVE, same episode
    ESCALATED = "ESCALATED"  # * T14 more severe level (HI → HIHI) or other direction
    DEESCALATED = "DEESCALATED"  # HIHI → HI: level change, no page
    CLEARED = "CLEARED"  # condition false: T3/T4/T5/T6
    LATCH_OCCURRENCE = "LATCH_OCCURRENCE"  # T12 condition true again while latched
    ACKED = "ACKED"  # T2/T7/T9
    RESET = "RESET"  # T10
    RESET_REFUSED = "RESET_REFUSED"  # T11 (audited refusal)
    REALARMED = "REALARMED"  # * T13 re-alarm time elapsed in ACK_ACTIVE
    REANNUNCIATED = "REANNUNCIATED"  # * annunciation restored (unshelve/unsuppress/return to service)
    CLOSED = "CLOSED"  # episode closed silently on re-evaluation (condition cleared while suppressed)
    REMINDED = "REMINDED"  # repeat notification of an unacknowledged alarm
    ESCALATION = "ESCALATION"  # unacknowledged beyond the escalation delay: escalation route notified
    SHELVED = "SHELVED"  # T15
    UNSHELVED = "UNSHELVED"  # T16/T17/T18
    SUPPRESSED = "SUPPRESSED"  # T19 suppressed by design
    UNSUPPRESSED = "UNSUPPRESSED"  # T20 (the start-up grace, if any, begins)
    GRACE_ENDED = "GRACE_ENDED"  # start-up grace after suppression elapsed
    REMOVED_FROM_SERVICE = "REMOVED_FROM_SERVICE"  # T21
    RETURNED_TO_SERVICE = "RETURNED_TO_SERVICE"  # T22
    INHIBITED = "INHIBITED"  # comm loss of the alarm's source holds it back
    UNINHIBITED = "UNINHIBITED"
    DISABLED = "DISABLED"  # T23 (config: disabled or deleted); closes an open episode
    ENABLED = "ENABLED"
    CHATTERING = "CHATTERING"  # chattering detected (N activations in T)
    CHATTER_CLEARED = "CHATTER_CLEARED"
    STALE = "STALE"  # active longer than the stale threshold (24 h)
    RECONFIGURED = "RECONFIGURED"  # attribute change (setpoint, priority …) audited
    OPERATION_DENIED = "OPERATION_DENIED"  # unauthorized request, audited for the KPI

    @property
    def annunciates(self) -> bool:
        return self in _ANNUNCIATING


_ANNUNCIATING: Final = frozenset({
    EventKind.ACTIVATED, EventKind.REACTIVATED, EventKind.ESCALATED, EventKind.REALARMED,
    EventKind.REANNUNCIATED,
})


class IntentKind(StrEnum):
    """What the notification layer is asked to do (it may still group, mute or coalesce)."""

    RAISE = "raise"  # a page: new alarm, escalation to a worse level, re-alarm, re-annunciation
    UPDATE = "update"  # same episode, not a page: returned unacked, acknowledged, re-activated
    RESOLVE = "resolve"  # episode closed
    REMINDER = "reminder"  # still unacknowledged after the repeat interval
    ESCALATE = "escalate"  # unacknowledged beyond the escalation delay: send to the escalation route
    CHATTERING = "chattering"  # flagged once per chattering period


def episode_event_id(alarm_id: str, episode: int, at: int) -> str:
    """Stable event id of one alarm episode: deterministic (replay gives the same id), unique in practice."""
    h = hashlib.blake2b(f"{alarm_id}\x00{episode}\x00{at}".encode(), digest_size=8).hexdigest()
    return f"evt-{h}"


@dataclass(frozen=True, slots=True)
class Condition:
    """Debounced output of a rule evaluator. ``at`` is the time the change took effect (a delay's
    deadline, not the time somebody noticed)."""

    active: bool
    at: int
    level: Level | None = None
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class Operator:
    """Who asks for an operation, and why (both land in the journal)."""

    user: str
    comment: str = ""


SYSTEM: Final = Operator("system")


@dataclass(frozen=True, slots=True)
class NotifyTiming:
    reminder_us: int | None = None
    """Repeat an unacknowledged alarm this often (None: never)."""
    escalate_us: int | None = None
    """Notify the escalation route when still unacknowledged after this long (None: never)."""


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """Per-alarm behaviour, derived from the config by :mod:`alarms.binding`. Not persisted: a reload
    may change it without touching the record (hot reload keeps states and timers)."""

    priority: Priority = Priority.MEDIUM
    level_priorities: Mapping[Level, Priority] = field(default_factory=dict)
    latching: bool = False
    realarm_us: int | None = None
    timing: Mapping[Priority, NotifyTiming] = field(default_factory=dict)
    notify_rtn_unack: bool = True
    """Send an UPDATE when an unacknowledged alarm returns to normal (T3)."""
    notify_ack: bool = True
    """Send an UPDATE when the alarm is acknowledged."""
    max_shelve_us: int | None = 8 * 3600 * US
    sbd_grace_us: int = 0
    on_delay_us: int = 0
    """Longest on-delay of the rule: un-suppression raises only if the condition outlasts it."""
    chatter_count: int = 3
    chatter_window_us: int = 60 * US
    chatter_auto_shelve_us: int | None = None
    stale_us: int | None = 24 * 3600 * US
    # Display (cards, HMI)
    tag: str = ""
    rule: str = ""
    rule_kind: str = ""
    site: str = ""
    unit: str = ""
    description: str = ""

    def priority_for(self, level: Level | None) -> Priority:
        if level is not None:
            return self.level_priorities.get(level, self.priority)
        return self.priority

    def timing_for(self, priority: Priority) -> NotifyTiming:
        return self.timing.get(priority, NotifyTiming())


@dataclass(frozen=True, slots=True)
class ShelveInfo:
    kind: ShelveKind
    until: int | None
    """Absolute expiry (µs). Timed: always set. One-shot: the max-shelve bound if any."""
    user: str
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class OosInfo:
    user: str
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """The persisted state of one alarm. Pure data; transitions live in :mod:`alarms.state`."""

    alarm_id: str
    tenant: str
    state: AlarmState = AlarmState.NORMAL
    cond: bool = False
    """Last debounced condition seen by the state machine."""
    level: Level | None = None
    value: float | None = None
    limit: float | None = None
    priority: Priority | None = None
    """Priority of the current episode (follows the level)."""
    seq: int = 0
    """Sequence number of the last journal event of this alarm."""
    episode: int = 0
    event_id: str | None = None
    """Event id of the open episode (None when NORMAL)."""
    occurrence: int = 0
    """Activations within the open episode (T1=1, each T8/T14/T13/T12 adds one)."""
    episode_since: int | None = None
    active_since: int | None = None
    """When the condition last became true."""
    acked_by: str | None = None
    acked_at: int | None = None
    shelve: ShelveInfo | None = None
    sbd_groups: tuple[str, ...] = ()
    sbd_grace_until: int | None = None
    oos: OosInfo | None = None
    inhibited: bool = False
    disabled: bool = False
    reeval_pending: bool = False
    """Shelving, suppression or OOS happened: re-evaluate (re-annunciate) when annunciation resumes."""
    notified: bool = False
    """A RAISE was issued for the open episode."""
    last_notified_at: int | None = None
    realarm_at: int | None = None
    reminder_at: int | None = None
    escalate_at: int | None = None
    escalated: bool = False
    """The escalation route was notified during the open episode."""
    chatter_times: tuple[int, ...] = ()
    chattering: bool = False
    stale: bool = False

    @property
    def annunciating(self) -> bool:
        """False while shelved, suppressed (incl. start-up grace), out of service, inhibited or disabled."""
        return not (self.shelve is not None or self.sbd_groups or self.sbd_grace_until is not None
                    or self.oos is not None or self.inhibited or self.disabled)

    @property
    def display_state(self) -> str:
        """ISA display state: the suppression category if any, else the core state."""
        if self.disabled:
            return "DISABLED"
        if self.oos is not None:
            return "OUT_OF_SERVICE"
        if self.shelve is not None:
            return "SHELVED"
        if self.sbd_groups or self.sbd_grace_until is not None:
            return "SUPPRESSED_BY_DESIGN"
        return self.state.value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sbd_groups"] = list(self.sbd_groups)
        d["chatter_times"] = list(self.chatter_times)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlarmRecord:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown alarm record fields: {sorted(unknown)}")
        kw = dict(d)
        kw["state"] = AlarmState(kw.get("state", AlarmState.NORMAL))
        for key, enum in (("level", Level), ("priority", Priority)):
            if kw.get(key) is not None:
                kw[key] = enum(kw[key])
        if kw.get("shelve") is not None:
            s = dict(kw["shelve"])
            s["kind"] = ShelveKind(s["kind"])
            kw["shelve"] = ShelveInfo(**s)
        if kw.get("oos") is not None:
            kw["oos"] = OosInfo(**kw["oos"])
        kw["sbd_groups"] = tuple(kw.get("sbd_groups", ()))
        kw["chatter_times"] = tuple(kw.get("chatter_times", ()))
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One append-only journal row. ``changes`` holds every record field the event changed (JSON
    values), so replaying the journal rebuilds the record exactly (:func:`alarms.replay.replay`)."""

    alarm_id: str
    tenant: str
    seq: int
    at: int
    kind: EventKind
    from_state: AlarmState
    to_state: AlarmState
    event_id: str | None
    occurrence: int
    priority: Priority | None
    level: Level | None = None
    value: float | None = None
    limit: float | None = None
    user: str = ""
    comment: str = ""
    reason: str = ""
    annunciated: bool = False
    """For annunciating kinds: the alarm was annunciating (not shelved/suppressed/OOS/inhibited)."""
    changes: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["changes"] = dict(self.changes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JournalEvent:
        kw = dict(d)
        kw["kind"] = EventKind(kw["kind"])
        kw["from_state"] = AlarmState(kw["from_state"])
        kw["to_state"] = AlarmState(kw["to_state"])
        for key, enum in (("level", Level), ("priority", Priority)):
            if kw.get(key) is not None:
                kw[key] = enum(kw[key])
        kw["changes"] = dict(kw.get("changes", {}))
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class NotificationIntent:
    """A request to notify, written to the outbox in the same transaction as the journal rows."""

    kind: IntentKind
    reason: str
    tenant: str
    alarm_id: str
    event_id: str
    seq: int
    """Journal sequence number of the event that caused the intent (visible in the card)."""
    occurrence: int
    at: int
    priority: Priority
    state: AlarmState
    level: Level | None = None
    value: float | None = None
    limit: float | None = None
    since: int | None = None
    tag: str = ""
    rule: str = ""
    rule_kind: str = ""
    site: str = ""
    unit: str = ""
    description: str = ""
    acked_by: str | None = None
    annunciation: bool = False
    """Counts as an annunciated alarm for flood detection."""

    @property
    def dedup_key(self) -> str:
        """Idempotency key shown in the card: the same key on a retried send means the same message."""
        return f"{self.event_id}#{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NotificationIntent:
        kw = dict(d)
        kw["kind"] = IntentKind(kw["kind"])
        kw["priority"] = Priority(kw["priority"])
        kw["state"] = AlarmState(kw["state"])
        if kw.get("level") is not None:
            kw["level"] = Level(kw["level"])
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one state-machine operation: the new record, the journal rows to append and the
    notification intents to put in the outbox (all in one transaction)."""

    record: AlarmRecord
    events: tuple[JournalEvent, ...] = ()
    intents: tuple[NotificationIntent, ...] = ()
    refused: str | None = None
    """Set when the request was refused but audited (reset while abnormal)."""

    @property
    def changed(self) -> bool:
        return bool(self.events)
