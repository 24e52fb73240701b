"""Pure rules of a reload: what a new configuration must pass, and what in it forces which restart.

The daemon applies a reload in :meth:`ingestd.daemon.Daemon.apply_config`; this module decides,
without I/O other than resolving secret references:

* :func:`config_problems` — cross-section problems the loader lets through but the daemon refuses
  (also reported by ``ingestd check-config`` and checked by ``ingestd run``);
* :func:`restart_reason` — why a running source must stop ('' when it keeps running untouched);
* :func:`secret_fingerprint` — so that a rotated ``file:``/``credential:`` secret restarts its source;
* :func:`restart_only_changes` — settings that take effect only at the next process start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from typing import Any

from pydantic import BaseModel

from .config.base import SourceConfig
from .config.load import IngestdConfig
from .config.types import Secret, SecretUnavailable
from .errors import ConfigProblem
from .leases import lease_problems, needs_lease
from .sources import SourceHandle

__all__ = ["config_problems", "restart_only_changes", "restart_reason", "secret_fingerprint"]


def config_problems(cfg: IngestdConfig) -> list[ConfigProblem]:
    problems = lease_problems(cfg)
    # webhook secrets given as env:/file:/credential: are resolved where possible, so a retired Office 365
    # connector URL is caught behind a reference too (an unresolvable secret is not a problem here)
    problems += cfg.alarms.problems([t.slug for t in cfg.tenants], resolve_secrets=True,
                                    link_secret=cfg.api.link_secret, public_url=cfg.api.public_url)
    return problems


def _secrets(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _secrets(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _secrets(v)


def secret_fingerprint(model: BaseModel) -> str:
    """Digest of the current values behind the ``env:``/``file:``/``credential:`` secrets of a config
    section (inline secrets are part of the config text and compared with it)."""
    h = hashlib.sha256()
    for s in _secrets(model):
        if s.is_inline:
            continue
        try:
            h.update(s.reveal().encode())
        except SecretUnavailable:
            h.update(b"\x00unavailable")
        h.update(b"\x00")
    return h.hexdigest()


def restart_reason(h: SourceHandle, new: IngestdConfig, cfg: SourceConfig | None, removed_tenants: Collection[str],
                   coordination_changed: bool) -> str:
    """Why a running source must stop on reload ('' when it keeps running untouched)."""
    if cfg is None:
        return "removed or disabled"
    if cfg != h.cfg:
        return "configuration changed"
    if any(t.slug in removed_tenants for t in h.route.tenants):
        return "routes to a removed tenant"  # incl. tenants reached through topic templates
    if coordination_changed and (h.leased or needs_lease(cfg, new.coordination)):
        return "coordination settings changed"
    if secret_fingerprint(cfg) != h.secrets:
        return "credentials changed"
    return ""


def restart_only_changes(old: IngestdConfig, new: IngestdConfig) -> list[str]:
    """Changed settings that a running process cannot apply (reported as a warning on reload)."""
    changed = [f"daemon.{k}" for k in ("state_dir", "instance_id", "log_format")
               if getattr(old.daemon, k) != getattr(new.daemon, k)]
    sp_old, sp_new = old.pipeline.spool, new.pipeline.spool
    changed += [f"pipeline.spool.{k}" for k in ("segment_bytes", "fsync", "fsync_interval")
                if getattr(sp_old, k) != getattr(sp_new, k)]
    return changed
