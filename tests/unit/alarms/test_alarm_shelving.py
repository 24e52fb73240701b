"""Shelving, suppression by design, out of service, inhibition (reference/alarms.md §6.4, T15–T22) and replay."""

from __future__ import annotations

import json

import pytest

from alarms.errors import InvalidOperation, MissingAudit, ShelveRejected
from alarms.model import (
    US,
    AlarmPolicy,
    AlarmRecord,
    AlarmState,
    EventKind,
    IntentKind,
    JournalEvent,
    Level,
    Priority,
)
from alarms.replay import JournalGap, live, out_of_service, replay, replay_one, shelved, suppressed
from alarms.testing import T0, AlarmHarness

S = AlarmState
MIN = 60


def P(**kw: object) -> AlarmPolicy:
    return AlarmPolicy(priority=Priority.HIGH, tag="well_1/flow", site="well_1", **kw)  # type: ignore[arg-type]


def raises(h: AlarmHarness) -> list[tuple[str, int]]:
    return [(i.reason, i.at) for i in h.of(IntentKind.RAISE)]


def test_s25_timed_shelve_expiry_with_condition_still_active() -> None:
    """T15, T16: at expiry → UNACK_ACTIVE and a new notification; the shelved period is journaled."""
    h = AlarmHarness(P())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.ack("jane")
    h.shelve(30 * MIN, user="jane", reason="sensor being recalibrated")
    assert h.rec.display_state == "SHELVED" and h.rec.shelve is not None
    assert h.rec.shelve.until == T0 + 30 * MIN * US
    h.advance(40 * MIN)
    unshelved = next(e for e in h.journal if e.kind is EventKind.UNSHELVED)
    assert (unshelved.at, unshelved.reason) == (T0 + 30 * MIN * US, "expired")
    assert h.journal[-1].kind is EventKind.REANNUNCIATED and h.rec.state is S.UNACK_ACTIVE
    assert raises(h) == [("activated", T0), ("expired", T0 + 30 * MIN * US)]
    assert [e.kind for e in h.journal].count(EventKind.SHELVED) == 1


def test_s26_timed_shelve_expiry_with_condition_cleared() -> None:
    h = AlarmHarness(P())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.shelve(30 * MIN)
    h.advance(5 * MIN)
    h.cond(False)
    assert h.rec.state is S.RTN_UNACK  # evaluated while shelved
    n = len(h.intents)
    h.advance(30 * MIN)
    assert h.rec.state is S.NORMAL and h.rec.shelve is None
    assert h.journal[-1].kind is EventKind.CLOSED
    assert len(h.intents) == n  # no notification


def test_s27_one_shot_shelve_clears_when_inactive() -> None:
    """T17: then a re-activation annunciates normally."""
    h = AlarmHarness(P())
    with pytest.raises(ShelveRejected):
        h.shelve(one_shot=True)  # needs an active alarm
    h.cond(True, Level.HI, 105.0, 100.0)
    h.shelve(one_shot=True, reason="bouncing around HI during start-up")
    h.cond(False)
    assert h.rec.shelve is None and h.rec.state is S.NORMAL
    assert any(e.kind is EventKind.UNSHELVED and e.reason == "one_shot_cleared" for e in h.journal)
    h.advance(60)
    h.cond(True, Level.HI, 105.0, 100.0)
    assert [r for r, _ in raises(h)] == ["activated", "activated"]


def test_s28_shelve_limits_audit_list_and_unshelve() -> None:
    """MaxTimeShelved, mandatory user and reason, shelved list, unshelve before expiry (T18)."""
    h = AlarmHarness(P(max_shelve_us=8 * 3600 * US))
    h.cond(True, Level.HI, 105.0, 100.0)
    with pytest.raises(ShelveRejected, match="maximum"):
        h.shelve(9 * 3600)
    with pytest.raises(MissingAudit):
        h.shelve(600, reason="")
    with pytest.raises(MissingAudit):
        h.shelve(600, user=" ")
    with pytest.raises(InvalidOperation):
        h.unshelve()
    h.shelve(3600, user="jane", reason="MOC-9")
    assert [r.alarm_id for r in shelved(replay(h.journal))] == [h.rec.alarm_id]
    assert h.journal[-1].user == "jane" and h.journal[-1].comment == "MOC-9"
    h.advance(10 * MIN)
    h.unshelve("bob")
    assert h.rec.shelve is None and h.rec.state is S.UNACK_ACTIVE
    assert raises(h)[-1] == ("unshelved", T0 + 10 * MIN * US)
    assert shelved(replay(h.journal)) == []


def test_s29_restart_while_shelved_keeps_the_absolute_unshelve_time() -> None:
    h = AlarmHarness(P())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.shelve(30 * MIN)
    h.advance(10 * MIN)
    snapshot = json.loads(json.dumps(h.rec.to_dict()))
    h2 = AlarmHarness(h.policy, clock=h.clock)  # the daemon restarts
    h2.rec = AlarmRecord.from_dict(snapshot)
    h2.journal = list(h.journal)
    h2.clock.advance(5 * MIN)  # down for 5 minutes
    h2.advance(14 * MIN)
    assert h2.intents == [] and h2.rec.shelve is not None  # not re-annunciated early
    h2.advance(2 * MIN)
    assert [(i.reason, i.at) for i in h2.intents] == [("expired", T0 + 30 * MIN * US)]
    assert h2.replayed() == h2.rec


def test_s30_suppressed_by_design_with_startup_grace_no_burst() -> None:
    """T19/T20: pump off suppresses the well's LO flow alarm; start-up grace after the pump restarts."""
    h = AlarmHarness(P(sbd_grace_us=5 * MIN * US))
    h.suppress(True, "pump_off@well_1")
    h.cond(True, Level.LO, 0.0, 10.0)  # no flow while the pump is off: evaluated and journaled
    assert h.rec.display_state == "SUPPRESSED_BY_DESIGN" and h.journal[-1].kind is EventKind.ACTIVATED
    h.advance(3600)
    h.suppress(False, "pump_off@well_1")  # pump restarts
    assert h.rec.sbd_grace_until == h.now + 5 * MIN * US
    h.advance(2 * MIN)
    h.cond(False)  # flow comes up within the grace period
    h.advance(5 * MIN)
    assert h.rec.state is S.NORMAL and h.rec.annunciating
    assert h.intents == []  # no burst of alarms on the transition


def test_s30_low_flow_persisting_beyond_grace_raises_once() -> None:
    h = AlarmHarness(P(sbd_grace_us=5 * MIN * US))
    h.suppress(True)
    h.cond(True, Level.LO, 0.0, 10.0)
    h.advance(MIN)
    h.suppress(False)
    h.advance(10 * MIN)
    assert raises(h) == [("unsuppressed", T0 + 6 * MIN * US)]


@pytest.mark.parametrize(("clears_after", "expect_raise"), [(30, False), (None, True)])
def test_s31_unsuppression_while_active_raises_only_if_it_outlasts_the_on_delay(
        clears_after: int | None, expect_raise: bool) -> None:
    h = AlarmHarness(P(on_delay_us=60 * US))
    h.suppress(True)
    h.cond(True, Level.LO, 0.0, 10.0)
    h.advance(600)
    h.suppress(False)
    if clears_after is not None:
        h.advance(clears_after)
        h.cond(False)
    h.advance(120)
    assert bool(h.of(IntentKind.RAISE)) is expect_raise


def test_s32_out_of_service_never_notifies_is_listed_and_re_evaluates() -> None:
    """T21/T22 and the unauthorized-change audit."""
    h = AlarmHarness(P())
    with pytest.raises(MissingAudit):
        h.remove_from_service(reason="")
    h.remove_from_service("tech", "MOC-42 transmitter replacement")
    with pytest.raises(InvalidOperation):
        h.remove_from_service("tech", "again")
    h.cond(True, Level.HI, 105.0, 100.0)
    h.advance(3600)
    assert h.intents == [] and h.rec.display_state == "OUT_OF_SERVICE"
    assert [r.alarm_id for r in out_of_service(replay(h.journal))] == [h.rec.alarm_id]
    h.return_to_service("tech")
    assert h.rec.oos is None and raises(h) == [("returned_to_service", h.now)]
    from alarms import state as sm
    from alarms.model import Operator
    out = sm.deny(h.rec, Operator("intruder", "remove_from_service"), "remove_from_service", h.policy, h.now)
    assert out.events[0].kind is EventKind.OPERATION_DENIED and out.record.oos is None


def test_s19_s49_inhibited_alarm_already_in_alarm_raises_exactly_once() -> None:
    """Comm loss holds the tag alarm back; on restore it resumes without a duplicate page."""
    h = AlarmHarness(P())
    h.cond(True, Level.HI, 105.0, 100.0)  # paged before the comm loss
    h.inhibit(True)
    h.advance(600)
    h.inhibit(False)
    assert len(h.of(IntentKind.RAISE)) == 1

    h2 = AlarmHarness(P())
    h2.inhibit(True)
    h2.cond(True, Level.HI, 105.0, 100.0)  # went into alarm while inhibited: not paged yet
    h2.advance(600)
    assert h2.intents == []
    h2.inhibit(False)
    assert [i.reason for i in h2.of(IntentKind.RAISE)] == ["comms_restored"]
    h2.inhibit(True)
    h2.inhibit(False)
    assert len(h2.of(IntentKind.RAISE)) == 1


def test_overlapping_suppressions_release_only_when_all_end() -> None:
    h = AlarmHarness(P())
    h.cond(True, Level.HI, 105.0, 100.0)
    h.shelve(10 * MIN)
    h.suppress(True)
    h.advance(15 * MIN)  # shelve expired, still suppressed by design
    assert h.of(IntentKind.RAISE)[-1].reason == "activated"
    h.suppress(False)
    assert h.of(IntentKind.RAISE)[-1].reason == "unsuppressed"
    assert len(h.of(IntentKind.RAISE)) == 2


def test_s40_journal_replay_rebuilds_state_and_lists() -> None:
    hs = [AlarmHarness(P(), alarm_id=f"r@well_{k}/p") for k in range(4)]
    for h in hs:
        h.cond(True, Level.HI, 105.0, 100.0)
    hs[0].ack("a")
    hs[1].shelve(3600)
    hs[2].remove_from_service()
    hs[3].suppress(True)
    hs[0].cond(False)
    journal: list[JournalEvent] = [e for h in hs for e in h.journal]
    rows = [JournalEvent.from_dict(json.loads(json.dumps(e.to_dict()))) for e in reversed(journal)]
    recs = replay(rows)
    assert recs == {h.rec.alarm_id: h.rec for h in hs}
    assert [r.alarm_id for r in live(recs)] == sorted(h.rec.alarm_id for h in hs[1:])
    assert [r.alarm_id for r in shelved(recs)] == [hs[1].rec.alarm_id]
    assert [r.alarm_id for r in out_of_service(recs)] == [hs[2].rec.alarm_id]
    assert [r.alarm_id for r in suppressed(recs)] == [hs[3].rec.alarm_id]
    with pytest.raises(JournalGap):
        replay_one(hs[0].rec.alarm_id, "acme", hs[0].journal[1:])
