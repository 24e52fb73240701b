"""Sparkplug metric → point index: explicit tags first, then the tenant/tag templates.

Resolution order for a BIRTH metric (group, node, device, metric):

1. an explicit tag with ``metric`` (+ ``node``, optional ``group``, ``device``) matching it;
2. the rendered, sanitised tag name (``tag`` or ``node_tag`` template) — when it equals the
   ``name`` of an explicit tag, that tag (and its unit/deadband/scaling) is used;
3. otherwise, with ``auto_register = true``, a dynamic tag is registered; with ``false`` the metric
   is rejected (``unknown_tag``, logged once, dead-lettered) and not stored.

Two different metrics that sanitise to the same tag name: the first one keeps it, the other is
rejected (``tag_collision``).
"""

from __future__ import annotations

from ingestd.errors import PayloadError
from ingestd.ports import SourceContext

from .config import SparkplugSourceConfig, SparkplugTagConfig
from .host import MetricRef
from .naming import render, sanitize_tag, sanitize_tenant

__all__ = ["PointMapper"]


class PointMapper:
    """The :data:`~.host.Resolver` of a source run (cached per metric)."""

    def __init__(self, cfg: SparkplugSourceConfig, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self._by_metric: list[tuple[SparkplugTagConfig, int]] = [
            (t, i) for i, t in enumerate(cfg.tags) if t.metric is not None
        ]
        self._explicit: dict[str, set[str]] = {}
        for p in ctx.points:
            if p.config is not None:
                self._explicit.setdefault(p.tag, set()).add(p.tenant)
        self._cache: dict[MetricRef, int | None] = {}
        self._owner: dict[tuple[str | None, str], MetricRef] = {}

    def __call__(self, ref: MetricRef, data_type: str) -> int | None:
        if ref in self._cache:
            return self._cache[ref]
        key = self._resolve(ref, data_type)
        self._cache[ref] = key
        return key

    def _resolve(self, ref: MetricRef, data_type: str) -> int | None:
        for t, index in self._by_metric:
            if (t.metric == ref.name and t.node == ref.node and (t.group is None or t.group == ref.group)
                    and (t.device or "") == ref.device):
                return index
        fields = {"group": ref.group, "node": ref.node, "device": ref.device, "metric": ref.name}
        tenant: str | None = None
        if self.cfg.tenant_template is not None:
            rendered = render(self.cfg.tenant_template, fields)
            tenant = sanitize_tenant(rendered)
            if tenant is None:
                self.ctx.reject("unknown_tenant", f"{ref}: tenant template gave {rendered!r}, not a tenant slug",
                                key=rendered)
                return None
        raw = render(self.cfg.tag if ref.device else self.cfg.node_tag, fields)
        tag = sanitize_tag(raw)
        if tag is None:
            self.ctx.reject("bad_tag_name", f"{ref}: tag template gave {raw!r}, which has no valid tag name",
                            key=raw)
            return None
        tenants = self._explicit.get(tag)
        explicit = tenants is not None and (tenant is None or tenant in tenants)
        if not explicit and not self.cfg.auto_register:
            self.ctx.reject("unknown_tag", f"{ref}: tag {tag!r} is not configured (auto_register = false)", key=tag)
            return None
        owner = self._owner.get((tenant, tag))
        if owner is not None and owner != ref:
            self.ctx.reject("tag_collision", f"{ref} and {owner} both map to tag {tag!r}; {owner} keeps it",
                            key=tag)
            return None
        try:
            key = self.ctx.register_point(tenant, tag, data_type=data_type, description=f"Sparkplug {ref}")
        except PayloadError as exc:
            self.ctx.reject(exc.reason, f"{ref}: {exc.detail}", key=f"{tenant}/{tag}")
            return None
        self._owner[(tenant, tag)] = ref
        return key
