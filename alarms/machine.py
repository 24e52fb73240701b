"""Building blocks of the state machine (pure): the transaction that journals every change, the paging
helpers, activation, chattering, and the release logic used when an alarm annunciates again.

Internal to :mod:`alarms.state` and :mod:`alarms.timers`; not an API for the engine.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import MissingAudit
from .model import (
    SYSTEM,
    AlarmPolicy,
    AlarmRecord,
    AlarmState,
    Condition,
    EventKind,
    IntentKind,
    JournalEvent,
    NotificationIntent,
    Operator,
    Outcome,
    ShelveInfo,
    ShelveKind,
    episode_event_id,
)
from .nuisance import record_activation

__all__ = [
    "Tx",
    "activate",
    "can_page",
    "closed",
    "count_activation",
    "finish_release",
    "flag_chatter",
    "new_episode",
    "paged",
    "prepare_release",
    "quiet",
    "require",
    "unshelve_now",
]

S = AlarmState


class Tx:
    """Accumulates journal events and intents while an operation walks the record forward."""

    __slots__ = ("events", "intents", "policy", "rec")

    def __init__(self, rec: AlarmRecord, policy: AlarmPolicy) -> None:
        self.rec = rec
        self.policy = policy
        self.events: list[JournalEvent] = []
        self.intents: list[NotificationIntent] = []

    def emit(self, kind: EventKind, at: int, new: AlarmRecord, *, op: Operator = SYSTEM,
             reason: str = "") -> JournalEvent:
        old = self.rec
        new = replace(new, seq=old.seq + 1)
        before, after = old.to_dict(), new.to_dict()
        changes = {k: v for k, v in after.items() if before[k] != v}
        ev = JournalEvent(
            alarm_id=old.alarm_id, tenant=old.tenant, seq=new.seq, at=at, kind=kind,
            from_state=old.state, to_state=new.state,
            event_id=new.event_id or old.event_id,
            occurrence=new.occurrence if new.event_id else old.occurrence,
            priority=new.priority or old.priority,
            level=new.level if new.cond else old.level,
            value=new.value, limit=new.limit, user=op.user, comment=op.comment, reason=reason,
            annunciated=kind.annunciates and new.annunciating, changes=changes,
        )
        self.rec = new
        self.events.append(ev)
        return ev

    def notify(self, kind: IntentKind, reason: str, ev: JournalEvent, *, annunciation: bool = False,
               since: int | None = None) -> None:
        p = self.policy
        self.intents.append(NotificationIntent(
            kind=kind, reason=reason, tenant=ev.tenant, alarm_id=ev.alarm_id, event_id=ev.event_id or "",
            seq=ev.seq, occurrence=ev.occurrence, at=ev.at, priority=ev.priority or p.priority,
            state=ev.to_state, level=ev.level, value=ev.value, limit=ev.limit,
            since=since if since is not None else self.rec.active_since,
            tag=p.tag, rule=p.rule, rule_kind=p.rule_kind, site=p.site, unit=p.unit, description=p.description,
            acked_by=self.rec.acked_by, annunciation=annunciation,
        ))

    def outcome(self, refused: str | None = None) -> Outcome:
        return Outcome(self.rec, tuple(self.events), tuple(self.intents), refused)


# ---------------------------------------------------------------------------------------------- helpers


def can_page(rec: AlarmRecord) -> bool:
    return rec.annunciating and not rec.chattering


def paged(rec: AlarmRecord, policy: AlarmPolicy, at: int) -> AlarmRecord:
    """Fields of a record that has just been paged (RAISE): reminder and escalation timers armed."""
    t = policy.timing_for(rec.priority or policy.priority)
    return replace(
        rec, notified=True, last_notified_at=at,
        reminder_at=at + t.reminder_us if t.reminder_us else None,
        escalate_at=(rec.escalate_at or at + t.escalate_us) if t.escalate_us and not rec.escalated else None,
    )


def quiet(rec: AlarmRecord) -> AlarmRecord:
    """No reminders, escalation or re-alarm pending (alarm silenced, acknowledged or cleared)."""
    return replace(rec, reminder_at=None, escalate_at=None, realarm_at=None)


def closed(rec: AlarmRecord) -> AlarmRecord:
    """Episode over: back to NORMAL with every episode field reset."""
    return replace(
        quiet(rec), state=S.NORMAL, event_id=None, occurrence=0, episode_since=None, acked_by=None,
        acked_at=None, notified=False, escalated=False, stale=False, priority=None,
    )


def require(op: Operator, *, reason: bool = False) -> None:
    if not op.user.strip():
        raise MissingAudit("a user is required for the audit trail")
    if reason and not op.comment.strip():
        raise MissingAudit("a reason (comment) is required for the audit trail")


def new_episode(rec: AlarmRecord, cond: Condition, policy: AlarmPolicy) -> AlarmRecord:
    episode = rec.episode + 1
    return replace(
        rec, state=S.UNACK_ACTIVE, episode=episode, event_id=episode_event_id(rec.alarm_id, episode, cond.at),
        occurrence=1, episode_since=cond.at, active_since=cond.at, acked_by=None, acked_at=None,
        priority=policy.priority_for(cond.level), notified=False, stale=False, realarm_at=None,
    )


def count_activation(tx: Tx, new: AlarmRecord, at: int) -> tuple[AlarmRecord, bool]:
    """Count an activation for chattering (annunciated activations only). Returns (record, newly flagged)."""
    p = tx.policy
    if not new.annunciating or p.chatter_count <= 0:
        return new, False
    times, flag = record_activation(new.chatter_times, at, p.chatter_count, p.chatter_window_us)
    return replace(new, chatter_times=times), flag and not new.chattering


def flag_chatter(tx: Tx, at: int) -> None:
    p = tx.policy
    ev = tx.emit(EventKind.CHATTERING, at, replace(tx.rec, chattering=True, reminder_at=None, escalate_at=None),
                 reason=f"{p.chatter_count} activations in {p.chatter_window_us // 1_000_000} s")
    tx.notify(IntentKind.CHATTERING, "chattering", ev)
    if p.chatter_auto_shelve_us:
        tx.emit(EventKind.SHELVED, at, replace(
            tx.rec, shelve=ShelveInfo(ShelveKind.TIMED, at + p.chatter_auto_shelve_us, "system",
                                      "auto-shelved: chattering", at), reeval_pending=True,
        ), op=Operator("system", "auto-shelved: chattering"), reason="auto_shelve")


def activate(tx: Tx, cond: Condition, base: AlarmRecord, kind: EventKind, reason: str) -> None:
    """Enter UNACK_ACTIVE (T1 new episode / T8 re-activation / re-annunciation) and page if allowed."""
    new, flagged = count_activation(tx, base, cond.at)
    page = can_page(new) and not flagged
    if page:
        new = paged(new, tx.policy, cond.at)
    ev = tx.emit(kind, cond.at, new, reason=reason)
    if page:
        if kind is EventKind.REACTIVATED and base.notified:
            tx.notify(IntentKind.UPDATE, reason, ev, annunciation=True)  # re-alarm = update of the episode
        else:
            tx.notify(IntentKind.RAISE, reason, ev, annunciation=True)
    if flagged:
        flag_chatter(tx, cond.at)


def unshelve_now(tx: Tx, at: int, op: Operator, reason: str) -> None:
    new, mode = prepare_release(replace(tx.rec, shelve=None), tx.policy, at)
    tx.emit(EventKind.UNSHELVED, at, new, op=op, reason=reason)
    finish_release(tx, mode, at, "unshelved" if reason == "operator" else reason)


# --------------------------------------------------------------------------------------------- release


def prepare_release(new: AlarmRecord, policy: AlarmPolicy, at: int) -> tuple[AlarmRecord, str | None]:
    """If ``new`` annunciates again: clear the re-evaluation flag and pick the mode ("reeval" after
    shelving/suppression/OOS — T16/T18/T20/T22 —, "resume" after inhibition only)."""
    if not new.annunciating:
        return new, None
    if new.reeval_pending:
        return replace(new, reeval_pending=False), "reeval"
    if new.state is S.UNACK_ACTIVE and new.notified and not new.chattering:
        t = policy.timing_for(new.priority or policy.priority)
        new = replace(new, reminder_at=at + t.reminder_us if t.reminder_us else None)
    return new, "resume"


def finish_release(tx: Tx, mode: str | None, at: int, reason: str) -> None:
    r = tx.rec
    if mode is None:
        return
    if r.cond and (mode == "reeval" or (r.state is S.UNACK_ACTIVE and not r.notified)):
        cond = Condition(True, at, r.level, r.value, r.limit)
        if r.event_id is None:  # no open episode (cannot normally happen): start one
            base = new_episode(r, cond, tx.policy)
        else:
            base = replace(r, state=S.UNACK_ACTIVE, occurrence=r.occurrence + (r.state is not S.UNACK_ACTIVE),
                           acked_by=None, acked_at=None, realarm_at=None)
        page = can_page(base)
        new = paged(base, tx.policy, at) if page else base
        ev = tx.emit(EventKind.REANNUNCIATED, at, new, reason=reason)
        if page:
            tx.notify(IntentKind.RAISE, reason, ev, annunciation=True)
    elif mode == "reeval" and not r.cond and r.state is S.RTN_UNACK:
        tx.emit(EventKind.CLOSED, at, closed(r), reason=f"{reason}: condition cleared while not annunciated")
