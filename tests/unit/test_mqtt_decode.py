"""MQTT JSON decoding: templates, JSON paths, timestamps, quality, multi-value payloads, bad input."""

from __future__ import annotations

import orjson
import pytest

from adapters.mqtt.config import Subscription, parse_template
from adapters.mqtt.decode import Decoder, parse_quality, parse_timestamp
from ingestd.errors import PayloadError
from ingestd.model import Quality

RECV = 1_800_000_000_000_000


def dec(**kw: object) -> Decoder:
    return Decoder(Subscription.model_validate(kw))


def test_template_to_filter() -> None:
    assert parse_template("{tenant}/wells/{well}/{tag}") == ("+/wells/+/+", ["tenant", None, "well", "tag"])
    assert parse_template("site/{tag}/#")[0] == "site/+/#"
    for bad in ("a/{x}y/b", "a/+/b", "a/#/b", "{x}/{x}"):
        with pytest.raises(ValueError):
            parse_template(bad)


def test_single_value_with_topic_captures() -> None:
    d = dec(topic="{tenant}/wells/{well}/{tag}", tenant="{tenant}", tag="{well}.{tag}")
    caps = d.match("acme/wells/w7/tubing_pressure".split("/"))
    assert caps == {"tenant": "acme", "well": "w7", "tag": "tubing_pressure"}
    assert d.match("acme/pads/w7/x".split("/")) is None
    assert d.match("acme/wells/w7".split("/")) is None
    samples, errs = d.decode(caps, b'{"ts": 1700000000123, "value": 812.5}', RECV)
    assert samples == [("acme", "w7.tubing_pressure", 1_700_000_000_123_000, 812.5, Quality.GOOD)]
    assert errs == []


def test_missing_timestamp_uses_receive_time_and_null_is_bad() -> None:
    d = dec(topic="t/{tag}")
    samples, _ = d.decode({"tag": "x"}, b'{"value": null}', RECV)
    assert samples == [(None, "x", RECV, None, Quality.BAD)]


def test_values_object_several_values_per_payload() -> None:
    d = dec(topic="pads/{pad}", tag="{pad}.{key}", values_path="values", timestamp_path="ts")
    payload = orjson.dumps({"ts": "2026-11-24T10:00:00Z", "values": {"tp": 1, "cp": True, "bad": "x", "q": None}})
    samples, errs = d.decode({"pad": "p1"}, payload, RECV)
    ts = 1_795_514_400_000_000
    assert ("p1", "p1.tp", ts, 1.0, 0) in [(s[1].split(".")[0], *s[1:]) for s in samples]
    by_tag = {s[1]: s for s in samples}
    assert by_tag["p1.cp"][3] == 1.0
    assert by_tag["p1.q"][4] == Quality.BAD
    assert "p1.bad" not in by_tag
    assert [e.reason for e in errs] == ["non_numeric_value"]
    assert "bad" in errs[0].detail


def test_items_array_with_per_item_timestamps_and_quality() -> None:
    d = dec(topic="gw/{gw}", tag="{gw}/{key}", items_path="$", key_path="n", value_path="v", timestamp_path="t",
            quality_path="q")
    payload = orjson.dumps([
        {"n": "a", "v": 1.5, "t": 1700000000, "q": "good"},
        {"n": "b", "v": 2, "t": 1700000001000, "q": 0x80340000},
        {"n": "c", "v": 3, "t": "not-a-time"},
        {"v": 4},
    ])
    samples, errs = d.decode({"gw": "g"}, payload, RECV)
    assert samples == [
        (None, "g/a", 1_700_000_000_000_000, 1.5, Quality.GOOD),
        (None, "g/b", 1_700_000_001_000_000, 2.0, Quality.BAD),
    ]
    assert sorted(e.reason for e in errs) == ["bad_structure", "bad_timestamp"]


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "bad_json"),
    (b'{"val": 1}', "missing_value"),
    (b'{"value": "NaN"}', "not_finite"),
    (b'{"value": [1]}', "non_numeric_value"),
    (b'{"value": 1, "ts": true}', "bad_timestamp"),
])
def test_malformed_payloads_raise_typed_errors(payload: bytes, reason: str) -> None:
    d = dec(topic="t/{tag}")
    with pytest.raises(PayloadError) as ei:
        d.decode({"tag": "x"}, payload, RECV)
    assert ei.value.reason == reason


def test_timestamp_units() -> None:
    assert parse_timestamp(1_700_000_000, "auto") == 1_700_000_000_000_000
    assert parse_timestamp(1_700_000_000_000, "auto") == 1_700_000_000_000_000
    assert parse_timestamp(1_700_000_000_000_000, "auto") == 1_700_000_000_000_000
    assert parse_timestamp(1_700_000_000_000_000_000, "auto") == 1_700_000_000_000_000
    assert parse_timestamp(1700000000.5, "s") == 1_700_000_000_500_000
    assert parse_timestamp("2026-03-08T08:00:00-06:00", "iso8601") == parse_timestamp("2026-03-08T14:00:00Z", "auto")


def test_quality_words_and_codes() -> None:
    assert parse_quality("GOOD") == Quality.GOOD
    assert parse_quality(False) == Quality.BAD
    assert parse_quality(192) == Quality.GOOD
    assert parse_quality(0x40000000) == Quality.UNCERTAIN
    with pytest.raises(PayloadError):
        parse_quality("meh")


def test_subscription_validation() -> None:
    with pytest.raises(ValueError, match="must use \\{key\\}"):
        Subscription.model_validate({"topic": "a/{tag}", "values_path": "v"})
    with pytest.raises(ValueError, match="not a JSON path"):
        Subscription.model_validate({"topic": "a/{tag}", "value_path": "a b"})
    s = Subscription.model_validate({"topic": "a/{tag}", "shared_group": "g1"})
    assert s.mqtt_filter == "$share/g1/a/+"
