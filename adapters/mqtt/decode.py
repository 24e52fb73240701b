"""Pure decoding of MQTT JSON payloads into samples (no I/O, no protocol library).

A :class:`Decoder` is compiled once per subscription. ``decode(topic_levels, payload, recv_us)``
returns ``(tenant, tag, ts_us, value, quality)`` tuples or raises :class:`PayloadError` with a
stable reason (``bad_json``, ``missing_value``, ``non_numeric_value``, ``not_finite``,
``bad_timestamp``, ``bad_quality``, ``bad_structure``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from ingestd.errors import PayloadError
from ingestd.model import Quality

from .config import Subscription, parse_template

__all__ = ["Decoder", "Sample", "compile_path", "parse_quality", "parse_timestamp"]

Sample = tuple[str | None, str, int, float | None, int]

_PATH_TOKEN: Final = re.compile(r"\[(\d+)\]|\.?([A-Za-z0-9_\-]+)")
_MISSING: Final = object()
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_path(path: str | None) -> Callable[[Any], Any] | None:
    """Compile ``"data.items[0].v"`` into a getter returning the value or a MISSING sentinel."""
    if path is None:
        return None
    if path in ("$", ""):
        return lambda doc: doc
    steps: list[int | str] = [
        int(m.group(1)) if m.group(1) is not None else m.group(2) for m in _PATH_TOKEN.finditer(path.removeprefix("$"))
    ]

    def get(doc: Any) -> Any:
        cur = doc
        for s in steps:
            if isinstance(s, int):
                if not isinstance(cur, list) or s >= len(cur):
                    return _MISSING
                cur = cur[s]
            else:
                if not isinstance(cur, dict) or s not in cur:
                    return _MISSING
                cur = cur[s]
        return cur

    return get


def parse_timestamp(raw: Any, unit: str) -> int:
    """Source timestamp → µs since epoch (UTC). ``auto`` guesses s/ms/µs/ns from magnitude."""
    if isinstance(raw, bool):
        raise PayloadError("bad_timestamp", f"timestamp must be a number or ISO 8601 string, got {raw!r}")
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or raw < 0:
            raise PayloadError("bad_timestamp", f"timestamp {raw!r} is not a valid epoch value")
        if unit in ("auto", "iso8601"):
            a = abs(raw)
            unit = "s" if a < 1e11 else "ms" if a < 1e14 else "us" if a < 1e17 else "ns"
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
        return round(raw * scale)
    if isinstance(raw, str):
        if unit not in ("auto", "iso8601"):
            try:
                return parse_timestamp(float(raw), unit)
            except ValueError:
                raise PayloadError("bad_timestamp", f"timestamp {raw[:40]!r} is not a number") from None
        try:
            t = dt.datetime.fromisoformat(raw.strip())
        except ValueError:
            raise PayloadError("bad_timestamp", f"timestamp {raw[:40]!r} is not ISO 8601") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)  # documented: naive timestamps are UTC
        return int(t.timestamp() * 1_000_000)
    raise PayloadError("bad_timestamp", f"timestamp must be a number or ISO 8601 string, got {type(raw).__name__}")


_QUALITY_WORDS: Final = {
    "good": Quality.GOOD, "ok": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD,
    "stale": Quality.UNCERTAIN,
}


def parse_quality(raw: Any) -> int:
    """``good``/``uncertain``/``bad`` (any case), booleans (true = good), 192 (Ignition/Sparkplug good),
    500 (Sparkplug stale → uncertain) or an OPC UA StatusCode (severity in the top two bits)."""
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, str):
        q = _QUALITY_WORDS.get(raw.strip().lower())
        if q is None:
            raise PayloadError("bad_quality", f"unknown quality {raw[:40]!r}")
        return q
    if isinstance(raw, int):
        if raw == 192:
            return Quality.GOOD
        if raw == 500:
            return Quality.UNCERTAIN
        if not 0 <= raw <= 0xFFFF_FFFF:
            raise PayloadError("bad_quality", f"quality {raw} is not a status code")
        sev = raw >> 30
        return Quality.GOOD if sev == 0 else Quality.UNCERTAIN if sev == 1 else Quality.BAD
    raise PayloadError("bad_quality", f"quality must be a string, boolean or number, got {type(raw).__name__}")


def _number(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        v = float(raw)
    elif isinstance(raw, str):
        try:
            v = float(raw)
        except ValueError:
            raise PayloadError("non_numeric_value", f"value {raw[:40]!r} is not a number") from None
    else:
        raise PayloadError("non_numeric_value", f"value of type {type(raw).__name__} is not a number")
    if not math.isfinite(v):
        raise PayloadError("not_finite", f"value {raw!r} is not finite")
    return v


class Decoder:
    """Decodes payloads of one subscription."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.filter, names = parse_template(sub.topic)
        self.multilevel = self.filter.endswith("#")
        self.literal = [None if n is not None or lvl in ("+", "#") else lvl
                        for n, lvl in zip(names, self.filter.split("/"), strict=True)]
        self.captures = [(i, n) for i, n in enumerate(names) if n is not None]
        self.depth = len(names)
        self._items = compile_path(sub.items_path)
        self._values = compile_path(sub.values_path)
        self._key = compile_path(sub.key_path)
        self._value = compile_path(sub.value_path)
        self._ts = compile_path(sub.timestamp_path)
        self._quality = compile_path(sub.quality_path)
        self._tag_fields = set(_PLACEHOLDER.findall(sub.tag))
        self._tenant_is_template = bool(sub.tenant and _PLACEHOLDER.search(sub.tenant))

    def match(self, levels: Sequence[str]) -> dict[str, str] | None:
        """Captured placeholders if ``levels`` (the topic split on '/') matches, else None."""
        if self.multilevel:
            if len(levels) < self.depth - 1:
                return None
        elif len(levels) != self.depth:
            return None
        for i, lit in enumerate(self.literal):
            if lit is not None and (i >= len(levels) or levels[i] != lit):
                return None
        return {n: levels[i] for i, n in self.captures}

    def _names(self, captures: dict[str, str], key: str | None) -> tuple[str | None, str]:
        fields = dict(captures)
        if key is not None:
            fields["key"] = key
        tag = self.sub.tag.format_map(fields) if self._tag_fields else self.sub.tag
        tenant = self.sub.tenant
        if tenant is not None and self._tenant_is_template:
            tenant = tenant.format_map(fields)
        return tenant, tag

    def _ts_of(self, obj: Any, default: int) -> int:
        if self._ts is None:
            return default
        raw = self._ts(obj)
        if raw is _MISSING or raw is None:
            return default
        return parse_timestamp(raw, self.sub.timestamp_unit)

    def _quality_of(self, obj: Any) -> int:
        if self._quality is None:
            return Quality.GOOD
        raw = self._quality(obj)
        return Quality.GOOD if raw is _MISSING or raw is None else parse_quality(raw)

    def _one(self, obj: Any, ts_default: int) -> tuple[int, float | None, int]:
        assert self._value is not None
        raw = self._value(obj)
        if raw is _MISSING:
            raise PayloadError("missing_value", f"no value at {self.sub.value_path!r}")
        value = _number(raw)
        quality = self._quality_of(obj)
        if value is None:
            quality = Quality.BAD
        return self._ts_of(obj, ts_default), value, quality

    def decode(self, captures: dict[str, str], payload: bytes, recv_us: int
               ) -> tuple[list[Sample], list[PayloadError]]:
        """Samples of one message, plus the per-value problems (a bad value never loses the others).
        Raises PayloadError when the message as a whole is unusable."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError("bad_json", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        if self._items is None and self._values is None:
            tenant, tag = self._names(captures, None)
            ts, value, quality = self._one(doc, recv_us)
            return [(tenant, tag, ts, value, quality)], []
        payload_ts = self._ts_of(doc, recv_us) if isinstance(doc, dict) else recv_us
        out: list[Sample] = []
        errors: list[PayloadError] = []
        if self._values is not None:
            values = self._values(doc)
            if not isinstance(values, dict):
                raise PayloadError("bad_structure", f"{self.sub.values_path!r} is not an object")
            for key, item in values.items():
                tenant, tag = self._names(captures, str(key))
                try:
                    if isinstance(item, dict):
                        ts, value, quality = self._one(item, payload_ts)
                    else:
                        ts, value, quality = payload_ts, _number(item), Quality.GOOD
                        if value is None:
                            quality = Quality.BAD
                except PayloadError as exc:
                    errors.append(PayloadError(exc.reason, f"{key}: {exc.detail}"))
                    continue
                out.append((tenant, tag, ts, value, quality))
            return out, errors
        assert self._items is not None
        assert self._key is not None
        items = self._items(doc)
        if not isinstance(items, list):
            raise PayloadError("bad_structure", f"{self.sub.items_path!r} is not an array")
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise PayloadError("bad_structure", f"item {i} of {self.sub.items_path!r} is not an object")
                key = self._key(item)
                if key is _MISSING or not isinstance(key, str | int):
                    raise PayloadError("bad_structure", f"item {i} has no key at {self.sub.key_path!r}")
                tenant, tag = self._names(captures, str(key))
                ts, value, quality = self._one(item, payload_ts)
            except PayloadError as exc:
                errors.append(PayloadError(exc.reason, f"item {i}: {exc.detail}"))
                continue
            out.append((tenant, tag, ts, value, quality))
        return out, errors
