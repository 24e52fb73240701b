"""Plain-Python view of a Sparkplug B payload (no protobuf types; built by :mod:`.codec`).

Values are kept *raw*: which ``oneof value`` field carried the value (``int_value``, ``long_value``,
…) and the value exactly as the wire had it (``int_value`` is a uint32, ``long_value`` a uint64).
Interpretation by data type — sign extension, units of DateTime, quality — is :mod:`.values`' job,
because a DATA message usually carries only the alias and the data type comes from the BIRTH.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

__all__ = [
    "INTEGER_FIELDS",
    "SCALAR_FIELDS",
    "DataType",
    "Metric",
    "Payload",
    "PropValue",
    "Scalar",
]

Scalar = int | float | bool | str | bytes | None
"""A raw metric value: int for int_value/long_value, float, bool, str, bytes; None when absent."""
PropValue = int | float | bool | str | None
"""A scalar property value (nested property sets are not decoded)."""

SCALAR_FIELDS: Final = frozenset({
    "int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value", "bytes_value",
})
INTEGER_FIELDS: Final = frozenset({"int_value", "long_value"})


class DataType(IntEnum):
    """Sparkplug B ``DataType`` (sparkplug_b.proto)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34

    @classmethod
    def name_of(cls, code: int | None) -> str:
        if code is None:
            return "none"
        try:
            return cls(code).name
        except ValueError:
            return f"type {code}"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None = None
    """Present in BIRTH messages; DATA messages usually carry only the alias."""
    alias: int | None = None
    timestamp: int | None = None
    """Milliseconds since the Unix epoch (UTC)."""
    datatype: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    value_field: str | None = None
    """The ``oneof value`` member that was set, e.g. ``"int_value"``; None when no value was sent."""
    value: Scalar = None
    properties: Mapping[str, PropValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None = None
    """Milliseconds since the Unix epoch (UTC), when the message was sent."""
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None

    def metric(self, name: str) -> Metric | None:
        """The first metric called ``name`` (BIRTH/DEATH lookups such as ``bdSeq``)."""
        for m in self.metrics:
            if m.name == name:
                return m
        return None
