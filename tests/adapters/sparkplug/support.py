"""Payload builders and a recording resolver for the Sparkplug tests (wire encoding via the codec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.sparkplug.host import MetricRef
from adapters.sparkplug.payload import DataType, Metric, Payload, PropValue

_INT32 = {DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16, DataType.UINT32}
_INT64 = {DataType.INT64, DataType.UINT64, DataType.DATETIME}


def raw_field(datatype: int, value: Any) -> tuple[str | None, Any]:
    """The wire field and raw value an edge node (Tahu) writes for a value of ``datatype``."""
    if value is None:
        return None, None
    if datatype in _INT32:
        return "int_value", int(value) & 0xFFFF_FFFF
    if datatype in _INT64:
        return "long_value", int(value) & 0xFFFF_FFFF_FFFF_FFFF
    if datatype == DataType.FLOAT:
        return "float_value", float(value)
    if datatype == DataType.DOUBLE:
        return "double_value", float(value)
    if datatype == DataType.BOOLEAN:
        return "boolean_value", bool(value)
    if datatype in (DataType.STRING, DataType.TEXT, DataType.UUID):
        return "string_value", str(value)
    if datatype in (DataType.BYTES, DataType.FILE):
        return "bytes_value", bytes(value)
    if datatype == DataType.DATASET:
        return "dataset_value", None
    if datatype == DataType.TEMPLATE:
        return "template_value", None
    raise ValueError(datatype)


def metric(name: str | None = None, alias: int | None = None, datatype: int | None = None, value: Any = None, *,
           birth: bool = True, ts: int | None = None, properties: dict[str, PropValue] | None = None,
           **flags: bool) -> Metric:
    """A metric; with ``birth=False`` the name and datatype are left out (alias-only DATA)."""
    fld, raw = raw_field(datatype if datatype is not None else DataType.DOUBLE, value)
    return Metric(name=name if birth else None, alias=alias, timestamp=ts, datatype=datatype if birth else None,
                  value_field=fld, value=raw, properties=properties or {}, **flags)


def bd_seq(n: int) -> Metric:
    return Metric(name="bdSeq", datatype=DataType.INT64, value_field="long_value", value=n)


def payload(*metrics: Metric, seq: int | None = None, ts: int | None = 1_700_000_000_000) -> Payload:
    return Payload(timestamp=ts, metrics=tuple(metrics), seq=seq)


@dataclass
class Resolver:
    """Assigns point keys in order of first sight; ``refuse`` names are not stored."""

    refuse: set[str] = field(default_factory=set)
    keys: dict[MetricRef, int] = field(default_factory=dict)
    calls: list[tuple[MetricRef, str]] = field(default_factory=list)

    def __call__(self, ref: MetricRef, data_type: str) -> int | None:
        self.calls.append((ref, data_type))
        if ref.name in self.refuse:
            return None
        return self.keys.setdefault(ref, len(self.keys))

    def key(self, node: str, name: str, device: str = "", group: str = "G") -> int:
        return self.keys[MetricRef(group, node, device, name)]
