"""Digital, discrepancy and comm-loss evaluators (scenarios 17 and 19)."""

from __future__ import annotations

import json
import math

from alarms.model import US, AlarmPolicy, EventKind, IntentKind, Level, Priority
from alarms.rules import LimitEvaluator, LimitParams, Sample
from alarms.signals import BoolParams, CommLossEvaluator, DigitalEvaluator, DiscrepancyEvaluator
from alarms.testing import T0, AlarmHarness
from ingestd.model import STATUS_COMM_LOSS, Quality


def test_s17_digital_off_normal() -> None:
    ev = DigitalEvaluator(normal=1.0, params=BoolParams(on_delay_us=2 * US))
    h = AlarmHarness(AlarmPolicy(priority=Priority.HIGH), ev)
    h.feed(1.0)
    h.advance(5)
    h.feed(0.0)  # pump stopped
    h.advance(1)
    assert h.journal == []
    h.advance(2)
    assert [e.kind for e in h.journal] == [EventKind.ACTIVATED]
    assert h.conditions[-1].limit == 1.0 and h.conditions[-1].value == 0.0
    h.feed(1.0)
    assert h.journal[-1].kind is EventKind.CLEARED


def test_s17_discrepancy_commanded_run_but_stopped() -> None:
    ev = DiscrepancyEvaluator(0.0, BoolParams(on_delay_us=30 * US))
    h = AlarmHarness(AlarmPolicy(), ev)
    h.feed(0.0, role="fb")
    h.feed(0.0, role="cmd")
    h.advance(1)
    h.feed(1.0, role="cmd")  # command RUN
    h.advance(20)
    h.feed(1.0, role="fb")  # feedback follows within the tolerance time: no alarm
    h.advance(60)
    assert h.journal == []
    h.feed(0.0, role="cmd")
    h.advance(1)
    h.feed(1.0, role="cmd")  # RUN again (feedback still 1 from before: consistent) ...
    h.advance(1)
    h.feed(0.0, role="fb")  # ... then the pump trips while commanded to run
    t = h.now
    h.advance(60)
    assert [(e.kind, e.at) for e in h.journal] == [(EventKind.ACTIVATED, t + 30 * US)]
    assert h.conditions[-1].value == 0.0 and h.conditions[-1].limit == 1.0


def test_s17_discrepancy_freezes_on_bad_input() -> None:
    ev = DiscrepancyEvaluator(0.0, BoolParams(on_delay_us=10 * US))
    ev.update("cmd", Sample(T0, 1.0), T0)
    ev.update("fb", Sample(T0, 0.0), T0)
    assert ev.next_deadline() == T0 + 10 * US
    ev.update("fb", Sample(T0 + US, math.nan, Quality.BAD), T0 + US)
    assert ev.next_deadline() is None and ev.tick(T0 + 60 * US) == []


def test_s19_comm_loss_stale_and_down() -> None:
    ev = CommLossEvaluator(stale_us=60 * US, created_at=T0)
    assert ev.next_deadline() == T0 + 60 * US
    assert ev.seen(T0 + 10 * US) == []
    c = ev.tick(T0 + 200 * US)
    assert [(x.active, x.at) for x in c] == [(True, T0 + 70 * US)]  # exact: last seen + stale_after
    c = ev.seen(T0 + 201 * US)
    assert [x.active for x in c] == [False]
    assert [x.active for x in ev.status(False, T0 + 202 * US)] == [True]
    assert ev.seen(T0 + 203 * US) == []  # data while reported down: still down
    assert [x.active for x in ev.status(True, T0 + 204 * US)] == [False]
    snap = json.loads(json.dumps(ev.snapshot()))
    ev2 = CommLossEvaluator(stale_us=60 * US)
    ev2.restore(snap)
    assert ev2.snapshot() == ev.snapshot() and ev2.next_deadline() == T0 + 264 * US


def test_s19_never_heard_from_is_comm_loss() -> None:
    ev = CommLossEvaluator(stale_us=30 * US, created_at=T0)
    assert [c.active for c in ev.tick(T0 + 31 * US)] == [True]


def test_s19_one_comm_alarm_inhibits_the_sources_tag_alarms_and_restore_raises_once() -> None:
    """End-to-end per alarm: comm alarm + two tag alarms of the same RTU."""
    comm = AlarmHarness(AlarmPolicy(priority=Priority.HIGH, tag="rtu_7"), CommLossEvaluator(60 * US, created_at=T0),
                        alarm_id="comm@rtu_7")
    tags = {name: AlarmHarness(AlarmPolicy(tag=name), LimitEvaluator([LimitParams(Level.LO, 10.0)]),
                               alarm_id=f"lo@{name}", clock=comm.clock)
            for name in ("well_1/flow", "well_2/flow")}
    tags["well_1/flow"].feed(5.0)  # in alarm before the outage (paged)
    tags["well_2/flow"].feed(50.0)
    comm.evaluator.seen(comm.now)  # type: ignore[union-attr]
    comm.advance(120)  # silence → stale → comm alarm
    assert comm.rec.cond and len(comm.of(IntentKind.RAISE)) == 1
    for h in tags.values():  # the engine inhibits the tag alarms of the source
        h.inhibit(True, "rtu_7")
        h.feed(math.nan, quality=Quality.BAD, status=STATUS_COMM_LOSS)  # core marks the tags stale
    comm.advance(600)
    assert all(h.rec.inhibited for h in tags.values())
    assert [i for h in tags.values() for i in h.intents if i.reason != "activated"] == []
    comm._conditions(comm.evaluator.seen(comm.now))  # type: ignore[union-attr]
    assert not comm.rec.cond
    for h in tags.values():
        h.inhibit(False, "rtu_7")
        h.advance(1)
    tags["well_1/flow"].feed(4.0)  # first good value: still in alarm — it was paged before, no second page
    tags["well_2/flow"].feed(3.0)  # went low during the outage: raises exactly once
    assert len(tags["well_1/flow"].of(IntentKind.RAISE)) == 1
    assert [i.reason for i in tags["well_2/flow"].of(IntentKind.RAISE)] == ["activated"]
