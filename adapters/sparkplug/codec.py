"""Sparkplug B protobuf ↔ :mod:`.payload` dataclasses. The ONLY module importing protobuf code.

``decode`` turns wire bytes into a :class:`~.payload.Payload` (raw values, no interpretation) and
raises :class:`~ingestd.errors.PayloadError` ``bad_protobuf`` for undecodable input. ``encode``
builds wire bytes (rebirth commands, and the edge-node simulator of the test suite).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from google.protobuf.message import DecodeError

from ingestd.errors import PayloadError

from . import sparkplug_b_pb2 as pb
from .payload import SCALAR_FIELDS, DataType, Metric, Payload, PropValue, Scalar

__all__ = ["REBIRTH_METRIC", "decode", "encode", "rebirth_command"]

REBIRTH_METRIC: Final = "Node Control/Rebirth"

_PROP_SCALARS: Final = frozenset({"int_value", "long_value", "float_value", "double_value", "boolean_value",
                                  "string_value"})


def _properties(ps: pb.Payload.PropertySet) -> dict[str, PropValue]:
    out: dict[str, PropValue] = {}
    for key, pv in zip(ps.keys, ps.values, strict=False):
        which = pv.WhichOneof("value")
        if pv.is_null or which is None:
            out[key] = None
        elif which in _PROP_SCALARS:
            out[key] = getattr(pv, which)
        # nested property sets and extensions are not decoded
    return out


def _metric(m: pb.Payload.Metric) -> Metric:
    which = m.WhichOneof("value")
    value: Scalar = getattr(m, which) if which in SCALAR_FIELDS else None
    return Metric(
        name=m.name if m.HasField("name") else None,
        alias=m.alias if m.HasField("alias") else None,
        timestamp=m.timestamp if m.HasField("timestamp") else None,
        datatype=m.datatype if m.HasField("datatype") else None,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        is_null=m.is_null,
        value_field=which,
        value=value,
        properties=_properties(m.properties) if m.HasField("properties") else {},
    )


def decode(data: bytes) -> Payload:
    """Decode a Sparkplug B payload. Raises PayloadError(``bad_protobuf``)."""
    try:
        p = pb.Payload.FromString(data)
    except DecodeError as exc:
        raise PayloadError("bad_protobuf", f"not a Sparkplug B payload ({exc})") from None
    return Payload(
        timestamp=p.timestamp if p.HasField("timestamp") else None,
        metrics=tuple(_metric(m) for m in p.metrics),
        seq=p.seq if p.HasField("seq") else None,
        uuid=p.uuid if p.HasField("uuid") else None,
        body=p.body if p.HasField("body") else None,
    )


def _set_properties(ps: pb.Payload.PropertySet, props: Mapping[str, PropValue]) -> None:
    for key, v in props.items():
        ps.keys.append(key)
        pv = ps.values.add()
        if v is None:
            pv.is_null = True
        elif isinstance(v, bool):
            pv.type, pv.boolean_value = DataType.BOOLEAN, v
        elif isinstance(v, int):
            if 0 <= v < 2**32:
                pv.type, pv.int_value = DataType.INT32, v
            else:
                pv.type, pv.long_value = DataType.INT64, v & (2**64 - 1)
        elif isinstance(v, float):
            pv.type, pv.double_value = DataType.DOUBLE, v
        else:
            pv.type, pv.string_value = DataType.STRING, v


def encode(payload: Payload) -> bytes:
    """Serialise a payload; metric values are written raw into their ``value_field``."""
    p = pb.Payload()
    if payload.timestamp is not None:
        p.timestamp = payload.timestamp
    if payload.seq is not None:
        p.seq = payload.seq
    if payload.uuid is not None:
        p.uuid = payload.uuid
    if payload.body is not None:
        p.body = payload.body
    for m in payload.metrics:
        pm = p.metrics.add()
        if m.name is not None:
            pm.name = m.name
        if m.alias is not None:
            pm.alias = m.alias
        if m.timestamp is not None:
            pm.timestamp = m.timestamp
        if m.datatype is not None:
            pm.datatype = m.datatype
        if m.is_historical:
            pm.is_historical = True
        if m.is_transient:
            pm.is_transient = True
        if m.is_null:
            pm.is_null = True
        if m.value_field in SCALAR_FIELDS and m.value is not None:
            setattr(pm, m.value_field, m.value)
        elif m.value_field == "dataset_value":
            pm.dataset_value.num_of_columns = 0
        elif m.value_field == "template_value":
            pm.template_value.is_definition = False
        if m.properties:
            _set_properties(pm.properties, m.properties)
    return p.SerializeToString()


def rebirth_command(timestamp_ms: int) -> bytes:
    """NCMD payload asking an edge node to re-send its births: ``Node Control/Rebirth`` = true."""
    return encode(Payload(timestamp=timestamp_ms, metrics=(
        Metric(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=DataType.BOOLEAN, value_field="boolean_value",
               value=True),
    )))
