"""Streaming export of raw readings for ML: CSV or NDJSON, with quality and status, bounded memory.

Rows are read in keyset pages of ``ApiOptions.export_chunk`` rows ordered by (tag, time) — the
primary key's order, so every page is one index range scan whatever the export's total size — and
each page is formatted and handed to the HTTP layer before the next one is read. A database
connection is held only while one page is read, so a slow client never pins a pool connection.

CSV columns: ``tag,ts,value,quality,status`` — ``ts`` RFC 3339 with µs and ``Z``; ``value`` empty
when NULL (BAD); ``quality`` 0 GOOD / 1 UNCERTAIN / 2 BAD; ``status`` the raw protocol code.
NDJSON: one object per line with the same fields plus ``ts_us``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, Literal

import numpy as np
import orjson

from ..storage import queries
from ..storage.pool import TenantDb

__all__ = ["CSV_HEADER", "ExportFormat", "export_stream", "format_chunk"]

ExportFormat = Literal["csv", "ndjson"]
CSV_HEADER: Final = b"tag,ts,value,quality,status\n"
_CSV_UNSAFE: Final = frozenset(',"\r\n')


def _csv_name(name: str) -> str:
    if any(c in _CSV_UNSAFE for c in name):
        return '"' + name.replace('"', '""') + '"'
    return name


def format_chunk(cols: queries.Columns, names: Mapping[int, str], fmt: ExportFormat) -> bytes:
    ts = cols["ts"]
    if ts.shape[0] == 0:
        return b""
    stamps = np.datetime_as_string(ts.astype("datetime64[us]"), unit="us").tolist()
    tags = cols["tag_id"].tolist()
    values = cols["value"].tolist()
    qualities = cols["quality"].tolist()
    statuses = cols["status"].tolist()
    if fmt == "csv":
        lines = [
            f"{names[t]},{s}Z,{'' if v != v else repr(v)},{q},{st}\n"
            for t, s, v, q, st in zip(tags, stamps, values, qualities, statuses, strict=True)
        ]
        return "".join(lines).encode()
    out = bytearray()
    for t, s, us, v, q, st in zip(tags, stamps, ts.tolist(), values, qualities, statuses, strict=True):
        out += orjson.dumps({"tag": names[t], "ts": s + "Z", "ts_us": us, "value": None if v != v else v,
                             "quality": q, "status": st})
        out += b"\n"
    return bytes(out)


async def export_stream(db: TenantDb, ids: Sequence[int], names: Mapping[int, str], start_us: int, end_us: int,
                        max_quality: int, fmt: ExportFormat, chunk: int,
                        first: queries.Columns | None = None) -> AsyncIterator[bytes]:
    """Yield the formatted export page by page. ``first`` is the already-read first page."""
    safe = {k: _csv_name(v) for k, v in names.items()} if fmt == "csv" else dict(names)
    if fmt == "csv":
        yield CSV_HEADER
    cols = first
    after: tuple[int, int] | None = None
    while True:
        if cols is None:
            async with db.connection() as conn:
                cols = await queries.export_chunk(conn, ids, start_us, end_us, after, chunk, max_quality)
        n = cols["ts"].shape[0]
        if n:
            yield format_chunk(cols, safe, fmt)
        if n < chunk:
            return
        after = (int(cols["tag_id"][-1]), int(cols["ts"][-1]))
        cols = None
