"""Timers of the state machine (pure): shelve expiry (T16), start-up grace, re-alarm (T13), reminders,
escalation, chatter clearing and the stale flag — all absolute deadlines kept in the record, each fired
and journaled at its own deadline however late :func:`tick` is called.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from .machine import Tx, can_page, finish_release, paged, prepare_release, unshelve_now
from .model import SYSTEM, AlarmPolicy, AlarmRecord, AlarmState, EventKind, IntentKind, Outcome

__all__ = ["fire", "next_deadline", "pending_timers", "run_timers", "tick"]

_MAX_TIMER_STEPS: Final = 64
S = AlarmState


def pending_timers(rec: AlarmRecord, policy: AlarmPolicy) -> list[tuple[int, str]]:
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
    due = pending_timers(rec, policy)
    return min(t for t, _ in due) if due else None


def tick(rec: AlarmRecord, policy: AlarmPolicy, now: int) -> Outcome:
    """Fire every timer due at or before ``now`` (shelve expiry T16, start-up grace, re-alarm T13, reminders,
    escalation, chatter clearing, stale flag), each journaled at its own deadline."""
    tx = Tx(rec, policy)
    if not rec.disabled:
        run_timers(tx, now)
    return tx.outcome()


def run_timers(tx: Tx, upto: int) -> None:
    for _ in range(_MAX_TIMER_STEPS):
        due = [d for d in pending_timers(tx.rec, tx.policy) if d[0] <= upto]
        if not due:
            return
        at, what = min(due)
        fire(tx, what, at, upto)


def fire(tx: Tx, what: str, at: int, upto: int) -> None:
    r, p = tx.rec, tx.policy
    if what == "shelve":
        unshelve_now(tx, at, SYSTEM, "expired")
    elif what == "grace":
        new, mode = prepare_release(replace(r, sbd_grace_until=None), p, at)
        tx.emit(EventKind.GRACE_ENDED, at, new)
        finish_release(tx, mode, at, "unsuppressed")
    elif what == "realarm":  # T13
        base = replace(r, state=S.UNACK_ACTIVE, occurrence=r.occurrence + 1, acked_by=None, acked_at=None,
                       realarm_at=None)
        page = can_page(base)
        ev = tx.emit(EventKind.REALARMED, at, paged(base, p, at) if page else base, reason="re-alarm time elapsed")
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
        if can_page(tx.rec):
            tx.notify(IntentKind.REMINDER, "reminder", ev)
    elif what == "escalate":
        ev = tx.emit(EventKind.ESCALATION, at, replace(r, escalate_at=None, escalated=True), reason="unacknowledged")
        if can_page(tx.rec):
            tx.notify(IntentKind.ESCALATE, "unacknowledged", ev)
    elif what == "chatter":
        new = replace(r, chattering=False, chatter_times=())
        mode_raise = new.state is S.UNACK_ACTIVE and new.annunciating
        if mode_raise and new.notified:
            t = p.timing_for(new.priority or p.priority)
            new = replace(new, reminder_at=at + t.reminder_us if t.reminder_us else None)
        elif mode_raise:
            new = paged(new, p, at)
        ev = tx.emit(EventKind.CHATTER_CLEARED, at, new)
        if mode_raise:
            tx.notify(IntentKind.UPDATE if r.notified else IntentKind.RAISE, "chatter_cleared", ev,
                      annunciation=not r.notified)
    else:  # stale
        tx.emit(EventKind.STALE, at, replace(r, stale=True), reason="active longer than the stale threshold")
