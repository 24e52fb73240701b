"""Parsing of query parameters shared by the routes: times, durations, globs, opaque cursors.

Times are accepted as RFC 3339 (``2024-05-01T06:00:00Z``, ``2024-05-01T01:00:00-05:00``; a time
without offset is UTC), ``now``, or relative to now (``-24h``, ``now-7d``, ``-90m``). Every time in
API *answers* is an integer of µs since the Unix epoch (UTC), like the rest of ingestd.

Cursors are opaque to clients: URL-safe base64 of a small JSON document naming the cursor's kind
and tenant, so a cursor of one list or tenant is rejected (400) elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final

import orjson
from fastapi import Query
from pydantic import StringConstraints

from ..config.types import TAG_RE
from ..model import now_us
from .errors import ApiError

__all__ = [
    "GLOB_RE",
    "MAX_TIME_US",
    "TIME_PATTERN",
    "OptTime",
    "TagName",
    "TagNames",
    "check_tags",
    "cursor_int",
    "cursor_str",
    "decode_cursor",
    "encode_cursor",
    "parse_duration_s",
    "parse_time",
    "time_range",
]

MIN_TIME_US: Final = 0
MAX_TIME_US: Final = 7_258_118_400_000_000  # 2200-01-01
_REL_RE: Final = re.compile(r"^(?:now)?\s*(?:([-+])\s*(\d{1,9}(?:\.\d+)?)\s*(ms|s|m|h|d|w))?$")
_UNITS: Final = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DUR_RE: Final = re.compile(r"^(\d{1,9}(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$")

GLOB_RE: Final = r"^[A-Za-z0-9_.:/#+\-*?]{1,200}$"
"""Tag globs: tag-name characters plus ``*`` and ``?``."""

TagName = Annotated[str, StringConstraints(pattern=f"^{TAG_RE}$")]
TagNames = Annotated[list[TagName] | None, Query(
    max_length=1000, description="Tag name (repeat the parameter for several tags).",
)]
"""An optional repeated ``tag`` query parameter."""
_TIME_DOC: Final = "RFC 3339 time (UTC if no offset), `now`, or relative like `-24h`, `now-7d`."
TIME_PATTERN: Final = r"^[0-9A-Za-z:.+\- ]+$"
OptTime = Annotated[str | None, Query(min_length=1, max_length=64, pattern=TIME_PATTERN, description=_TIME_DOC)]
"""An optional time query parameter (parse with :func:`time_range` / :func:`parse_time`)."""


def parse_time(text: str, parameter: str, *, now: int | None = None) -> int:
    """Time parameter → µs since the epoch; ApiError(400) naming ``parameter`` when invalid."""
    s = text.strip()
    now = now_us() if now is None else now
    m = _REL_RE.match(s)
    if m and s:
        if m.group(1) is None:
            return now
        delta = int(float(m.group(2)) * _UNITS[m.group(3)] * 1e6)
        us = now - delta if m.group(1) == "-" else now + delta
    else:
        try:
            t = dt.datetime.fromisoformat(s)
        except ValueError:
            raise ApiError(400, f"{parameter}: {text!r} is not an RFC 3339 time, 'now' or a relative time like "
                                "'-24h'", parameter=parameter) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        us = (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise ApiError(400, f"{parameter}: time must be between 1970 and 2200", parameter=parameter)
    return us


def time_range(start: str | None, end: str | None, *, default_span_s: float | None = 86400.0,
               max_span_s: float | None = None) -> tuple[int, int]:
    """(start, end) in µs: ``end`` defaults to now, ``start`` to ``end - default_span``."""
    now = now_us()
    end_us = parse_time(end, "end", now=now) if end is not None else now
    if start is not None:
        start_us = parse_time(start, "start", now=now)
    elif default_span_s is not None:
        start_us = max(MIN_TIME_US, end_us - int(default_span_s * 1e6))
    else:
        raise ApiError(400, "start is required", parameter="start")
    if end_us <= start_us:
        raise ApiError(400, "end must be after start", parameter="end")
    if max_span_s is not None and end_us - start_us > max_span_s * 1e6:
        raise ApiError(400, f"the time range may span at most {max_span_s / 86400:g} days", parameter="start")
    return start_us, end_us


def parse_duration_s(text: str, parameter: str) -> float:
    m = _DUR_RE.match(text.strip())
    if not m:
        raise ApiError(400, f"{parameter}: {text!r} is not a duration (e.g. '30s', '5m', '2h')", parameter=parameter)
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def check_tags(names: Sequence[str], parameter: str = "tag") -> list[str]:
    pattern = re.compile(TAG_RE)
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not pattern.fullmatch(name):
            raise ApiError(400, f"{parameter}[{i}]: {name!r} is not a valid tag name", parameter=parameter)
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def encode_cursor(kind: str, tenant: str, data: dict[str, Any]) -> str:
    raw = orjson.dumps({"k": kind, "t": tenant, **data})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, kind: str, tenant: str, parameter: str = "cursor") -> dict[str, Any]:
    """Decode a cursor made by :func:`encode_cursor`; 400 if malformed or from another list/tenant."""
    bad = ApiError(400, f"{parameter}: not a valid cursor for this list (start again without it)",
                   parameter=parameter)
    if len(text) > 2048:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("k") != kind or doc.get("t") != tenant:
        raise bad
    return doc


def cursor_int(doc: dict[str, Any], key: str, parameter: str = "cursor") -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
        raise ApiError(400, f"{parameter}: not a valid cursor for this list (start again without it)",
                       parameter=parameter)
    return v


def cursor_str(doc: dict[str, Any], key: str, parameter: str = "cursor") -> str:
    v = doc.get(key)
    if not isinstance(v, str) or len(v) > 512:
        raise ApiError(400, f"{parameter}: not a valid cursor for this list (start again without it)",
                       parameter=parameter)
    return v
