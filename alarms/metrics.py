"""Prometheus series of the alarm engine, registered on the daemon's registry (once per registry).

Labels are tenant slugs, priorities, route names, result and reason words — never webhook URLs.
"""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AlarmMetrics"]

_EVAL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class AlarmMetrics:
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, AlarmMetrics]] = weakref.WeakKeyDictionary()

    def __init__(self, r: CollectorRegistry) -> None:
        self.active = Gauge("ingestd_alarms_active", "Alarms not in NORMAL (incl. shelved/suppressed ones), by "
                            "priority", ["tenant", "priority"], registry=r)
        self.annunciated = Gauge("ingestd_alarms_annunciated", "Active alarms that are annunciated (not shelved, "
                                 "suppressed, out of service or inhibited)", ["tenant", "priority"], registry=r)
        self.transitions = Counter("ingestd_alarm_transitions_total", "Alarm journal events, by kind",
                                   ["tenant", "kind"], registry=r)
        self.notifications = Counter("ingestd_notifications_total", "Notification cards by route and result "
                                     "(accepted, rejected, exhausted, invalid, dropped)", ["tenant", "route", "result"],
                                     registry=r)
        self.outbox_pending = Gauge("ingestd_alarm_outbox_pending", "Outbox rows not yet sent (database)",
                                    ["tenant"], registry=r)
        self.buffered = Gauge("ingestd_alarm_write_buffer_events", "Journal events waiting for the tenant database "
                              "(in memory, e.g. while it is down)", ["tenant"], registry=r)
        self.buffer_dropped = Counter("ingestd_alarm_write_buffer_dropped_total", "Journal events dropped because "
                                      "the in-memory write buffer was full (the current state is still written)",
                                      ["tenant"], registry=r)
        self.samples = Counter("ingestd_alarm_samples_total", "Samples of alarmed tags, by evaluation path "
                               "(fast = vectorised quiet filter, slow = evaluator)", ["tenant", "path"], registry=r)
        self.samples_dropped = Counter("ingestd_alarm_samples_dropped_total", "Samples not evaluated, by reason",
                                       ["tenant", "reason"], registry=r)
        self.eval_seconds = Histogram("ingestd_alarm_eval_seconds", "Evaluation time of one pass over the queued "
                                      "batches of a tenant", ["tenant"], buckets=_EVAL_BUCKETS, registry=r)
        self.loaded = Gauge("ingestd_alarm_engine_loaded", "1 once the tenant's alarm state is loaded from its "
                            "database (evaluation starts then)", ["tenant"], registry=r)
        self.configured = Gauge("ingestd_alarms_configured", "Alarm instances bound to the tenant's tags",
                                ["tenant"], registry=r)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> AlarmMetrics:
        m = cls._by_registry.get(registry)
        if m is None:
            m = cls._by_registry[registry] = cls(registry)
        return m
