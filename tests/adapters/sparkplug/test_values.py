"""Every Sparkplug data type through the real wire encoding (codec) and the value conversion."""

from __future__ import annotations

import math

import pytest

from adapters.sparkplug.codec import decode, encode
from adapters.sparkplug.payload import DataType, Metric, Payload, Scalar
from adapters.sparkplug.values import ValueProblem, core_data_type, quality_of, to_number
from ingestd.model import Quality

U32 = 2**32
U64 = 2**64


def wire(datatype: int, field: str, raw: Scalar) -> float:
    """Encode one metric, decode it again and convert it, as a DATA message would be."""
    payload = decode(encode(Payload(metrics=(Metric(alias=1, datatype=datatype, value_field=field, value=raw),))))
    m = payload.metrics[0]
    assert (m.value_field, m.value) == (field, raw) or isinstance(raw, float)
    return to_number(datatype, m.value_field, m.value)


@pytest.mark.parametrize(("datatype", "field", "raw", "expected"), [
    # signed types arrive as two's complement in unsigned fields and are sign-extended
    (DataType.INT8, "int_value", U32 - 1, -1.0),           # Tahu writes (int) -1 → 0xFFFFFFFF
    (DataType.INT8, "int_value", 0xFF, -1.0),              # 8-bit two's complement also accepted
    (DataType.INT8, "int_value", 0x80, -128.0),
    (DataType.INT8, "int_value", 127, 127.0),
    (DataType.INT16, "int_value", U32 - 32768, -32768.0),
    (DataType.INT16, "int_value", 0x7FFF, 32767.0),
    (DataType.INT32, "int_value", U32 - 12, -12.0),        # the benthos-umh bug: never 4294967284
    (DataType.INT32, "int_value", 2**31 - 1, 2147483647.0),
    (DataType.INT32, "int_value", 2**31, -2147483648.0),
    (DataType.INT32, "long_value", U64 - 12, -12.0),       # Int32 sign-extended to 64 bits in long_value
    (DataType.INT64, "long_value", U64 - 1, -1.0),
    (DataType.INT64, "long_value", 2**63, float(-(2**63))),
    (DataType.INT64, "long_value", 42, 42.0),
    (DataType.UINT8, "int_value", 255, 255.0),
    (DataType.UINT16, "int_value", 65535, 65535.0),
    (DataType.UINT32, "int_value", U32 - 1, 4294967295.0),
    (DataType.UINT32, "long_value", U32 - 1, 4294967295.0),
    (DataType.UINT64, "long_value", U64 - 1, float(U64 - 1)),
    (DataType.FLOAT, "float_value", 1.5, 1.5),
    (DataType.DOUBLE, "double_value", -2.25e100, -2.25e100),
    (DataType.DOUBLE, "float_value", 0.5, 0.5),
    (DataType.BOOLEAN, "boolean_value", True, 1.0),
    (DataType.BOOLEAN, "boolean_value", False, 0.0),
    (DataType.DATETIME, "long_value", 1_700_000_000_123, 1_700_000_000_123.0),
])
def test_numeric_types_decode_with_correct_sign(datatype: int, field: str, raw: Scalar, expected: float) -> None:
    assert wire(datatype, field, raw) == expected


def test_float32_keeps_single_precision_value() -> None:
    assert wire(DataType.FLOAT, "float_value", 0.1) == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize(("datatype", "field", "raw", "reason"), [
    (DataType.STRING, "string_value", "running", "non_numeric"),
    (DataType.TEXT, "string_value", "long text", "non_numeric"),
    (DataType.UUID, "string_value", "2f1c…", "non_numeric"),
    (DataType.BYTES, "bytes_value", b"\x01", "unsupported_type"),
    (DataType.FILE, "bytes_value", b"\x01", "unsupported_type"),
    (DataType.DATASET, "dataset_value", None, "unsupported_type"),
    (DataType.TEMPLATE, "template_value", None, "unsupported_type"),
    (DataType.INT32_ARRAY, "bytes_value", b"\x01\x00\x00\x00", "unsupported_type"),
    (DataType.UNKNOWN, "int_value", 1, "unsupported_type"),
    (99, "int_value", 1, "unsupported_type"),
    (DataType.UINT8, "int_value", 256, "out_of_range"),
    (DataType.UINT16, "int_value", 65536, "out_of_range"),
    (DataType.UINT32, "long_value", U32, "out_of_range"),
    (DataType.INT32, "string_value", "12", "type_mismatch"),
    (DataType.INT32, "float_value", 1.0, "type_mismatch"),
    (DataType.FLOAT, "int_value", 1, "type_mismatch"),
    (DataType.BOOLEAN, "string_value", "true", "type_mismatch"),
    (DataType.DATETIME, "double_value", 1.0, "type_mismatch"),
])
def test_unstorable_values_have_a_clear_reason(datatype: int, field: str, raw: Scalar, reason: str) -> None:
    with pytest.raises(ValueProblem) as info:
        to_number(datatype, field, raw)
    assert info.value.reason == reason


def test_non_finite_floats_are_rejected() -> None:
    for v in (math.nan, math.inf):
        with pytest.raises(ValueProblem, match="not_finite"):
            to_number(DataType.DOUBLE, "double_value", v)


def test_boolean_in_integer_field_is_accepted() -> None:
    assert to_number(DataType.BOOLEAN, "int_value", 1) == 1.0
    assert to_number(DataType.BOOLEAN, "int_value", 0) == 0.0


@pytest.mark.parametrize(("code", "quality"), [
    (192, Quality.GOOD), (0, Quality.BAD), (500, Quality.UNCERTAIN), (216, Quality.GOOD), (64, Quality.UNCERTAIN),
    (8, Quality.BAD), (600, Quality.BAD),
])
def test_quality_property(code: int, quality: Quality) -> None:
    assert quality_of({"Quality": code}) == (quality, code)


def test_quality_absent_or_not_integer() -> None:
    assert quality_of({}) is None
    assert quality_of({"Quality": "GOOD"}) is None
    assert quality_of({"Quality": True}) is None


def test_core_data_types() -> None:
    assert core_data_type(DataType.BOOLEAN) == "bool"
    assert core_data_type(DataType.INT16) == "int"
    assert core_data_type(DataType.UINT64) == "int"
    assert core_data_type(DataType.DATETIME) == "int"
    assert core_data_type(DataType.FLOAT) == "float"
    assert core_data_type(DataType.STRING) == "string"
