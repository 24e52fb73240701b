"""The ISA-18.2 / IEC 62682 alarm state machine — pure functions over :class:`~alarms.model.AlarmRecord`.

Every operation takes a record, the alarm's :class:`~alarms.model.AlarmPolicy` and the time (µs, from
an injected clock: there is no ``time.time()`` here) and returns an :class:`~alarms.model.Outcome`:
the new record, the journal rows (each carrying the fields it changed, so replaying the journal
rebuilds the record exactly) and the notification intents for the outbox.

Core states: NORMAL, UNACK_ACTIVE, ACK_ACTIVE, RTN_UNACK, LATCHED_UNACK, LATCHED_ACK. Orthogonal to them:
shelved (timed / one-shot), suppressed by design (+ start-up grace), out of service, inhibited (comm loss
of the source) and disabled. Non-annunciating alarms keep being evaluated and journaled but produce no
intents. Transition numbers T1–T23 refer to reference/alarms.md §1.4; the policy choices are in
alarms/README.md.

Operations: :func:`on_condition`, :func:`tick`, :func:`acknowledge`, :func:`reset`, :func:`shelve`,
:func:`unshelve`, :func:`set_suppressed`, :func:`remove_from_service`, :func:`return_to_service`,
:func:`set_inhibited`, :func:`disable`, :func:`enable`, :func:`reconfigured`, :func:`deny`;
:func:`next_deadline` tells the engine when to call :func:`tick` next.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from .errors import InvalidOperation, MissingAudit, NothingToAcknowledge, ShelveRejected, StaleEvent
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
    OosInfo,
    Operator,
    Outcome,
    ShelveInfo,
    ShelveKind,
    episode_event_id,
    finite_or_none,
)
from .nuisance import record_activation

__all__ = [
    "acknowledge",
    "deny",
    "disable",
    "enable",
    "next_deadline",
    "on_condition",
    "reconfigured",
    "remove_from_service",
    "reset",
    "return_to_service",
    "set_inhibited",
    "set_suppressed",
    "shelve",
    "tick",
    "unshelve",
]

_MAX_TIMER_STEPS: Final = 64
S = AlarmState


class _Tx:
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


def _can_page(rec: AlarmRecord) -> bool:
    return rec.annunciating and not rec.chattering


def _paged(rec: AlarmRecord, policy: AlarmPolicy, at: int) -> AlarmRecord:
    """Fields of a record that has just been paged (RAISE): reminder and escalation timers armed."""
    t = policy.timing_for(rec.priority or policy.priority)
    return replace(
        rec, notified=True, last_notified_at=at,
        reminder_at=at + t.reminder_us if t.reminder_us else None,
        escalate_at=(rec.escalate_at or at + t.escalate_us) if t.escalate_us and not rec.escalated else None,
    )


def _quiet(rec: AlarmRecord) -> AlarmRecord:
    """No reminders, escalation or re-alarm pending (alarm silenced, acknowledged or cleared)."""
    return replace(rec, reminder_at=None, escalate_at=None, realarm_at=None)


def _closed(rec: AlarmRecord) -> AlarmRecord:
    """Episode over: back to NORMAL with every episode field reset."""
    return replace(
        _quiet(rec), state=S.NORMAL, event_id=None, occurrence=0, episode_since=None, acked_by=None,
        acked_at=None, notified=False, escalated=False, stale=False, priority=None,
    )


def _require(op: Operator, *, reason: bool = False) -> None:
    if not op.user.strip():
        raise MissingAudit("a user is required for the audit trail")
    if reason and not op.comment.strip():
        raise MissingAudit("a reason (comment) is required for the audit trail")


def _new_episode(rec: AlarmRecord, cond: Condition, policy: AlarmPolicy) -> AlarmRecord:
    episode = rec.episode + 1
    return replace(
        rec, state=S.UNACK_ACTIVE, episode=episode, event_id=episode_event_id(rec.alarm_id, episode, cond.at),
        occurrence=1, episode_since=cond.at, active_since=cond.at, acked_by=None, acked_at=None,
        priority=policy.priority_for(cond.level), notified=False, stale=False, realarm_at=None,
    )


def _chatter(tx: _Tx, new: AlarmRecord, at: int) -> tuple[AlarmRecord, bool]:
    """Count an activation for chattering (annunciated activations only). Returns (record, newly flagged)."""
    p = tx.policy
    if not new.annunciating or p.chatter_count <= 0:
        return new, False
    times, flag = record_activation(new.chatter_times, at, p.chatter_count, p.chatter_window_us)
    return replace(new, chatter_times=times), flag and not new.chattering


def _flag_chatter(tx: _Tx, at: int) -> None:
    p = tx.policy
    ev = tx.emit(EventKind.CHATTERING, at, replace(tx.rec, chattering=True, reminder_at=None, escalate_at=None),
                 reason=f"{p.chatter_count} activations in {p.chatter_window_us // 1_000_000} s")
    tx.notify(IntentKind.CHATTERING, "chattering", ev)
    if p.chatter_auto_shelve_us:
        tx.emit(EventKind.SHELVED, at, replace(
            tx.rec, shelve=ShelveInfo(ShelveKind.TIMED, at + p.chatter_auto_shelve_us, "system",
                                      "auto-shelved: chattering", at), reeval_pending=True,
        ), op=Operator("system", "auto-shelved: chattering"), reason="auto_shelve")


def _activate(tx: _Tx, cond: Condition, base: AlarmRecord, kind: EventKind, reason: str) -> None:
    """Enter UNACK_ACTIVE (T1 new episode / T8 re-activation / re-annunciation) and page if allowed."""
    new, flagged = _chatter(tx, base, cond.at)
    page = _can_page(new) and not flagged
    if page:
        new = _paged(new, tx.policy, cond.at)
    ev = tx.emit(kind, cond.at, new, reason=reason)
    if page:
        if kind is EventKind.REACTIVATED and base.notified:
            tx.notify(IntentKind.UPDATE, reason, ev, annunciation=True)  # re-alarm = update of the episode
        else:
            tx.notify(IntentKind.RAISE, reason, ev, annunciation=True)
    if flagged:
        _flag_chatter(tx, cond.at)


# ------------------------------------------------------------------------------------------ conditions


def on_condition(rec: AlarmRecord, cond: Condition, policy: AlarmPolicy) -> Outcome:
    """Apply a debounced condition change (``cond.at`` is when it took effect). Timers due before
    ``cond.at`` run first so the journal stays in causal order."""
    tx = _Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    _run_timers(tx, cond.at)
    r = tx.rec
    level = cond.level if cond.active else None
    base = replace(r, cond=cond.active, level=level if cond.active else r.level,
                   value=finite_or_none(cond.value), limit=finite_or_none(cond.limit))
    if cond.active and not r.cond:
        base = replace(base, active_since=cond.at, stale=False)
        if r.state is S.NORMAL:
            _activate(tx, cond, _new_episode(base, cond, policy), EventKind.ACTIVATED, "activated")
        elif r.state is S.RTN_UNACK:
            new = replace(base, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1,
                          priority=policy.priority_for(level))
            _activate(tx, cond, new, EventKind.REACTIVATED, "reactivated")
        else:  # latched (T12): stays latched, counts an occurrence
            new, flagged = _chatter(tx, replace(base, occurrence=r.occurrence + 1), cond.at)
            tx.emit(EventKind.LATCH_OCCURRENCE, cond.at, new, reason="condition active again while latched")
            if flagged:
                _flag_chatter(tx, cond.at)
    elif cond.active and level != r.level:
        _level_change(tx, base, r, cond)
    elif not cond.active and r.cond:
        _clear(tx, base, cond.at)
    return tx.outcome()


def _level_change(tx: _Tx, base: AlarmRecord, r: AlarmRecord, cond: Condition) -> None:
    new_level, old_level = cond.level, r.level
    worse = new_level is not None and (
        old_level is None or new_level.severity > old_level.severity or new_level.direction != old_level.direction)
    prio = tx.policy.priority_for(new_level)
    if r.state in (S.UNACK_ACTIVE, S.ACK_ACTIVE) and worse:  # T14: new occurrence at the worse level
        new = replace(base, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1, priority=prio, acked_by=None,
                      acked_at=None, realarm_at=None)
        page = _can_page(new)
        if page:
            new = _paged(new, tx.policy, cond.at)
        ev = tx.emit(EventKind.ESCALATED, cond.at, new, reason=f"{old_level} -> {new_level}")
        if page:
            tx.notify(IntentKind.RAISE, "escalated", ev, annunciation=True)
    elif r.state in (S.UNACK_ACTIVE, S.ACK_ACTIVE):  # HIHI -> HI: no page
        tx.emit(EventKind.DEESCALATED, cond.at, replace(base, priority=prio), reason=f"{old_level} -> {new_level}")
    else:
        tx.emit(EventKind.LATCH_OCCURRENCE, cond.at, base, reason=f"level {old_level} -> {new_level} while latched")


def _clear(tx: _Tx, base: AlarmRecord, at: int) -> None:
    r, p = tx.rec, tx.policy
    if r.state is S.UNACK_ACTIVE:
        new = replace(_quiet(base), state=S.LATCHED_UNACK if p.latching else S.RTN_UNACK)
        ev = tx.emit(EventKind.CLEARED, at, new, reason="returned to normal")
        if not p.latching and p.notify_rtn_unack and r.notified and _can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "returned_unacked", ev)
    elif r.state is S.ACK_ACTIVE:
        if p.latching:
            tx.emit(EventKind.CLEARED, at, replace(_quiet(base), state=S.LATCHED_ACK), reason="returned to normal")
        else:
            since = r.active_since
            ev = tx.emit(EventKind.CLEARED, at, _closed(base), reason="returned to normal")
            if r.notified and tx.rec.annunciating:
                tx.notify(IntentKind.RESOLVE, "resolved", ev, since=since)
    else:  # latched: the condition is recorded, the latch holds
        tx.emit(EventKind.CLEARED, at, base, reason="returned to normal (latched)")
    if tx.rec.shelve is not None and tx.rec.shelve.kind is ShelveKind.ONE_SHOT:  # T17
        _unshelve(tx, at, SYSTEM, "one_shot_cleared")


# ------------------------------------------------------------------------------------------- operator


def acknowledge(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, *,
                event_id: str | None = None) -> Outcome:
    """T2 / T7 / T9. Raises :class:`NothingToAcknowledge` (nothing journaled) if no ack is needed, so two
    concurrent acks produce one ACKED row; :class:`StaleEvent` if ``event_id`` is not the open episode."""
    _require(op)
    if rec.disabled:
        raise InvalidOperation("the alarm is disabled")
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    r = tx.rec
    if event_id is not None and event_id != r.event_id:
        raise StaleEvent(f"event {event_id} is not the alarm's current episode (it was closed or superseded)")
    if r.state is S.UNACK_ACTIVE:
        new = replace(_quiet(r), state=S.ACK_ACTIVE, acked_by=op.user, acked_at=now,
                      realarm_at=now + policy.realarm_us if policy.realarm_us and r.annunciating else None)
        ev = tx.emit(EventKind.ACKED, now, new, op=op)
        if policy.notify_ack and r.notified and _can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "acknowledged", ev)
    elif r.state is S.RTN_UNACK:
        since = r.active_since
        ev = tx.emit(EventKind.ACKED, now, _closed(replace(r, acked_by=op.user, acked_at=now)), op=op)
        if r.notified and tx.rec.annunciating:
            tx.notify(IntentKind.RESOLVE, "acknowledged", ev, since=since)
    elif r.state is S.LATCHED_UNACK:
        ev = tx.emit(EventKind.ACKED, now, replace(_quiet(r), state=S.LATCHED_ACK, acked_by=op.user, acked_at=now),
                     op=op)
        if policy.notify_ack and r.notified and _can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "acknowledged", ev)
    else:
        raise NothingToAcknowledge(f"alarm is {r.state.value}: nothing to acknowledge")
    return tx.outcome()


def reset(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T10; T11 refuses (and audits) a reset while the condition is abnormal or before the ack."""
    _require(op)
    if not rec.state.latched:
        raise InvalidOperation(f"alarm is {rec.state.value}: only latched alarms are reset")
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    r = tx.rec
    refusal = None
    if r.cond:
        refusal = "condition still abnormal"
    elif r.state is S.LATCHED_UNACK:
        refusal = "acknowledge before reset"
    if refusal is not None:
        tx.emit(EventKind.RESET_REFUSED, now, r, op=op, reason=refusal)
        return tx.outcome(refused=refusal)
    since = r.active_since
    ev = tx.emit(EventKind.RESET, now, _closed(r), op=op)
    if r.notified and tx.rec.annunciating:
        tx.notify(IntentKind.RESOLVE, "reset", ev, since=since)
    return tx.outcome()


def shelve(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, *, kind: ShelveKind = ShelveKind.TIMED,
           duration_us: int | None = None) -> Outcome:
    """T15. Timed shelving needs a duration ≤ ``max_shelve``; one-shot needs an active alarm and ends when it
    clears (bounded by ``max_shelve``). User and reason are mandatory."""
    _require(op, reason=True)
    if rec.disabled:
        raise InvalidOperation("the alarm is disabled")
    max_us = policy.max_shelve_us
    if kind is ShelveKind.TIMED:
        if duration_us is None or duration_us <= 0:
            raise ShelveRejected("timed shelving needs a positive duration")
        if max_us is not None and duration_us > max_us:
            raise ShelveRejected(f"{duration_us / 1e6:g} s is above the maximum shelve time of {max_us / 1e6:g} s")
        until: int | None = now + duration_us
    else:
        if duration_us is not None:
            raise ShelveRejected("one-shot shelving takes no duration")
        until = now + max_us if max_us is not None else None
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    if kind is ShelveKind.ONE_SHOT and not tx.rec.cond:
        raise ShelveRejected("one-shot shelving applies to an active alarm")
    info = ShelveInfo(kind, until, op.user, op.comment, now)
    tx.emit(EventKind.SHELVED, now, replace(_quiet(tx.rec), shelve=info, reeval_pending=True), op=op,
            reason=kind.value)
    return tx.outcome()


def unshelve(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T18: unshelve by the operator, then re-evaluate."""
    _require(op)
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    if tx.rec.shelve is None:
        raise InvalidOperation("the alarm is not shelved")
    _unshelve(tx, now, op, "operator")
    return tx.outcome()


def _unshelve(tx: _Tx, at: int, op: Operator, reason: str) -> None:
    new, mode = _prepare_release(replace(tx.rec, shelve=None), tx.policy, at)
    tx.emit(EventKind.UNSHELVED, at, new, op=op, reason=reason)
    _finish_release(tx, mode, at, "unshelved" if reason == "operator" else reason)


def remove_from_service(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T21 (maintenance, MOC): user and reason mandatory."""
    _require(op, reason=True)
    if rec.oos is not None:
        raise InvalidOperation("the alarm is already out of service")
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    tx.emit(EventKind.REMOVED_FROM_SERVICE, now,
            replace(_quiet(tx.rec), oos=OosInfo(op.user, op.comment, now), reeval_pending=True), op=op)
    return tx.outcome()


def return_to_service(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T22: back in service, then re-evaluate."""
    _require(op)
    if rec.oos is None:
        raise InvalidOperation("the alarm is in service")
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    new, mode = _prepare_release(replace(tx.rec, oos=None), policy, now)
    tx.emit(EventKind.RETURNED_TO_SERVICE, now, new, op=op)
    _finish_release(tx, mode, now, "returned_to_service")
    return tx.outcome()


def deny(rec: AlarmRecord, op: Operator, action: str, policy: AlarmPolicy, now: int) -> Outcome:
    """Audit an unauthorized request (counted by the "zero unauthorized changes" KPI)."""
    tx = _Tx(rec, policy)
    tx.emit(EventKind.OPERATION_DENIED, now, rec, op=op, reason=action)
    return tx.outcome()


def reconfigured(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, detail: str) -> Outcome:
    """Audit an attribute change (MOC: setpoint, priority …) with user and reason. The engine then feeds the
    re-evaluated condition (:meth:`alarms.rules.Evaluator.reconfigure`) through :func:`on_condition`."""
    tx = _Tx(rec, policy)
    _run_timers(tx, now)
    new = tx.rec
    if new.cond and new.priority is not None:
        new = replace(new, priority=policy.priority_for(new.level))
    tx.emit(EventKind.RECONFIGURED, now, new, op=op, reason=detail)
    return tx.outcome()


# ------------------------------------------------------------------------------------- system actions


def set_suppressed(rec: AlarmRecord, group: str, active: bool, policy: AlarmPolicy, now: int) -> Outcome:
    """T19/T20: a suppression group (e.g. ``pump_off@well_12``) starts or stops suppressing this alarm.
    When the last group ends, the start-up grace (max of the group grace and the rule's on-delay) runs
    before the alarm annunciates again. Idempotent."""
    tx = _Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    _run_timers(tx, now)
    r = tx.rec
    groups = set(r.sbd_groups)
    if active == (group in groups):
        return tx.outcome()
    if active:
        groups.add(group)
        tx.emit(EventKind.SUPPRESSED, now, replace(_quiet(r), sbd_groups=tuple(sorted(groups)), sbd_grace_until=None,
                                                   reeval_pending=True), reason=group)
        return tx.outcome()
    groups.discard(group)
    grace = max(policy.sbd_grace_us, policy.on_delay_us)
    new = replace(r, sbd_groups=tuple(sorted(groups)))
    if not groups and grace > 0:
        tx.emit(EventKind.UNSUPPRESSED, now, replace(new, sbd_grace_until=now + grace), reason=group)
    else:
        new, mode = _prepare_release(new, policy, now)
        tx.emit(EventKind.UNSUPPRESSED, now, new, reason=group)
        _finish_release(tx, mode, now, "unsuppressed")
    return tx.outcome()


def set_inhibited(rec: AlarmRecord, inhibited: bool, policy: AlarmPolicy, now: int, *, source: str = "") -> Outcome:
    """Comm loss of the alarm's source holds the alarm back (Alertmanager-style inhibition). When comms
    return the alarm resumes: it pages only if it became active without having been paged."""
    tx = _Tx(rec, policy)
    if rec.disabled or rec.inhibited == inhibited:
        return tx.outcome()
    _run_timers(tx, now)
    if inhibited:
        tx.emit(EventKind.INHIBITED, now, replace(tx.rec, inhibited=True, reminder_at=None, escalate_at=None),
                reason=source)
    else:
        new, mode = _prepare_release(replace(tx.rec, inhibited=False), policy, now)
        tx.emit(EventKind.UNINHIBITED, now, new, reason=source)
        _finish_release(tx, mode, now, "comms_restored")
    return tx.outcome()


def disable(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T23 (config: disabled or deleted). An open episode is closed in an orderly way (one RESOLVE if it was
    paged); afterwards the alarm produces no events until :func:`enable`. Idempotent."""
    tx = _Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    _run_timers(tx, now)
    r = tx.rec
    since = r.active_since
    new = replace(_closed(r), disabled=True, cond=False, level=None, chatter_times=(), chattering=False,
                  reeval_pending=False, sbd_grace_until=None)
    ev = tx.emit(EventKind.DISABLED, now, new, op=op)
    if r.notified and r.event_id is not None and r.annunciating:
        tx.notify(IntentKind.RESOLVE, "disabled", ev, since=since)
    return tx.outcome()


def enable(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """Back from DISABLED in NORMAL; the engine then feeds the evaluator's current condition."""
    tx = _Tx(rec, policy)
    if not rec.disabled:
        return tx.outcome()
    tx.emit(EventKind.ENABLED, now, replace(rec, disabled=False, state=S.NORMAL, cond=False), op=op)
    return tx.outcome()


# --------------------------------------------------------------------------------------------- release


def _prepare_release(new: AlarmRecord, policy: AlarmPolicy, at: int) -> tuple[AlarmRecord, str | None]:
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


def _finish_release(tx: _Tx, mode: str | None, at: int, reason: str) -> None:
    r = tx.rec
    if mode is None:
        return
    if r.cond and (mode == "reeval" or (r.state is S.UNACK_ACTIVE and not r.notified)):
        cond = Condition(True, at, r.level, r.value, r.limit)
        if r.event_id is None:  # no open episode (cannot normally happen): start one
            base = _new_episode(r, cond, tx.policy)
        else:
            base = replace(r, state=S.UNACK_ACTIVE, occurrence=r.occurrence + (r.state is not S.UNACK_ACTIVE),
                           acked_by=None, acked_at=None, realarm_at=None)
        page = _can_page(base)
        new = _paged(base, tx.policy, at) if page else base
        ev = tx.emit(EventKind.REANNUNCIATED, at, new, reason=reason)
        if page:
            tx.notify(IntentKind.RAISE, reason, ev, annunciation=True)
    elif mode == "reeval" and not r.cond and r.state is S.RTN_UNACK:
        tx.emit(EventKind.CLOSED, at, _closed(r), reason=f"{reason}: condition cleared while not annunciated")


# ---------------------------------------------------------------------------------------------- timers


def _due(rec: AlarmRecord, policy: AlarmPolicy) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    if rec.shelve is not None and rec.shelve.until is not None:
        out.append((rec.shelve.until, "shelve"))
    if rec.sbd_grace_until is not None and not rec.sbd_groups:
        out.append((rec.sbd_grace_until, "grace"))
    if rec.realarm_at is not None and rec.state is S.ACK_ACTIVE:
        out.append((rec.realarm_at, "realarm"))
    if rec.reminder_at is not None and rec.state is S.UNACK_ACTIVE:
        out.append((rec.reminder_at, "reminder"))
    if rec.escalate_at is not None and rec.state is S.UNACK_ACTIVE:
        out.append((rec.escalate_at, "escalate"))
    if rec.chattering and rec.chatter_times:
        out.append((rec.chatter_times[-1] + policy.chatter_window_us, "chatter"))
    if rec.cond and not rec.stale and policy.stale_us is not None and rec.active_since is not None:
        out.append((rec.active_since + policy.stale_us, "stale"))
    return out


def next_deadline(rec: AlarmRecord, policy: AlarmPolicy) -> int | None:
    """Earliest time at which :func:`tick` has something to do (None: nothing scheduled)."""
    if rec.disabled:
        return None
    due = _due(rec, policy)
    return min(t for t, _ in due) if due else None


def tick(rec: AlarmRecord, policy: AlarmPolicy, now: int) -> Outcome:
    """Fire every timer due at or before ``now`` (shelve expiry T16, start-up grace, re-alarm T13, reminders,
    escalation, chatter clearing, stale flag), each journaled at its own deadline."""
    tx = _Tx(rec, policy)
    if not rec.disabled:
        _run_timers(tx, now)
    return tx.outcome()


def _run_timers(tx: _Tx, upto: int) -> None:
    for _ in range(_MAX_TIMER_STEPS):
        due = [d for d in _due(tx.rec, tx.policy) if d[0] <= upto]
        if not due:
            return
        at, what = min(due)
        _fire(tx, what, at, upto)


def _fire(tx: _Tx, what: str, at: int, upto: int) -> None:
    r, p = tx.rec, tx.policy
    if what == "shelve":
        _unshelve(tx, at, SYSTEM, "expired")
    elif what == "grace":
        new, mode = _prepare_release(replace(r, sbd_grace_until=None), p, at)
        tx.emit(EventKind.GRACE_ENDED, at, new)
        _finish_release(tx, mode, at, "unsuppressed")
    elif what == "realarm":  # T13
        base = replace(r, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1, acked_by=None, acked_at=None,
                       realarm_at=None)
        page = _can_page(base)
        ev = tx.emit(EventKind.REALARMED, at, _paged(base, p, at) if page else base, reason="re-alarm time elapsed")
        if page:
            tx.notify(IntentKind.RAISE, "realarm", ev, annunciation=True)
    elif what == "reminder":
        interval = p.timing_for(r.priority or p.priority).reminder_us
        nxt = None
        if interval:
            nxt = at + interval
            if nxt <= upto:  # missed reminders (engine was down) collapse into one
                nxt += ((upto - nxt) // interval + 1) * interval
        ev = tx.emit(EventKind.REMINDED, at, replace(r, reminder_at=nxt, last_notified_at=at))
        if _can_page(tx.rec):
            tx.notify(IntentKind.REMINDER, "reminder", ev)
    elif what == "escalate":
        ev = tx.emit(EventKind.ESCALATION, at, replace(r, escalate_at=None, escalated=True), reason="unacknowledged")
        if _can_page(tx.rec):
            tx.notify(IntentKind.ESCALATE, "unacknowledged", ev)
    elif what == "chatter":
        new = replace(r, chattering=False, chatter_times=())
        mode_raise = new.state is S.UNACK_ACTIVE and new.annunciating
        if mode_raise and new.notified:
            t = p.timing_for(new.priority or p.priority)
            new = replace(new, reminder_at=at + t.reminder_us if t.reminder_us else None)
        elif mode_raise:
            new = _paged(new, p, at)
        ev = tx.emit(EventKind.CHATTER_CLEARED, at, new)
        if mode_raise:
            tx.notify(IntentKind.UPDATE if r.notified else IntentKind.RAISE, "chatter_cleared", ev,
                      annunciation=not r.notified)
    else:  # stale
        tx.emit(EventKind.STALE, at, replace(r, stale=True), reason="active longer than the stale threshold")
