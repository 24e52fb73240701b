"""Pure conversion of raw Sparkplug metric values to stored numbers, and of the Quality property.

Type mapping (see README.md for the table):

* Int8/Int16/Int32 travel in ``int_value`` (uint32) and Int64 in ``long_value`` (uint64) as two's
  complement: the low 8/16/32/64 bits are taken and sign-extended, so Int8 −1 sent as ``0xFFFFFFFF``
  (Tahu) or ``0xFF`` both decode to −1, and Int32 −12 is −12, never 4294967284. Either integer field
  is accepted for any integer type (some edge nodes put Int32 in ``long_value``).
* UInt8…UInt64 must fit their width (else ``out_of_range``); UInt64 above 2**53 loses precision in
  float64, as any 64-bit integer does.
* Float, Double → float; Boolean → 1.0/0.0; DateTime (``long_value`` ms since epoch) → that number.
* String, Text, UUID → :class:`ValueProblem` ``non_numeric``; Bytes, File, DataSet, Template, property
  sets, arrays and Unknown → ``unsupported_type``. A value in a field that cannot hold the declared
  type → ``type_mismatch``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from ingestd.model import Quality

from .payload import INTEGER_FIELDS, DataType, PropValue, Scalar

__all__ = [
    "NON_NUMERIC",
    "NUMERIC",
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_STALE",
    "ValueProblem",
    "core_data_type",
    "quality_of",
    "to_number",
]

QUALITY_BAD: Final = 0
QUALITY_GOOD: Final = 192
QUALITY_STALE: Final = 500

_SIGNED_BITS: Final[dict[int, int]] = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS: Final[dict[int, int]] = {
    DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64,
}
NUMERIC: Final[frozenset[int]] = frozenset({
    *_SIGNED_BITS, *_UNSIGNED_BITS, DataType.FLOAT, DataType.DOUBLE, DataType.BOOLEAN, DataType.DATETIME,
})
NON_NUMERIC: Final[frozenset[int]] = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})


class ValueProblem(Exception):
    """A metric value that cannot be stored as a number. ``reason`` is metric-label safe."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def core_data_type(datatype: int) -> str:
    """The core's tag ``data_type`` for a Sparkplug data type (metadata of auto-registered tags)."""
    if datatype == DataType.BOOLEAN:
        return "bool"
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        return "float"
    if datatype in _SIGNED_BITS or datatype in _UNSIGNED_BITS or datatype == DataType.DATETIME:
        return "int"
    return "string" if datatype in NON_NUMERIC else "float"


def _integer(field: str | None, raw: Scalar, datatype: int) -> int:
    if field not in INTEGER_FIELDS or not isinstance(raw, int) or isinstance(raw, bool):
        raise ValueProblem("type_mismatch", f"{DataType.name_of(datatype)} value sent in {field or 'no field'}")
    if raw < 0:  # impossible from the wire (unsigned fields); guards hand-built payloads
        raise ValueProblem("out_of_range", f"{raw} in an unsigned field")
    return raw


def to_number(datatype: int, field: str | None, raw: Scalar) -> float:
    """The stored number for a raw value of the declared ``datatype``. Raises :class:`ValueProblem`."""
    bits = _SIGNED_BITS.get(datatype)
    if bits is not None:
        v = _integer(field, raw, datatype) & ((1 << bits) - 1)
        if v >> (bits - 1):
            v -= 1 << bits
        return float(v)
    bits = _UNSIGNED_BITS.get(datatype)
    if bits is not None:
        v = _integer(field, raw, datatype)
        if v >> bits:
            raise ValueProblem("out_of_range", f"{v} does not fit {DataType.name_of(datatype)}")
        return float(v)
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        if field not in ("float_value", "double_value") or not isinstance(raw, float):
            raise ValueProblem("type_mismatch", f"{DataType.name_of(datatype)} value sent in {field or 'no field'}")
        if not math.isfinite(raw):
            raise ValueProblem("not_finite", f"{DataType.name_of(datatype)} value {raw!r}")
        return raw
    if datatype == DataType.BOOLEAN:
        if field == "boolean_value" and isinstance(raw, bool):
            return 1.0 if raw else 0.0
        if field in INTEGER_FIELDS and isinstance(raw, int):  # lenient: 0/1 in an integer field
            return 1.0 if raw else 0.0
        raise ValueProblem("type_mismatch", f"Boolean value sent in {field or 'no field'}")
    if datatype == DataType.DATETIME:
        return float(_integer(field, raw, datatype))
    if datatype in NON_NUMERIC:
        raise ValueProblem("non_numeric", f"{DataType.name_of(datatype)} values are not stored (numeric only)")
    raise ValueProblem("unsupported_type", f"{DataType.name_of(datatype)} values are not supported")


def quality_of(properties: Mapping[str, PropValue]) -> tuple[int, int] | None:
    """(stored quality, raw status) from the ``Quality`` property, or None when absent.

    192 → GOOD; 500 (STALE) → UNCERTAIN; 0 → BAD. Other codes follow the OPC DA ranges Ignition
    uses: 192–255 GOOD, 64–191 UNCERTAIN, anything else BAD. The raw code is kept as the status.
    """
    raw = properties.get("Quality")
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int):
        return None
    if raw == QUALITY_STALE:
        q = Quality.UNCERTAIN
    elif 192 <= raw <= 255:
        q = Quality.GOOD
    elif 64 <= raw < 192:
        q = Quality.UNCERTAIN
    else:
        q = Quality.BAD
    return int(q), raw & 0xFFFF_FFFF

