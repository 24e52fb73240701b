"""Topic namespace, STATE payloads and the deterministic tag/tenant sanitisers."""

from __future__ import annotations

import re

import pytest

from adapters.sparkplug.naming import check_template, render, sanitize_tag, sanitize_tenant
from adapters.sparkplug.topics import MsgType, Topic, ncmd_topic, parse_state, parse_topic, state_payload, state_topic
from ingestd.config.types import TAG_RE


@pytest.mark.parametrize(("topic", "expected"), [
    ("spBv1.0/G1/NBIRTH/E1", Topic(MsgType.NBIRTH, "G1", "E1")),
    ("spBv1.0/G1/NDATA/E1", Topic(MsgType.NDATA, "G1", "E1")),
    ("spBv1.0/G1/NDEATH/E1", Topic(MsgType.NDEATH, "G1", "E1")),
    ("spBv1.0/G1/NCMD/E1", Topic(MsgType.NCMD, "G1", "E1")),
    ("spBv1.0/G1/DBIRTH/E1/D1", Topic(MsgType.DBIRTH, "G1", "E1", "D1")),
    ("spBv1.0/G1/DDATA/E1/D1", Topic(MsgType.DDATA, "G1", "E1", "D1")),
    ("spBv1.0/G1/DDEATH/E1/D1", Topic(MsgType.DDEATH, "G1", "E1", "D1")),
    ("spBv1.0/G1/DCMD/E1/D1", Topic(MsgType.DCMD, "G1", "E1", "D1")),
    ("spBv1.0/STATE/host-1", Topic(MsgType.STATE, "", "host-1")),
    ("spBv1.0/G1/NDATA/E1/D1", None),   # node message with a device level
    ("spBv1.0/G1/DDATA/E1", None),      # device message without a device
    ("spBv1.0/G1/XDATA/E1", None),
    ("spBv1.0/G1/NDATA", None),
    ("spBv1.0/G1//E1", None),
    ("spAv1.0/G1/NDATA/E1", None),
    ("spBv1.0/STATE/h/x", None),
    ("spBv1.0/G1/NDATA/E1/D1/X", None),
])
def test_parse_topic(topic: str, expected: Topic | None) -> None:
    assert parse_topic(topic) == expected


def test_status_device_keys() -> None:
    assert Topic(MsgType.NDATA, "G", "E").device_key == "G/E"
    assert Topic(MsgType.DDATA, "G", "E", "D").device_key == "G/E/D"
    assert Topic(MsgType.DDATA, "G", "E", "D").node_key == "G/E"


def test_command_and_state_topics() -> None:
    assert ncmd_topic("G", "E") == "spBv1.0/G/NCMD/E"
    assert state_topic("h1") == "spBv1.0/STATE/h1"


def test_state_payload_round_trip() -> None:
    assert state_payload(True, 1700000000000) == b'{"online":true,"timestamp":1700000000000}'
    assert parse_state(state_payload(False, 5)) == (False, 5)
    assert parse_state(b'{"online": true}') == (True, None)
    for bad in (b"ONLINE", b"", b"[1]", b'{"online": "yes"}', b"\xff"):
        assert parse_state(bad) is None


@pytest.mark.parametrize(("raw", "tag"), [
    ("E1.D1.Pump/Speed", "E1.D1.Pump/Speed"),
    ("E1.Node Control/Rebirth", "E1.Node_Control/Rebirth"),
    ("E1.D1.Motor 1/Speed (rpm)", "E1.D1.Motor_1/Speed_rpm_"),
    ("E1.D1.Temp °C", "E1.D1.Temp_C"),
    ("_E1.x", "E1.x"),
    ("--x", "x"),
    ("é", None),
    ("", None),
])
def test_sanitize_tag(raw: str, tag: str | None) -> None:
    assert sanitize_tag(raw) == tag


def test_sanitized_tags_always_match_the_core_pattern_and_long_names_stay_distinct() -> None:
    a, b = sanitize_tag("n." + "x" * 300 + "a"), sanitize_tag("n." + "x" * 300 + "b")
    assert a is not None and b is not None and a != b
    assert len(a) == 200 and re.fullmatch(TAG_RE, a)
    for raw in ("a b", "a/b c", "x" * 199 + " ", "1 2 3", "a\tb\nc", "a{b}"):
        out = sanitize_tag(raw)
        assert out is not None and re.fullmatch(TAG_RE, out)
    assert sanitize_tag("A b") == sanitize_tag("A b")  # deterministic


def test_sanitize_tenant() -> None:
    assert sanitize_tenant("Permian-West") == "permian_west"
    assert sanitize_tenant("acme") == "acme"
    assert sanitize_tenant("1st field") == "st_field"
    assert sanitize_tenant("---") is None


def test_templates() -> None:
    assert render("{node}.{device}.{metric}", {"node": "E", "device": "D", "metric": "m{x}"}) == "E.D.m{x}"
    check_template("{group}/{node}.{metric}", ("group", "node", "metric"), ("metric",))
    with pytest.raises(ValueError, match="uses"):
        check_template("{node}.{devic}.{metric}", ("node", "device", "metric"))
    with pytest.raises(ValueError, match="must use"):
        check_template("{node}.{device}", ("node", "device", "metric"), ("metric",))
    with pytest.raises(ValueError, match="unbalanced"):
        check_template("{node}.{metric", ("node", "metric"))
