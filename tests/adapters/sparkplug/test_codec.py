"""Protobuf codec: round trips, flags, properties, malformed input, rebirth command."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.sparkplug.codec import REBIRTH_METRIC, decode, encode, rebirth_command
from adapters.sparkplug.payload import DataType, Metric, Payload, PropValue
from ingestd.errors import PayloadError


def test_round_trip_keeps_every_field() -> None:
    p = Payload(timestamp=1_700_000_000_000, seq=255, uuid="u-1", body=b"\x00\x01", metrics=(
        Metric(name="Pump/Speed", alias=7, timestamp=1_700_000_000_001, datatype=DataType.INT32,
               value_field="int_value", value=2**32 - 12, properties={"Quality": 192, "engUnit": "rpm"}),
        Metric(alias=8, is_historical=True, is_transient=True, value_field="double_value", value=1.25),
        Metric(alias=9, is_null=True, datatype=DataType.FLOAT),
        Metric(alias=10, datatype=DataType.BOOLEAN, value_field="boolean_value", value=False),
        Metric(alias=11, datatype=DataType.UINT64, value_field="long_value", value=2**64 - 1),
        Metric(alias=12, datatype=DataType.STRING, value_field="string_value", value="on"),
        Metric(alias=13, datatype=DataType.BYTES, value_field="bytes_value", value=b"\xff"),
    ))
    assert decode(encode(p)) == p


def test_property_types_and_null() -> None:
    props: dict[str, PropValue] = {"a": True, "b": 5, "c": 2**40, "d": 1.5, "e": "x", "f": None}
    m = decode(encode(Payload(metrics=(Metric(alias=1, properties=props),)))).metrics[0]
    assert m.properties == props


def test_dataset_and_template_values_are_recognised_but_not_decoded() -> None:
    p = decode(encode(Payload(metrics=(Metric(alias=1, value_field="dataset_value"),
                                       Metric(alias=2, value_field="template_value")))))
    assert [(m.value_field, m.value) for m in p.metrics] == [("dataset_value", None), ("template_value", None)]


def test_empty_payload_decodes_to_defaults() -> None:
    assert decode(b"") == Payload()


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x12\x05\x0a\x03ab", b"{\"json\": true}"])
def test_malformed_bytes_raise_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        decode(data)
    assert info.value.reason == "bad_protobuf"


def test_rebirth_command_is_boolean_true() -> None:
    p = decode(rebirth_command(1234))
    assert p.timestamp == 1234
    (m,) = p.metrics
    assert (m.name, m.datatype, m.value_field, m.value) == (REBIRTH_METRIC, DataType.BOOLEAN, "boolean_value", True)


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    """sparkplug_b_pb2.py is generated from sparkplug_b.proto and committed: keep them in sync."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    here = Path(__file__).resolve().parents[3] / "adapters" / "sparkplug"
    rc = protoc.main(["protoc", f"-I{here}", f"--python_out={tmp_path}", str(here / "sparkplug_b.proto")])
    assert rc == 0
    assert (tmp_path / "sparkplug_b_pb2.py").read_text() == (here / "sparkplug_b_pb2.py").read_text(), \
        "regenerate adapters/sparkplug/sparkplug_b_pb2.py (command in sparkplug_b.proto)"
