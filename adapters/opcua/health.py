"""Per-tag problem bookkeeping that outlives a session: log once, count, report recovery.

A source keeps one :class:`TagHealth` across ``run()`` calls so a node rejected on every reconnect is
logged once (not once per reconnect), and a value of an unsupported type is rejected once per tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Literal

from ingestd.model import Batch, now_us
from ingestd.ports import SourceContext

from .decode import RawSamples, TimestampMode, TypeReject, bad_batch, build_batch

__all__ = ["TagHealth", "emit_raw"]

_LOG_EACH: Final = 10
"""Problems logged one line each per call; the rest are summarised in one line."""


class TagHealth:
    def __init__(self, status_name: Callable[[int], str], retry_interval: float) -> None:
        self._status_name = status_name
        self._retry = retry_interval
        self.bad_nodes: dict[int, int] = {}
        """point index → status code of a node the server rejected (or whose namespace is unknown)"""
        self.type_rejected: set[int] = set()

    def node_bad(self, ctx: SourceContext, rows: Iterable[tuple[int, int, str]],
                 emit: Literal["changed", "all"] = "changed") -> Batch | None:
        """Record rejected nodes ``(point, status, detail)``: log and count each new problem once.

        Returns BAD samples (so the live value turns BAD rather than stale) for the points whose
        status changed — or for all of them with ``emit="all"`` (a new session) — else ``None``."""
        out: list[tuple[int, int]] = []
        new: list[tuple[int, int, str]] = []
        for point, status, detail in rows:
            if self.bad_nodes.get(point) != status:
                self.bad_nodes[point] = status
                new.append((point, status, detail))
                out.append((point, status))
            elif emit == "all":
                out.append((point, status))
        for point, status, detail in new[:_LOG_EACH]:
            ctx.log.warning(
                "OPC UA source %r: tag %r (%s) rejected: %s; retrying every %gs, other tags keep flowing",
                ctx.name, ctx.points[point].tag, detail, self._status_name(status), self._retry,
            )
        if len(new) > _LOG_EACH:
            ctx.log.warning("OPC UA source %r: %d more tags rejected (%s, ...)", ctx.name, len(new) - _LOG_EACH,
                            ", ".join(ctx.points[p].tag for p, _, _ in new[_LOG_EACH:_LOG_EACH + 5]))
        if new:
            ctx.metrics.count("bad_node", len(new))
        ctx.metrics.gauge("bad_nodes", len(self.bad_nodes))
        return bad_batch(out, now_us()) if out else None

    def node_ok(self, ctx: SourceContext, points: Iterable[int]) -> None:
        for point in points:
            status = self.bad_nodes.pop(point, None)
            if status is not None:
                ctx.log.info("OPC UA source %r: tag %r is available again (was %s)",
                             ctx.name, ctx.points[point].tag, self._status_name(status))
        ctx.metrics.gauge("bad_nodes", len(self.bad_nodes))

    def reject_types(self, ctx: SourceContext, rejects: Iterable[TypeReject]) -> None:
        for r in rejects:
            if r.key in self.type_rejected:
                continue
            self.type_rejected.add(r.key)
            ctx.reject("unsupported_type", f"OPC UA source {ctx.name!r}: tag {ctx.points[r.key].tag!r} "
                       f"has a {r.type_name} value; only numbers, booleans and enumerations can be stored "
                       "(stored as BAD/BadTypeMismatch)")


async def emit_raw(ctx: SourceContext, raw: RawSamples, mode: TimestampMode, health: TagHealth,
                   recv_us: int | None = None) -> int:
    """Decode ``raw`` into one batch and emit it. Returns the number of rows."""
    if not raw:
        return 0
    batch, rejects = build_batch(raw, mode, recv_us if recv_us is not None else now_us())
    if rejects:
        health.reject_types(ctx, rejects)
    await ctx.emit(batch)
    return len(batch)
