"""The pure host state machine: births, aliases, seq ordering, rebirth requests, deaths, staleness."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.sparkplug.host import Host, HostSettings, MetricRef, Output, Rebirth, Sample, StatusChange
from adapters.sparkplug.payload import DataType, Metric, Payload
from adapters.sparkplug.topics import MsgType, Topic
from ingestd.model import Quality

from .support import Resolver, bd_seq, metric, payload

RECV = 1_700_000_999_000_000
T0 = 1_700_000_000_000  # payload timestamp (ms)
REBIRTH_FALSE = Metric(name="Node Control/Rebirth", datatype=DataType.BOOLEAN, value_field="boolean_value",
                       value=False)


class Rig:
    def __init__(self, **settings: Any) -> None:
        self.resolver = Resolver()
        self.host = Host(HostSettings(**settings), self.resolver)
        self.now = 100.0

    def send(self, kind: str, p: Payload, node: str = "E1", device: str = "", group: str = "G") -> Output:
        return self.host.handle(Topic(MsgType(kind), group, node, device), p, RECV, self.now)

    def nbirth(self, bd: int = 1, seq: int = 0, node: str = "E1", extra: tuple[Metric, ...] = ()) -> Output:
        return self.send("NBIRTH", payload(
            bd_seq(bd), REBIRTH_FALSE,
            metric("Temp", 1, DataType.DOUBLE, 20.5),
            metric("Count", 2, DataType.INT32, -12),
            metric("Mode", 3, DataType.STRING, "auto"),
            *extra, seq=seq), node=node)

    def dbirth(self, seq: int, device: str = "D1", node: str = "E1") -> Output:
        return self.send("DBIRTH", payload(
            metric("Pressure", 10, DataType.FLOAT, 1.5),
            metric("Valve", 11, DataType.BOOLEAN, True),
            metric("Offset", 12, DataType.INT8, -1), seq=seq), node=node, device=device)

    def ndata(self, seq: int, *metrics: Metric, node: str = "E1") -> Output:
        return self.send("NDATA", payload(*metrics, seq=seq), node=node)

    def ddata(self, seq: int, *metrics: Metric, device: str = "D1") -> Output:
        return self.send("DDATA", payload(*metrics, seq=seq), device=device)

    def key(self, name: str, device: str = "", node: str = "E1") -> int:
        return self.resolver.key(node, name, device)


def count(alias: int, value: Any = -12, **kw: Any) -> Metric:
    return metric(alias=alias, datatype=DataType.INT32, value=value, birth=False, **kw)


def values(out: Output) -> list[tuple[int, float | None]]:
    return [(s.key, s.value) for s in out.samples]


# ---------------------------------------------------------------------------------------------- births and data
def test_nbirth_stores_numeric_metrics_and_brings_the_node_up() -> None:
    rig = Rig()
    out = rig.nbirth()
    assert out.actions[0] == StatusChange(True, "G/E1")
    assert [(r.name, t) for r, t in rig.resolver.calls] == [("Temp", "float"), ("Count", "int")]
    assert values(out) == [(rig.key("Temp"), 20.5), (rig.key("Count"), -12.0)]
    assert all(s.ts_us == T0 * 1000 and s.quality == Quality.GOOD for s in out.samples)
    # the String metric is not stored, reported once per birth with a clear reason
    assert [(p.reason, p.key) for p in out.problems] == [("non_numeric", "G/E1:Mode")]
    assert rig.host.is_online("G", "E1")


def test_alias_only_data_uses_the_birth_datatype_int32_minus_12() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1, count(2, -12))
    assert values(out) == [(rig.key("Count"), -12.0)]
    assert not out.rebirths and not out.problems


def test_data_may_name_metrics_instead_of_aliases() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1, Metric(name="Temp", value_field="double_value", value=21.0))
    assert values(out) == [(rig.key("Temp"), 21.0)]


def test_device_birth_and_data() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.dbirth(1)
    assert out.actions[0] == StatusChange(True, "G/E1/D1")
    assert values(out) == [(rig.key("Pressure", "D1"), 1.5), (rig.key("Valve", "D1"), 1.0),
                           (rig.key("Offset", "D1"), -1.0)]
    out = rig.ddata(2, metric(alias=12, datatype=DataType.INT8, value=-128, birth=False),
                    metric(alias=11, datatype=DataType.BOOLEAN, value=False, birth=False))
    assert values(out) == [(rig.key("Offset", "D1"), -128.0), (rig.key("Valve", "D1"), 0.0)]
    assert rig.host.is_online("G", "E1", "D1")


def test_timestamps_fall_back_from_metric_to_payload_to_receive_time() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1, count(2, 1, ts=T0 + 5))
    assert out.samples[0].ts_us == (T0 + 5) * 1000
    out = rig.send("NDATA", payload(count(2, 2), seq=2, ts=None))
    assert out.samples[0].ts_us == RECV


def test_null_quality_and_stale_flags() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1,
                    Metric(alias=1, is_null=True),
                    count(2, 7, properties={"Quality": 500}),
                    count(2, 8, properties={"Quality": 0}, ts=T0 + 1),
                    count(2, 9, properties={"Quality": 192}, ts=T0 + 2))
    assert [(s.value, s.quality, s.status) for s in out.samples] == [
        (None, Quality.BAD, 0), (7.0, Quality.UNCERTAIN, 500), (None, Quality.BAD, 0), (9.0, Quality.GOOD, 192)]


def test_historical_is_stored_flagged_and_transient_is_not_stored() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1, count(2, 1, is_historical=True, ts=T0 - 60_000), count(2, 2, is_transient=True))
    assert out.samples == [Sample(rig.key("Count"), (T0 - 60_000) * 1000, 1.0, Quality.GOOD, 0, historical=True)]
    assert out.events["historical"] == 1 and out.events["transient_skipped"] == 1


def test_historical_can_be_dropped() -> None:
    rig = Rig(store_historical=False)
    rig.nbirth()
    assert rig.ndata(1, count(2, 1, is_historical=True)).samples == []


def test_transient_birth_metrics_and_excluded_metrics_are_never_resolved() -> None:
    rig = Rig(exclude=("bdSeq", "Node Control/*", "Debug*"))
    rig.nbirth(extra=(metric("Debug level", 4, DataType.INT32, 3),
                      metric("Scratch", 5, DataType.INT32, 1, is_transient=True)))
    assert [r.name for r, _ in rig.resolver.calls] == ["Temp", "Count"]
    assert rig.ndata(1, count(4, 1), count(5, 2)).samples == []  # known aliases, not stored, no rebirth


def test_metrics_refused_by_the_resolver_are_skipped_silently() -> None:
    rig = Rig()
    rig.resolver.refuse = {"Temp"}
    rig.nbirth()
    out = rig.ndata(1, metric(alias=1, datatype=DataType.DOUBLE, value=1.0, birth=False), count(2, 3))
    assert values(out) == [(rig.key("Count"), 3.0)] and not out.rebirths


def test_bad_values_are_rejected_once_per_metric_and_birth() -> None:
    rig = Rig()
    rig.nbirth()
    bad = Metric(alias=2, value_field="string_value", value="12")
    first, second = rig.ndata(1, bad), rig.ndata(2, bad)
    assert first.samples == [] and [p.reason for p in first.problems] == ["type_mismatch"]
    assert second.problems == [] and second.events["value_rejected"] == 1
    assert [p.reason for p in rig.ndata(3, Metric(alias=1, timestamp=2**62, value_field="double_value",
                                                  value=1.0)).problems] == ["bad_timestamp"]


def test_birth_problems() -> None:
    rig = Rig()
    out = rig.nbirth(extra=(Metric(name="NoType", alias=20, value_field="int_value", value=1),
                            metric("Dup", 1, DataType.INT32, 1),
                            metric("Blob", 21, DataType.BYTES, b"x")))
    assert sorted(p.reason for p in out.problems) == ["bad_birth", "duplicate_alias", "non_numeric",
                                                      "unsupported_type"]
    assert values(rig.ndata(1, metric(alias=1, datatype=DataType.DOUBLE, value=2.0, birth=False)))[0][1] == 2.0


def test_commands_and_state_are_ignored() -> None:
    rig = Rig()
    assert rig.send("NCMD", payload()).actions == []
    assert rig.send("DCMD", payload(), device="D1").rebirths == []


# ---------------------------------------------------------------------------------------------- rebirth triggers
def test_data_before_birth_requests_a_rebirth_rate_limited_per_node() -> None:
    rig = Rig(rebirth_interval=5.0)
    out = rig.ndata(7, count(2))
    assert out.samples == [] and out.rebirths == [Rebirth("G", "E1", "NDATA before NBIRTH")]
    assert [(p.reason, p.with_payload) for p in out.problems] == [("data_before_birth", True)]
    rig.now += 4.9
    out = rig.ndata(8, count(2))
    assert out.rebirths == [] and out.problems == [] and out.events["rebirth_suppressed"] == 1
    assert rig.ndata(1, count(2), node="E2").rebirths == [Rebirth("G", "E2", "NDATA before NBIRTH")]  # per node
    rig.now += 0.2
    assert len(rig.ndata(9, count(2)).rebirths) == 1


def test_dbirth_and_ddata_before_nbirth_request_rebirth() -> None:
    rig = Rig()
    assert len(rig.dbirth(1).rebirths) == 1
    rig.nbirth()
    rig.now += 5
    out = rig.ddata(1, count(10))  # device never born
    assert [r.reason for r in out.rebirths] == ["DDATA from device D1 before its DBIRTH"]


def test_unknown_alias_requests_rebirth_but_keeps_known_values() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.ndata(1, count(2, 5), count(99, 1))
    assert values(out) == [(rig.key("Count"), 5.0)]
    assert len(out.rebirths) == 1 and [p.reason for p in out.problems] == ["unknown_alias"]
    assert "alias 99" in out.problems[0].detail


def test_malformed_payload_requests_rebirth_except_for_deaths() -> None:
    rig = Rig()
    out = rig.host.malformed(Topic(MsgType.NDATA, "G", "E1"), "corrupt", rig.now)
    assert [p.reason for p in out.problems] == ["bad_protobuf"] and len(out.rebirths) == 1
    out = rig.host.malformed(Topic(MsgType.NDEATH, "G", "E2"), "corrupt", rig.now)
    assert [p.reason for p in out.problems] == ["bad_protobuf"] and out.rebirths == []


def test_missing_seq_is_processed_and_triggers_rebirth() -> None:
    rig = Rig()
    rig.nbirth()
    out = rig.send("NDATA", payload(count(2, 4)))
    assert values(out) == [(rig.key("Count"), 4.0)]
    assert [p.reason for p in out.problems] == ["bad_seq"] and len(out.rebirths) == 1


# ---------------------------------------------------------------------------------------------- seq ordering
def test_seq_wraps_from_255_to_0_across_node_and_device_messages() -> None:
    rig = Rig()
    rig.nbirth(seq=253)
    assert not rig.dbirth(254).rebirths
    assert values(rig.ndata(255, count(2, 1)))
    out = rig.ddata(0, metric(alias=10, datatype=DataType.FLOAT, value=2.0, birth=False))
    assert values(out) and not out.rebirths and rig.host.next_deadline() is None


def test_out_of_order_messages_are_reordered_within_the_timeout() -> None:
    rig = Rig(reorder_timeout=2.0)
    rig.nbirth()
    held = rig.ndata(2, count(2, 2))
    assert held.samples == [] and rig.host.next_deadline() == rig.now + 2.0
    assert rig.ndata(3, count(2, 3)).samples == []
    rig.now += 1.0
    out = rig.ndata(1, count(2, 1))
    assert [v for _, v in values(out)] == [1.0, 2.0, 3.0]
    assert not out.rebirths and rig.host.next_deadline() is None
    assert values(rig.ndata(4, count(2, 4)))


def test_unfilled_gap_is_processed_and_rebirth_requested_at_the_timeout() -> None:
    rig = Rig(reorder_timeout=2.0)
    rig.nbirth()
    rig.ndata(3, count(2, 3))
    rig.ndata(2, count(2, 2))   # seq 1 is lost
    rig.now += 1.9
    assert rig.host.tick(rig.now).rebirths == []
    rig.now += 0.2
    out = rig.host.tick(rig.now)
    assert [v for _, v in values(out)] == [2.0, 3.0]
    assert [r.reason for r in out.rebirths] == ["seq gap (expected 1) not filled within the reorder timeout"]
    assert rig.host.next_deadline() is None
    assert values(rig.ndata(4, count(2, 4))) and not rig.ndata(5, count(2, 5)).rebirths


def test_zero_reorder_timeout_requests_rebirth_on_the_first_gap() -> None:
    rig = Rig(reorder_timeout=0)
    rig.nbirth()
    out = rig.ndata(5, count(2, 5))
    assert values(out) and [r.reason for r in out.rebirths] == ["seq gap (expected 1, got 5)"]
    assert not rig.ndata(6, count(2, 6)).rebirths


def test_late_and_duplicate_messages_are_stored_without_moving_the_expectation() -> None:
    rig = Rig()
    rig.nbirth()
    rig.ndata(1, count(2, 1))
    out = rig.ndata(1, count(2, 1))
    assert values(out) and out.events["seq_late"] == 1 and not out.rebirths
    assert not rig.ndata(2, count(2, 2)).rebirths


def test_rebirth_nbirth_resets_the_seq_and_discards_held_messages() -> None:
    rig = Rig()
    rig.nbirth()
    rig.ndata(5, count(2, 5))
    assert rig.host.next_deadline() is not None
    rig.nbirth(seq=0)
    assert rig.host.next_deadline() is None
    assert values(rig.ndata(1, count(2, 1))) == [(rig.key("Count"), 1.0)]


# ---------------------------------------------------------------------------------------------- deaths
def test_ndeath_with_matching_bdseq_marks_node_and_devices_down_with_their_points() -> None:
    rig = Rig()
    rig.nbirth(bd=3)
    rig.dbirth(1)
    out = rig.send("NDEATH", payload(bd_seq(3)))
    dev_points = tuple(sorted(rig.key(n, "D1") for n in ("Pressure", "Valve", "Offset")))
    assert out.status == [
        StatusChange(False, "G/E1/D1", "edge node died (NDEATH, bdSeq 3)", dev_points),
        StatusChange(False, "G/E1", "edge node died (NDEATH, bdSeq 3)", (rig.key("Temp"), rig.key("Count"))),
    ]
    assert not rig.host.is_online("G", "E1") and not rig.host.is_online("G", "E1", "D1")
    # data after death is data before birth
    assert len(rig.ndata(2, count(2)).rebirths) == 1


def test_death_with_stale_bdseq_is_ignored() -> None:
    rig = Rig()
    rig.nbirth(bd=4)
    out = rig.send("NDEATH", payload(bd_seq(3)))
    assert out.actions == [] and out.events == {"stale_death": 1}
    assert rig.host.is_online("G", "E1")
    assert rig.send("NDEATH", payload()).events == {"stale_death": 1}  # no bdSeq at all


def test_death_of_an_unknown_or_dead_node_is_ignored() -> None:
    rig = Rig()
    assert rig.send("NDEATH", payload(bd_seq(1))).events == {"death_ignored": 1}
    rig.nbirth(bd=1)
    rig.send("NDEATH", payload(bd_seq(1)))
    assert rig.send("NDEATH", payload(bd_seq(1))).events == {"death_ignored": 1}


def test_death_processes_held_messages_before_going_down() -> None:
    rig = Rig()
    rig.nbirth(bd=1)
    rig.ndata(2, count(2, 2))
    out = rig.send("NDEATH", payload(bd_seq(1)))
    assert isinstance(out.actions[0], Sample) and isinstance(out.actions[-1], StatusChange)
    assert out.rebirths == []


def test_new_birth_brings_the_node_up_again() -> None:
    rig = Rig()
    rig.nbirth(bd=1)
    rig.send("NDEATH", payload(bd_seq(1)))
    out = rig.nbirth(bd=2)
    assert out.actions[0] == StatusChange(True, "G/E1") and values(out)


def test_ddeath_and_dbirth() -> None:
    rig = Rig()
    rig.nbirth()
    rig.dbirth(1)
    out = rig.send("DDEATH", payload(seq=2), device="D1")
    assert out.status == [StatusChange(False, "G/E1/D1", "device died (DDEATH)",
                                       tuple(sorted(rig.key(n, "D1") for n in ("Pressure", "Valve", "Offset"))))]
    assert rig.send("DDEATH", payload(seq=3), device="D1").events["death_ignored"] == 1
    assert len(rig.ddata(4, count(10)).rebirths) == 1
    out = rig.dbirth(5)
    assert out.actions[0] == StatusChange(True, "G/E1/D1")


def test_rebirth_with_same_bdseq_keeps_devices_up_but_forgets_their_aliases() -> None:
    rig = Rig()
    rig.nbirth(bd=1)
    rig.dbirth(1)
    out = rig.nbirth(bd=1)
    assert out.status == [StatusChange(True, "G/E1")]
    assert len(rig.ddata(1, count(10)).rebirths) == 1  # aliases come with the next DBIRTH


def test_new_session_without_death_marks_previous_devices_down() -> None:
    rig = Rig()
    rig.nbirth(bd=1)
    rig.dbirth(1)
    out = rig.nbirth(bd=2)
    assert [(s.up, s.device) for s in out.status] == [(False, "G/E1/D1"), (True, "G/E1")]
    assert "new session" in out.status[0].reason


def test_connection_lost_marks_every_online_node_and_device_down() -> None:
    rig = Rig()
    rig.nbirth(node="E1")
    rig.dbirth(1)
    rig.nbirth(node="E2")
    rig.send("NDEATH", payload(bd_seq(1)), node="E2")
    out = rig.host.connection_lost("broker gone")
    assert [(s.up, s.device, s.reason) for s in out.status] == [(False, "G/E1/D1", "broker gone"),
                                                                (False, "G/E1", "broker gone")]
    assert not rig.host.is_online("G", "E1")


@pytest.mark.parametrize("kind", ["NDATA", "DDATA", "DBIRTH", "DDEATH"])
def test_every_sequenced_message_kind_counts_in_the_node_seq(kind: str) -> None:
    rig = Rig(reorder_timeout=0)
    rig.nbirth()
    rig.dbirth(1)
    device = "D1" if kind.startswith("D") else ""
    out = rig.send(kind, payload(seq=2), device=device)
    assert out.rebirths == []
    assert rig.ndata(3, count(2)).rebirths == []


def test_metric_ref_str() -> None:
    assert str(MetricRef("G", "E", "", "m")) == "G/E:m"
    assert str(MetricRef("G", "E", "D", "a/b")) == "G/E/D:a/b"
