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
:func:`next_deadline` tells the engine when to call :func:`tick` next. The transaction/paging helpers live
in :mod:`alarms.machine`, the timers in :mod:`alarms.timers`.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import InvalidOperation, NothingToAcknowledge, ShelveRejected, StaleEvent
from .machine import (
    Tx,
    activate,
    can_page,
    closed,
    count_activation,
    finish_release,
    flag_chatter,
    new_episode,
    paged,
    prepare_release,
    quiet,
    require,
    unshelve_now,
)
from .model import (
    SYSTEM,
    AlarmPolicy,
    AlarmRecord,
    AlarmState,
    Condition,
    EventKind,
    IntentKind,
    OosInfo,
    Operator,
    Outcome,
    ShelveInfo,
    ShelveKind,
    finite_or_none,
)
from .timers import next_deadline, run_timers, tick

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

S = AlarmState


# ------------------------------------------------------------------------------------------ conditions


def on_condition(rec: AlarmRecord, cond: Condition, policy: AlarmPolicy) -> Outcome:
    """Apply a debounced condition change (``cond.at`` is when it took effect). Timers due before
    ``cond.at`` run first so the journal stays in causal order."""
    tx = Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    run_timers(tx, cond.at)
    r = tx.rec
    level = cond.level if cond.active else None
    base = replace(r, cond=cond.active, level=level if cond.active else r.level,  # keep the last level
                   value=finite_or_none(cond.value), limit=finite_or_none(cond.limit))
    if cond.active and not r.cond:
        base = replace(base, active_since=cond.at, stale=False)
        if r.state is S.NORMAL:
            activate(tx, cond, new_episode(base, cond, policy), EventKind.ACTIVATED, "activated")
        elif r.state is S.RTN_UNACK:
            new = replace(base, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1,
                          priority=policy.priority_for(level))
            activate(tx, cond, new, EventKind.REACTIVATED, "reactivated")
        else:  # latched (T12): stays latched, counts an occurrence
            new, flagged = count_activation(tx, replace(base, occurrence=r.occurrence + 1), cond.at)
            tx.emit(EventKind.LATCH_OCCURRENCE, cond.at, new, reason="condition active again while latched")
            if flagged:
                flag_chatter(tx, cond.at)
    elif cond.active and level != r.level:
        _level_change(tx, base, r, cond)
    elif not cond.active and r.cond:
        _clear(tx, base, cond.at)
    return tx.outcome()


def _level_change(tx: Tx, base: AlarmRecord, r: AlarmRecord, cond: Condition) -> None:
    new_level, old_level = cond.level, r.level
    worse = new_level is not None and (
        old_level is None or new_level.severity > old_level.severity or new_level.direction != old_level.direction)
    prio = tx.policy.priority_for(new_level)
    if r.state in (S.UNACK_ACTIVE, S.ACK_ACTIVE) and worse:  # T14: new occurrence at the worse level
        new = replace(base, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1, priority=prio, acked_by=None,
                      acked_at=None, realarm_at=None)
        page = can_page(new)
        if page:
            new = paged(new, tx.policy, cond.at)
        ev = tx.emit(EventKind.ESCALATED, cond.at, new, reason=f"{old_level} -> {new_level}")
        if page:
            tx.notify(IntentKind.RAISE, "escalated", ev, annunciation=True)
    elif r.state in (S.UNACK_ACTIVE, S.ACK_ACTIVE):  # HIHI -> HI: no page
        tx.emit(EventKind.DEESCALATED, cond.at, replace(base, priority=prio), reason=f"{old_level} -> {new_level}")
    else:
        tx.emit(EventKind.LATCH_OCCURRENCE, cond.at, base, reason=f"level {old_level} -> {new_level} while latched")


def _clear(tx: Tx, base: AlarmRecord, at: int) -> None:
    r, p = tx.rec, tx.policy
    if r.state is S.UNACK_ACTIVE:
        new = replace(quiet(base), state=S.LATCHED_UNACK if p.latching else S.RTN_UNACK)
        ev = tx.emit(EventKind.CLEARED, at, new, reason="returned to normal")
        if not p.latching and p.notify_rtn_unack and r.notified and can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "returned_unacked", ev)
    elif r.state is S.ACK_ACTIVE:
        if p.latching:
            tx.emit(EventKind.CLEARED, at, replace(quiet(base), state=S.LATCHED_ACK), reason="returned to normal")
        else:
            since = r.active_since
            ev = tx.emit(EventKind.CLEARED, at, closed(base), reason="returned to normal")
            if r.notified and tx.rec.annunciating:
                tx.notify(IntentKind.RESOLVE, "resolved", ev, since=since)
    else:  # latched: the condition is recorded, the latch holds
        tx.emit(EventKind.CLEARED, at, base, reason="returned to normal (latched)")
    if tx.rec.shelve is not None and tx.rec.shelve.kind is ShelveKind.ONE_SHOT:  # T17
        unshelve_now(tx, at, SYSTEM, "one_shot_cleared")


# ------------------------------------------------------------------------------------------- operator


def acknowledge(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, *,
                event_id: str | None = None) -> Outcome:
    """T2 / T7 / T9. Raises :class:`NothingToAcknowledge` (nothing journaled) if no ack is needed, so two
    concurrent acks produce one ACKED row; :class:`StaleEvent` if ``event_id`` is not the open episode."""
    require(op)
    if rec.disabled:
        raise InvalidOperation("the alarm is disabled")
    tx = Tx(rec, policy)
    run_timers(tx, now)
    r = tx.rec
    if event_id is not None and event_id != r.event_id:
        raise StaleEvent(f"event {event_id} is not the alarm's current episode (it was closed or superseded)")
    if r.state is S.UNACK_ACTIVE:
        new = replace(quiet(r), state=S.ACK_ACTIVE, acked_by=op.user, acked_at=now,
                      realarm_at=now + policy.realarm_us if policy.realarm_us and r.annunciating else None)
        ev = tx.emit(EventKind.ACKED, now, new, op=op)
        if policy.notify_ack and r.notified and can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "acknowledged", ev)
    elif r.state is S.RTN_UNACK:
        since = r.active_since
        ev = tx.emit(EventKind.ACKED, now, closed(replace(r, acked_by=op.user, acked_at=now)), op=op)
        if r.notified and tx.rec.annunciating:
            tx.notify(IntentKind.RESOLVE, "acknowledged", ev, since=since)
    elif r.state is S.LATCHED_UNACK:
        ev = tx.emit(EventKind.ACKED, now, replace(quiet(r), state=S.LATCHED_ACK, acked_by=op.user, acked_at=now),
                     op=op)
        if policy.notify_ack and r.notified and can_page(tx.rec):
            tx.notify(IntentKind.UPDATE, "acknowledged", ev)
    else:
        raise NothingToAcknowledge(f"alarm is {r.state.value}: nothing to acknowledge")
    return tx.outcome()


def reset(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T10; T11 refuses (and audits) a reset while the condition is abnormal or before the ack."""
    require(op)
    if not rec.state.latched:
        raise InvalidOperation(f"alarm is {rec.state.value}: only latched alarms are reset")
    tx = Tx(rec, policy)
    run_timers(tx, now)
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
    ev = tx.emit(EventKind.RESET, now, closed(r), op=op)
    if r.notified and tx.rec.annunciating:
        tx.notify(IntentKind.RESOLVE, "reset", ev, since=since)
    return tx.outcome()


def shelve(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, *, kind: ShelveKind = ShelveKind.TIMED,
           duration_us: int | None = None) -> Outcome:
    """T15. Timed shelving needs a duration ≤ ``max_shelve``; one-shot needs an active alarm and ends when it
    clears (bounded by ``max_shelve``). User and reason are mandatory."""
    require(op, reason=True)
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
    tx = Tx(rec, policy)
    run_timers(tx, now)
    if kind is ShelveKind.ONE_SHOT and not tx.rec.cond:
        raise ShelveRejected("one-shot shelving applies to an active alarm")
    info = ShelveInfo(kind, until, op.user, op.comment, now)
    tx.emit(EventKind.SHELVED, now, replace(quiet(tx.rec), shelve=info, reeval_pending=True), op=op,
            reason=kind.value)
    return tx.outcome()


def unshelve(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T18: unshelve by the operator, then re-evaluate."""
    require(op)
    tx = Tx(rec, policy)
    run_timers(tx, now)
    if tx.rec.shelve is None:
        raise InvalidOperation("the alarm is not shelved")
    unshelve_now(tx, now, op, "operator")
    return tx.outcome()


def remove_from_service(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T21 (maintenance, MOC): user and reason mandatory."""
    require(op, reason=True)
    if rec.oos is not None:
        raise InvalidOperation("the alarm is already out of service")
    tx = Tx(rec, policy)
    run_timers(tx, now)
    tx.emit(EventKind.REMOVED_FROM_SERVICE, now,
            replace(quiet(tx.rec), oos=OosInfo(op.user, op.comment, now), reeval_pending=True), op=op)
    return tx.outcome()


def return_to_service(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T22: back in service, then re-evaluate."""
    require(op)
    if rec.oos is None:
        raise InvalidOperation("the alarm is in service")
    tx = Tx(rec, policy)
    run_timers(tx, now)
    new, mode = prepare_release(replace(tx.rec, oos=None), policy, now)
    tx.emit(EventKind.RETURNED_TO_SERVICE, now, new, op=op)
    finish_release(tx, mode, now, "returned_to_service")
    return tx.outcome()


def deny(rec: AlarmRecord, op: Operator, action: str, policy: AlarmPolicy, now: int) -> Outcome:
    """Audit an unauthorized request (counted by the "zero unauthorized changes" KPI)."""
    tx = Tx(rec, policy)
    tx.emit(EventKind.OPERATION_DENIED, now, rec, op=op, reason=action)
    return tx.outcome()


def reconfigured(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int, detail: str) -> Outcome:
    """Audit an attribute change (MOC: setpoint, priority …) with user and reason. The engine then feeds the
    re-evaluated condition (:meth:`alarms.rules.Evaluator.reconfigure`) through :func:`on_condition`."""
    tx = Tx(rec, policy)
    run_timers(tx, now)
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
    tx = Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    run_timers(tx, now)
    r = tx.rec
    groups = set(r.sbd_groups)
    if active == (group in groups):
        return tx.outcome()
    if active:
        groups.add(group)
        tx.emit(EventKind.SUPPRESSED, now, replace(quiet(r), sbd_groups=tuple(sorted(groups)), sbd_grace_until=None,
                                                   reeval_pending=True), reason=group)
        return tx.outcome()
    groups.discard(group)
    grace = max(policy.sbd_grace_us, policy.on_delay_us)
    new = replace(r, sbd_groups=tuple(sorted(groups)))
    if not groups and grace > 0:
        tx.emit(EventKind.UNSUPPRESSED, now, replace(new, sbd_grace_until=now + grace), reason=group)
    else:
        new, mode = prepare_release(new, policy, now)
        tx.emit(EventKind.UNSUPPRESSED, now, new, reason=group)
        finish_release(tx, mode, now, "unsuppressed")
    return tx.outcome()


def set_inhibited(rec: AlarmRecord, inhibited: bool, policy: AlarmPolicy, now: int, *, source: str = "") -> Outcome:
    """Comm loss of the alarm's source holds the alarm back (Alertmanager-style inhibition). When comms
    return the alarm resumes: it pages only if it became active without having been paged."""
    tx = Tx(rec, policy)
    if rec.disabled or rec.inhibited == inhibited:
        return tx.outcome()
    run_timers(tx, now)
    if inhibited:
        tx.emit(EventKind.INHIBITED, now, replace(tx.rec, inhibited=True, reminder_at=None, escalate_at=None),
                reason=source)
    else:
        new, mode = prepare_release(replace(tx.rec, inhibited=False), policy, now)
        tx.emit(EventKind.UNINHIBITED, now, new, reason=source)
        finish_release(tx, mode, now, "comms_restored")
    return tx.outcome()


def disable(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """T23 (config: disabled or deleted). An open episode is closed in an orderly way (one RESOLVE if it was
    paged); afterwards the alarm produces no events until :func:`enable`. Idempotent."""
    tx = Tx(rec, policy)
    if rec.disabled:
        return tx.outcome()
    run_timers(tx, now)
    r = tx.rec
    since = r.active_since
    new = replace(closed(r), disabled=True, cond=False, level=None, chatter_times=(), chattering=False,
                  reeval_pending=False, sbd_grace_until=None)
    ev = tx.emit(EventKind.DISABLED, now, new, op=op)
    if r.notified and r.event_id is not None and r.annunciating:
        tx.notify(IntentKind.RESOLVE, "disabled", ev, since=since)
    return tx.outcome()


def enable(rec: AlarmRecord, op: Operator, policy: AlarmPolicy, now: int) -> Outcome:
    """Back from DISABLED in NORMAL; the engine then feeds the evaluator's current condition."""
    tx = Tx(rec, policy)
    if not rec.disabled:
        return tx.outcome()
    tx.emit(EventKind.ENABLED, now, replace(rec, disabled=False, state=S.NORMAL, cond=False), op=op)
    return tx.outcome()
