"""Decoders against known byte patterns, for every type and every byte order."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.decode import (
    STATUS_NOT_NUMERIC,
    BitGroup,
    CoilGroup,
    NumericGroup,
    StringGroup,
    decode_bits,
    decode_string,
    decode_value,
)
from ingestd.model import Quality

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

# (type, value, registers on the wire in ABCD, CDAB, BADC, DCBA order)
KNOWN = [
    ("float32", 123.45600128173828, {
        "ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6], "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}),
    ("int32", -2, {
        "ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF], "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("uint32", 0x12345678, {
        "ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234], "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]}),
    ("uint64", float(2**64 - 1), {o: [0xFFFF] * 4 for o in ORDERS}),
    ("int64", float(-(2**63)), {
        "ABCD": [0x8000, 0, 0, 0], "CDAB": [0, 0, 0, 0x8000], "BADC": [0x0080, 0, 0, 0], "DCBA": [0, 0, 0, 0x0080]}),
    ("int64", -2, {
        "ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
        "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    ("float64", 1234.5678, {  # 0x40934A456D5CFAAD
        "ABCD": [0x4093, 0x4A45, 0x6D5C, 0xFAAD], "CDAB": [0xFAAD, 0x6D5C, 0x4A45, 0x4093],
        "BADC": [0x9340, 0x454A, 0x5C6D, 0xADFA], "DCBA": [0xADFA, 0x5C6D, 0x454A, 0x9340]}),
    ("int16", -1, {o: [0xFFFF] for o in ORDERS}),
    ("int16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int16", -32768, {"ABCD": [0x8000], "CDAB": [0x8000], "BADC": [0x0080], "DCBA": [0x0080]}),
    ("uint16", 65535, {o: [0xFFFF] for o in ORDERS}),
    ("uint16", 0x00FF, {"ABCD": [0x00FF], "CDAB": [0x00FF], "BADC": [0xFF00], "DCBA": [0xFF00]}),
]


@pytest.mark.parametrize(("type_", "value", "wire"), KNOWN, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("order", ORDERS)
def test_known_patterns(type_: str, value: float, wire: dict[str, list[int]], order: str) -> None:
    assert decode_value(wire[order], type_, order) == value


@pytest.mark.parametrize("order", ORDERS)
def test_vectorised_group_matches_reference(order: str) -> None:
    # Three float32 at word offsets 0, 2 and 5 of one request, in the same byte order.
    values = [123.45600128173828, -1.5, 3.4028234663852886e38]
    words = [0] * 7
    for off, v in zip([0, 2, 5], values, strict=True):
        words[off:off + 2] = _encode("float32", v, order)
    out = np.zeros(3)
    NumericGroup(0, [0, 2, 5], "float32", order).fill(np.asarray(words, np.uint16), out, _q(3), _s(3))
    assert out.tolist() == values


def test_float_nan_and_inf_pass_through() -> None:
    # The core turns NaN/inf from devices into BAD/STATUS_NOT_FINITE; the decoder must not hide them.
    assert math.isnan(decode_value([0x7FC0, 0x0000], "float32"))
    assert decode_value([0x7F80, 0x0000], "float32") == math.inf


def test_wrong_register_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_value([1], "float32")


@pytest.mark.parametrize(("order", "wire"), [
    ("ABCD", [0x5745, 0x4C4C, 0x2D30, 0x3700]),   # "WE" "LL" "-0" "7\0"
    ("BADC", [0x4557, 0x4C4C, 0x302D, 0x0037]),   # characters swapped within each register
    ("CDAB", [0x3700, 0x2D30, 0x4C4C, 0x5745]),   # registers in reverse order
    ("DCBA", [0x0037, 0x302D, 0x4C4C, 0x4557]),
])
def test_strings_with_nul_padding(order: str, wire: list[int]) -> None:
    assert decode_string(wire, order) == "WELL-07"


def test_strings_with_space_padding_and_empty() -> None:
    assert decode_string([0x2020, 0x4142, 0x2020]) == "AB"
    assert decode_string([0, 0, 0]) == ""


def test_string_group_parses_numbers_and_flags_text() -> None:
    words = np.asarray([0x3132, 0x2E35, 0x0000, 0x4F46, 0x4620], np.uint16)  # "12.5\0\0" "OFF "
    value, quality, status = np.zeros(2), _q(2), _s(2)
    StringGroup(0, [(0, 3, "ABCD"), (3, 2, "ABCD")]).fill(words, value, quality, status)
    assert value[0] == 12.5
    assert quality.tolist() == [Quality.GOOD, Quality.BAD]
    assert math.isnan(value[1])
    assert status.tolist() == [0, STATUS_NOT_NUMERIC]


def test_bit_in_register() -> None:
    words = np.asarray([0b1010_0000_0000_0001, 0x0100], np.uint16)
    out = np.zeros(5)
    BitGroup(0, [0, 0, 0, 0, 1], [0, 1, 13, 15, 8]).fill(words, out, _q(5), _s(5))
    assert out.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_coils_and_discrete_inputs() -> None:
    bits = np.asarray([True, False, False, True], np.bool_)
    out = np.zeros(3)
    CoilGroup(0, [3, 1, 0]).fill(bits, out, _q(3), _s(3))
    assert out.tolist() == [1.0, 0.0, 1.0]
    assert decode_bits([False, True], [1, 0]).tolist() == [1.0, 0.0]


def test_group_writes_only_its_rows() -> None:
    out = np.full(4, -7.0)
    NumericGroup(1, [0, 1], "uint16", "ABCD").fill(np.asarray([5, 6], np.uint16), out, _q(4), _s(4))
    assert out.tolist() == [-7.0, 5.0, 6.0, -7.0]


_TYPES = {
    "int16": (">h", st.integers(-(2**15), 2**15 - 1)),
    "uint16": (">H", st.integers(0, 2**16 - 1)),
    "int32": (">i", st.integers(-(2**31), 2**31 - 1)),
    "uint32": (">I", st.integers(0, 2**32 - 1)),
    "int64": (">q", st.integers(-(2**63), 2**63 - 1)),
    "uint64": (">Q", st.integers(0, 2**64 - 1)),
    "float32": (">f", st.floats(width=32, allow_nan=False)),
    "float64": (">d", st.floats(allow_nan=False)),
}


def _encode(type_: str, value: float, order: str) -> list[int]:
    """Independent encoder: struct big-endian bytes, then the documented wire re-ordering."""
    raw = struct.pack(_TYPES[type_][0], value)
    pairs = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    if order in ("CDAB", "DCBA"):
        pairs = pairs[::-1]
    return [int.from_bytes(p, "big") for p in pairs]


@given(st.data(), st.sampled_from(sorted(_TYPES)), st.sampled_from(ORDERS))
def test_roundtrip_every_type_and_order(data: st.DataObject, type_: str, order: str) -> None:
    value = data.draw(_TYPES[type_][1])
    decoded = decode_value(_encode(type_, value, order), type_, order)
    expected = float(np.float32(value)) if type_ == "float32" else float(value)
    assert decoded == expected


def _q(n: int) -> np.ndarray:
    return np.zeros(n, np.uint8)


def _s(n: int) -> np.ndarray:
    return np.zeros(n, np.uint32)
