"""The synchronous core of a tenant's alarm engine (alarms/runtime.py) with a fake clock, a real tag registry
and no database: fast path, comm-loss freezing and inhibition, the bounded write buffer, DB-down delivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from alarms.metrics import AlarmMetrics
from alarms.model import US, NotificationIntent, Operator
from alarms.runtime import AlarmCore
from ingestd.model import Batch
from ingestd.pipeline.tags import TagMeta, TagRegistry
from tests.support.daemon import parse

T0 = 1_767_225_600_000_000
SOURCE = {"name": "rtu", "protocol": "mqtt", "connection": {"host": "127.0.0.1", "port": 1883},
          "subscriptions": [{"topic": "x/{tag}", "tag": "{tag}"}]}


class Env:
    def __init__(self, rules: list[dict[str, Any]], tags: Sequence[str], **kw: Any) -> None:
        self.cfg = parse({"tenants": [{"slug": "acme", "dsn": "postgresql://u@127.0.0.1:1/x"}], "sources": [SOURCE],
                          "alarms": {"rules": rules}})
        self.reg = TagRegistry("acme")
        self.keys = {t: self.reg.ensure(TagMeta(t, "rtu")) for t in tags}
        self.down: dict[str, bool | None] = {"rtu": False}
        self.direct: list[NotificationIntent] = []
        self.metrics = AlarmMetrics.of(CollectorRegistry())
        self.core = AlarmCore("acme", self.reg, self.cfg, self.metrics, lambda s: self.down.get(s), self.reg.ensure,
                              self.direct.extend, **kw)
        self.now = T0
        self.core.attach([], self.now)

    def feed(self, values: dict[str, float], dt: float = 0.1) -> None:
        self.now += round(dt * US)
        names = list(values)
        key = np.array([self.keys[n] for n in names], np.int32)
        b = Batch.of(key, np.full(len(names), self.now, np.int64), [values[n] for n in names], recv_us=self.now)
        self.reg.update_live(b.key, b.ts, b.value, b.quality, b.status, b.recv_us)
        self.core.process(b, self.now)
        self.core.run_timers(self.now)

    def advance(self, seconds: float) -> None:
        target = self.now + round(seconds * US)
        while (due := self.core.next_due()) is not None and due <= target:
            self.now = due
            self.core.run_timers(due)
        self.now = target
        self.core.tick(self.now)
        self.core.run_timers(self.now)

    def kinds(self, aid: str) -> list[str]:
        p = self.core.buffer.take()
        self.core.buffer.put_back(p)
        return [e.kind.value for e in p.events if e.alarm_id == aid]


def limit(name: str, tags: list[str], **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "limit", "tags": tags, "hi": {"setpoint": 100.0, "deadband": 5.0}, **kw}


def test_tags_without_rules_are_masked_and_quiet_samples_stay_in_numpy() -> None:
    tags = [f"w{i}.p" for i in range(1000)]
    env = Env([limit("hi", [f"w{i}.p" for i in range(0, 1000, 4)])], tags)
    for step in range(5):
        env.feed(dict.fromkeys(tags, 50.0 + step))
    env.core.flush_counts()
    fast = env.metrics.samples.labels("acme", "fast")._value.get()
    slow = env.metrics.samples.labels("acme", "slow")._value.get()
    assert fast == 250 * 5 and slow == 0
    env.feed({"w0.p": 150.0, "w1.p": 150.0})  # w1 has no rule
    assert env.kinds("hi@w0.p") == ["ACTIVATED"]
    assert [a for a in env.core.alarms if a.startswith("hi@w1.")] == []


def test_comm_loss_freezes_pending_delays_and_inhibits_the_source_alarms() -> None:
    rules = [limit("hi", ["w*.p"], hi={"setpoint": 100.0, "on_delay": "5s"}),
             {"name": "comms", "kind": "comm_loss", "sources": ["rtu"]}]
    env = Env(rules, ["w1.p", "w2.p"])
    env.feed({"w1.p": 50.0, "w2.p": 150.0})  # w2: on-delay of 5 s starts
    env.advance(1)
    env.down["rtu"] = True
    env.reg.stale[:] = True
    env.advance(1)
    assert env.kinds("comms@rtu") == ["ACTIVATED"]
    assert env.kinds("hi@w2.p") == ["INHIBITED"], "frozen: the pending on-delay was cancelled"
    env.advance(10)
    assert "ACTIVATED" not in env.kinds("hi@w2.p")
    env.down["rtu"] = False
    env.advance(1)
    assert env.kinds("comms@rtu") == ["ACTIVATED", "CLEARED"]
    assert env.kinds("hi@w2.p") == ["INHIBITED", "UNINHIBITED"]
    env.feed({"w2.p": 150.0})  # first value after comms returned: evaluated afresh (on-delay again)
    env.advance(6)
    assert env.kinds("hi@w2.p")[-1] == "ACTIVATED"


def test_write_buffer_is_bounded_but_state_rows_stay_exact() -> None:
    env = Env([limit("hi", ["w1.p"])], ["w1.p"], buffer_events=5)
    for i in range(20):
        env.feed({"w1.p": 150.0 if i % 2 == 0 else 40.0}, dt=5.0)
    assert len(env.core.buffer) <= 5
    assert env.metrics.buffer_dropped.labels("acme")._value.get() >= 15
    (row,) = env.core.state_rows(["hi@w1.p"])
    assert row.record == env.core.alarms["hi@w1.p"].record.to_dict()


def test_while_the_database_is_down_intents_go_to_the_sender_directly() -> None:
    env = Env([limit("hi", ["w1.p"])], ["w1.p"])
    env.core.db_down = True
    env.feed({"w1.p": 150.0})
    assert [i.kind.value for i in env.direct] == ["raise"]
    env.core.db_down = False
    env.feed({"w1.p": 40.0})
    assert len(env.direct) == 1


def test_latching_alarm_needs_ack_and_reset_and_refusals_are_audited() -> None:
    env = Env([limit("hi", ["w1.p"], latching=True)], ["w1.p"])
    env.feed({"w1.p": 150.0})
    env.feed({"w1.p": 40.0})
    aid = "hi@w1.p"
    assert env.core.alarms[aid].record.state.value == "LATCHED_UNACK"
    out, _ = env.core.reset(aid, Operator("jane"), env.now)
    assert out.refused == "acknowledge before reset"
    env.core.ack(aid, Operator("jane"), env.now)
    out, _ = env.core.reset(aid, Operator("jane", "cleared on site"), env.now)
    assert out.refused is None and out.record.state.value == "NORMAL"
    assert env.kinds(aid) == ["ACTIVATED", "CLEARED", "RESET_REFUSED", "ACKED", "RESET"]
