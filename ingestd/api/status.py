"""Current state of sources and of a tenant's database, as the daemon sees it (no I/O)."""

from __future__ import annotations

from typing import Any

from ..daemon import Daemon
from ..pipeline.tenant import TenantPipeline

__all__ = ["readiness", "source_states"]

_STANDBY = "standby"


def source_states(daemon: Daemon, tp: TenantPipeline) -> list[dict[str, Any]]:
    """Sources feeding ``tp`` (only those: another tenant's sources are never listed)."""
    out = []
    for name in sorted(daemon.sources):
        h = daemon.sources[name]
        if tp not in h.route.tenants:
            continue
        devices = {k: v for k, v in sorted(h.device_up.items()) if k}
        if "" in h.device_up:
            up: bool | None = h.device_up[""]
        else:
            up = any(devices.values()) if devices else None
        runner = h.runner
        out.append({
            "name": name,
            "protocol": str(h.cfg.protocol),
            "state": runner.state.value if runner is not None else "stopped",
            "up": up,
            "devices": devices,
            "last_error": runner.last_error if runner is not None else None,
            "tags": int(h.route.keys_for(tp).shape[0]),
        })
    return out


def readiness(daemon: Daemon, tp: TenantPipeline) -> dict[str, Any]:
    """Ready = the tenant database takes writes and at least one of its sources is up (or on standby,
    when another instance holds the lease). A tenant without sources needs only its database."""
    sources = source_states(daemon, tp)
    reasons = []
    if not tp.db_healthy:
        reasons.append(f"tenant database unavailable: {tp.last_error or 'not connected yet'}")
    if sources and not any(s["up"] or s["state"] == _STANDBY for s in sources):
        reasons.append("no source is up")
    stats = tp.spool.stats
    return {
        "ready": not reasons,
        "tenant": tp.slug,
        "reasons": reasons,
        "database": {"healthy": tp.db_healthy, "tier": tp.tier.value if tp.tier is not None else None,
                     "last_error": tp.last_error, "spool_rows": int(stats.rows), "spool_bytes": int(stats.bytes)},
        "sources": sources,
    }
