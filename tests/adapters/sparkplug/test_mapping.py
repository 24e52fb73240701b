"""Metric → tenant/tag mapping with a recording context: templates, explicit tags, auto_register."""

from __future__ import annotations

from typing import Any

from adapters.sparkplug.config import SparkplugSourceConfig
from adapters.sparkplug.host import MetricRef
from adapters.sparkplug.mapping import PointMapper
from ingestd.testing import RecordingContext


def mapper(**cfg: Any) -> tuple[PointMapper, RecordingContext]:
    config = SparkplugSourceConfig.model_validate({"name": "spb", "protocol": "sparkplug", **cfg})
    ctx = RecordingContext.for_source(config, known_tenants=("t1", "permian", "delaware"))
    return PointMapper(config, ctx), ctx


def tag_of(ctx: RecordingContext, key: int | None) -> tuple[str, str]:
    assert key is not None
    p = ctx.points[key]
    return p.tenant, p.tag


def test_default_templates_and_sanitiser() -> None:
    m, ctx = mapper()
    assert tag_of(ctx, m(MetricRef("G", "RTU 7", "VFD", "Motor 1/Speed (rpm)"), "float")) == \
        ("t1", "RTU_7.VFD.Motor_1/Speed_rpm_")
    assert tag_of(ctx, m(MetricRef("G", "RTU7", "", "Uptime"), "int")) == ("t1", "RTU7.Uptime")


def test_cached_per_metric() -> None:
    m, _ = mapper()
    ref = MetricRef("G", "E", "D", "x")
    assert m(ref, "float") == m(ref, "float")


def test_tenant_template() -> None:
    m, ctx = mapper(tenant_template="{group}", tag="{group}.{node}.{device}.{metric}")
    assert tag_of(ctx, m(MetricRef("Permian", "E", "D", "x"), "float")) == ("permian", "Permian.E.D.x")
    assert m(MetricRef("Midland", "E", "D", "x"), "float") is None
    assert ctx.rec.rejects[-1][0] == "unknown_tenant"


def test_explicit_tag_by_metric_and_by_name() -> None:
    m, _ = mapper(tags=[
        {"name": "well7.speed", "metric": "Pump/Speed", "node": "RTU7", "device": "VFD", "unit": "rpm"},
        {"name": "well7.uptime", "metric": "Uptime", "node": "RTU7", "group": "G"},
        {"name": "RTU7.VFD.Motor_Temp", "unit": "degF"},
    ])
    assert m(MetricRef("G", "RTU7", "VFD", "Pump/Speed"), "float") == 0
    assert m(MetricRef("G", "RTU7", "", "Uptime"), "int") == 1
    assert m(MetricRef("H", "RTU7", "", "Uptime"), "int") not in (None, 1)  # other group: auto-registered
    assert m(MetricRef("G", "RTU7", "VFD", "Motor Temp"), "float") == 2      # by rendered name
    assert m(MetricRef("G", "RTU8", "VFD", "Pump/Speed"), "float") not in (None, 0)


def test_auto_register_false_rejects_unknown_metrics() -> None:
    m, ctx = mapper(auto_register=False, tags=[{"name": "E.D.known"}])
    assert m(MetricRef("G", "E", "D", "known"), "float") == 0
    assert m(MetricRef("G", "E", "D", "other"), "float") is None
    assert ctx.rec.rejects == [("unknown_tag", "G/E/D:other: tag 'E.D.other' is not configured "
                                "(auto_register = false)", None)]
    assert len(ctx.points) == 1


def test_collisions_keep_the_first_metric() -> None:
    m, ctx = mapper()
    assert m(MetricRef("G", "E", "D", "a b"), "float") is not None
    assert m(MetricRef("G", "E", "D", "a_b"), "float") is None
    assert ctx.rec.rejects[-1][0] == "tag_collision"


def test_unmappable_names_are_rejected() -> None:
    m, ctx = mapper(node_tag="{metric}")
    assert m(MetricRef("G", "E", "", "°"), "float") is None
    assert ctx.rec.rejects[-1][0] == "bad_tag_name"
