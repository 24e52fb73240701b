"""Pure decoding: StatusCode → quality, NaN for BAD, value types, timestamp selection; and planning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.opcua.config import LimitsConfig, MonitoringOverride, SubscriptionConfig
from adapters.opcua.decode import (
    STATUS_NO_DATA,
    STATUS_TYPE_MISMATCH,
    RawSamples,
    bad_batch,
    build_batch,
    quality_of,
)
from adapters.opcua.nodeid import NodeId, parse_node_id
from adapters.opcua.plan import chunked, effective_limits, item_settings, resolve_points
from ingestd.model import Quality

RECV = 1_700_000_000_000_000


def raw(*rows: tuple[int, object, int, int, int]) -> RawSamples:
    r = RawSamples()
    for key, value, status, src, srv in rows:
        r.key.append(key)
        r.value.append(value)
        r.status.append(status)
        r.source_us.append(src)
        r.server_us.append(srv)
    return r


@pytest.mark.parametrize(("status", "quality"), [
    (0x0000_0000, Quality.GOOD),
    (0x002F_0000, Quality.GOOD),  # Good with sub-code / info bits
    (0x4000_0000, Quality.UNCERTAIN),
    (0x4094_0000, Quality.UNCERTAIN),
    (0x8000_0000, Quality.BAD),
    (0x8034_0000, Quality.BAD),
    (0xC000_0000, Quality.BAD),  # reserved severity: treat as bad
])
def test_quality_from_the_two_top_bits(status: int, quality: Quality) -> None:
    assert quality_of(status) == quality
    batch, _ = build_batch(raw((0, 1.0, status, 0, 0)), "receive", RECV)
    assert batch.quality[0] == quality
    assert batch.status[0] == status  # raw 32-bit code kept


def test_values_become_float64_and_bad_rows_are_nan() -> None:
    batch, rejects = build_batch(raw(
        (0, 1.5, 0, 0, 0),
        (1, True, 0, 0, 0),
        (2, 7, 0, 0, 0),  # integer / enumeration value
        (3, 2**63 + 11, 0, 0, 0),  # UInt64
        (4, 99.0, 0x808A_0000, 0, 0),  # BAD with a value: never stored as a value
        (5, 3.25, 0x4094_0000, 0, 0),  # UNCERTAIN keeps its value
    ), "receive", RECV)
    assert rejects == []
    assert batch.value.dtype == np.float64
    assert batch.value[:4].tolist() == [1.5, 1.0, 7.0, float(2**63 + 11)]
    assert math.isnan(batch.value[4])
    assert batch.value[5] == 3.25
    assert batch.quality.tolist() == [0, 0, 0, 0, Quality.BAD, Quality.UNCERTAIN]


def test_unsupported_types_are_bad_with_type_mismatch_and_reported() -> None:
    batch, rejects = build_batch(raw(
        (0, "text", 0, 0, 0), (1, b"\x00", 0, 0, 0), (2, [1.0, 2.0], 0, 0, 0), (3, 1.0, 0, 0, 0),
        (4, "text", 0x8034_0000, 0, 0),  # already bad: keeps its own status
    ), "receive", RECV)
    assert [(r.key, r.type_name) for r in rejects] == [(0, "String"), (1, "ByteString"), (2, "array"),
                                                       (4, "String")]
    assert batch.quality.tolist() == [Quality.BAD, Quality.BAD, Quality.BAD, Quality.GOOD, Quality.BAD]
    assert batch.status.tolist()[:3] == [STATUS_TYPE_MISMATCH] * 3
    assert batch.status[4] == 0x8034_0000
    assert np.isnan(batch.value[[0, 1, 2, 4]]).all()


def test_missing_value_is_bad_no_data() -> None:
    batch, _ = build_batch(raw((0, None, 0, 0, 0), (1, None, 0x8031_0000, 0, 0)), "receive", RECV)
    assert batch.quality.tolist() == [Quality.BAD, Quality.BAD]
    assert batch.status.tolist() == [STATUS_NO_DATA, 0x8031_0000]


@pytest.mark.parametrize(("mode", "expected"), [
    ("source", [10, 20, RECV]),
    ("server", [11, 20, RECV]),
    ("receive", [RECV, RECV, RECV]),
])
def test_timestamp_mode_and_fallbacks(mode: str, expected: list[int]) -> None:
    r = raw((0, 1.0, 0, 10, 11), (1, 1.0, 0, 0, 20), (2, 1.0, 0, 0, 0))
    batch, _ = build_batch(r, mode, RECV)  # type: ignore[arg-type]
    assert batch.ts.tolist() == expected
    assert batch.recv_us == RECV


def test_bad_batch() -> None:
    b = bad_batch([(3, 0x8034_0000), (5, 0x8034_0000)], RECV)
    assert b.key.tolist() == [3, 5]
    assert np.isnan(b.value).all()
    assert set(b.quality.tolist()) == {Quality.BAD}
    assert b.ts.tolist() == [RECV, RECV]


@pytest.mark.parametrize(("published", "caps", "expected"), [
    ({"read": 10}, {}, 10),  # the server's limit
    ({"read": 0}, {}, 1000),  # 0 = no limit published: conservative fallback
    ({"read": None}, {}, 1000),  # unreadable
    ({}, {"fallback": 250}, 250),
    ({"read": 5000}, {"max_nodes_per_read": 800}, 800),  # a configured cap lowers it
    ({"read": 100}, {"max_nodes_per_read": 800}, 100),  # but never above the server's
])
def test_effective_limits(published: dict[str, int | None], caps: dict[str, int], expected: int) -> None:
    assert effective_limits(published, LimitsConfig(**caps)).read == expected


def test_chunked() -> None:
    assert [list(c) for c in chunked(list(range(35)), 10)] == [list(range(10)), list(range(10, 20)),
                                                                 list(range(20, 30)), list(range(30, 35))]
    assert chunked([], 10) == []
    with pytest.raises(ValueError, match="at least 1"):
        chunked([1], 0)


def test_item_settings_merge_and_filter() -> None:
    sub = SubscriptionConfig(publishing_interval=0.5, queue_size=5)
    default = item_settings(sub, None)
    assert (default.sampling_interval_ms, default.queue_size, default.needs_filter) == (-1.0, 5, False)
    tuned = item_settings(sub, MonitoringOverride(sampling_interval=0.1, deadband_type="percent",
                                                  deadband_value=2.5))
    assert (tuned.sampling_interval_ms, tuned.deadband_type, tuned.deadband_value, tuned.trigger) == (
        100.0, 2, 2.5, 1)
    assert tuned.needs_filter
    assert item_settings(sub, MonitoringOverride(trigger="status_value_timestamp")).needs_filter


def test_resolve_points_reports_unknown_namespaces() -> None:
    refs = [(0, parse_node_id("nsu=urn:a;s=X")), (1, parse_node_id("nsu=urn:gone;i=1")),
            (2, parse_node_id("ns=4;i=9"))]
    res = resolve_points(refs, ["http://opcfoundation.org/UA/", "urn:a"])
    assert res.resolved == [(0, NodeId(1, "s", "X")), (2, NodeId(4, "i", 9))]
    assert res.unknown_namespace == [(1, "urn:gone")]
