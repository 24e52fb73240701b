"""``[alarms]`` config: validation with key paths, retired connector URLs (scenario 52), binding (scenario 55)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from alarms.binding import TagInfo, bind, system_binding
from alarms.config import AlarmsConfig
from alarms.model import US, Level, Priority
from alarms.rules import LimitEvaluator, Sample
from alarms.signals import CommLossEvaluator
from alarms.testing import T0
from ingestd.config.load import format_loc

WORKFLOW = "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG"

SAMPLE = """
asset_pattern = '^(?P<asset>[^/]+)/'

[defaults]
max_shelve = "4h"
chatter = { count = 4, window = "30s" }

[tenants.acme]
flood = { start = 20 }

[[rules]]
name = "casing_pressure"
kind = "limit"
tags = ["well_*/casing_pressure"]
priority = "high"
hi = { setpoint = 1400, deadband = 20, on_delay = "10s" }
hihi = { setpoint = 1450, deadband = 20 }

[[rules]]
name = "low_flow"
kind = "limit"
tags = ["well_*/flow"]
lo = { setpoint = 10, deadband = 1, on_delay = "1m" }

[[rules]]
name = "flow_dev"
kind = "deviation"
tags = ["well_*/flow"]
setpoint_tag = "{tag}_sp"
hi = { setpoint = 2 }
lo = { setpoint = -1 }

[[rules]]
name = "pump_fail"
kind = "discrepancy"
tags = ["well_*/pump_running"]
command_tag = "{asset}/pump_cmd"
tolerance_time = "30s"

[[rules]]
name = "rtu_comms"
kind = "comm_loss"
sources = ["rtu_*"]
stale_after = "5m"

[[suppression_groups]]
name = "pump_off"
condition_tag = "{asset}/pump_running"
when = "eq"
value = 0
rules = ["low_flow"]
grace = "5m"

[[routes]]
name = "oncall"
tenant = "acme"
priorities = ["critical", "high", "medium", "low"]
webhook = "env:ACME_HOOK"
fallback = "backup"
escalate_to = "boss"
escalate_after = "15m"
repeat_interval = "1h"

[[routes]]
name = "backup"
tenant = "acme"
priorities = []
webhook = "file:/etc/ingestd/backup_hook"

[[routes]]
name = "boss"
tenant = "acme"
priorities = []
webhook = "credential:boss_hook"
"""

TAGS = {
    **{f"well_{n}/{t}": TagInfo(source="rtu_1" if n < 3 else "rtu_2", unit="psi" if t == "casing_pressure" else "")
       for n in (1, 2, 3) for t in ("casing_pressure", "flow", "flow_sp", "pump_running", "pump_cmd")},
}


def cfg(text: str = SAMPLE) -> AlarmsConfig:
    return AlarmsConfig.model_validate(tomllib.loads(text))


def errors(data: dict[str, object]) -> list[str]:
    with pytest.raises(ValidationError) as ei:
        AlarmsConfig.model_validate(data)
    return [f"{format_loc(e['loc'])}: {e['msg']}" for e in ei.value.errors(include_url=False)]


def test_empty_alarms_table_is_valid() -> None:
    c = AlarmsConfig.model_validate({})
    assert c.enabled and c.rules == [] and c.problems(["acme"]) == []


def test_sample_config_parses_and_tenant_overrides_merge() -> None:
    c = cfg()
    p = c.policy_for("acme")
    assert p.flood.start == 20 and p.flood.end == 5 and p.chatter.count == 4 and p.max_shelve == 4 * 3600
    assert c.policy_for("other").flood.start == 10
    assert c.route_for("acme", "high").name == "oncall"  # type: ignore[union-attr]
    assert c.route_for("other", "high") is None
    assert c.summary() == "5 rule(s) (1 comm_loss, 1 deviation, 1 discrepancy, 2 limit), 1 suppression group(s), " \
                          "3 route(s)"
    assert AlarmsConfig(enabled=False).summary() == "disabled"


@pytest.mark.parametrize(("data", "expected"), [
    ({"rules": [{"name": "x", "kind": "limit", "tags": ["a"]}]}, "rules[0].limit: Value error, at least one"),
    ({"rules": [{"name": "x", "kind": "limit", "tags": ["a"], "hi": {"setpoint": 5}, "hihi": {"setpoint": 4}}]},
     "hihi.setpoint (4) must be above hi.setpoint (5)"),
    ({"rules": [{"name": "x", "kind": "deviation", "tags": ["a"], "setpoint_tag": "{tag}_sp",
                 "lo": {"setpoint": 1}}]}, "lo.setpoint must be a negative offset"),
    ({"rules": [{"name": "x", "kind": "deviation", "tags": ["a"], "setpoint_tag": "{well}_sp",
                 "hi": {"setpoint": 1}}]}, "rules[0].deviation.setpoint_tag: Value error, '{well}_sp': unknown"),
    ({"rules": [{"name": "x", "kind": "rate", "tags": ["a"], "rate": 0}]}, "rules[0].rate.rate"),
    ({"rules": [{"name": "x", "kind": "laser", "tags": ["a"]}]}, "rules[0]: Input tag 'laser'"),
    ({"rules": [{"name": "x", "kind": "limit", "tags": ["bad tag!"], "hi": {"setpoint": 1}}]}, "glob pattern"),
    ({"routes": [{"name": "r", "webhook": "env:X", "escalate_to": "b"}]}, "escalate_to and escalate_after"),
    ({"routes": [{"name": "r", "webhook": "env:X", "rate_per_second": 10}]}, "routes[0].rate_per_second"),
    ({"suppression_groups": [{"name": "g", "condition_tag": "{asset}/p"}]}, "needs `rules` and/or `tags`"),
    ({"defaults": {"flood": {"start": 4, "end": 6}}}, "end (6) must not exceed start (4)"),
    ({"asset_pattern": "^(x)"}, "named group (?P<asset>"),
    ({"unknown": 1}, "unknown: Extra inputs"),
])
def test_invalid_config_reports_key_paths(data: dict[str, object], expected: str) -> None:
    assert any(expected in e for e in errors(data)), errors(data)


@pytest.mark.parametrize("url", [
    "https://acme.webhook.office.com/webhookb2/1234@5678/IncomingWebhook/abc/def",
    "https://outlook.office.com/webhook/1234/IncomingWebhook/abc",
])
def test_s52_inline_retired_connector_url_is_rejected_at_load_without_echoing_it(url: str) -> None:
    errs = errors({"routes": [{"name": "r", "webhook": url}]})
    assert any(e.startswith("routes[0].webhook: Value error, this is a retired Office 365 connector") for e in errs)
    assert all(url not in e for e in errs)


def test_s52_referenced_retired_url_is_a_check_config_problem(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = "https://contoso.webhook.office.com/webhookb2/aaa/IncomingWebhook/bbb/ccc"
    monkeypatch.setenv("ACME_HOOK", legacy)
    hook = tmp_path / "backup_hook"
    hook.write_text("http://example.com/hook\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "missing"))
    c = cfg(SAMPLE.replace("/etc/ingestd/backup_hook", str(hook)))
    probs = [str(p) for p in c.problems(["acme"], link_secret=None)]
    assert any(p.startswith("alarms.routes[0].webhook: env:ACME_HOOK: this is a retired Office 365") for p in probs)
    assert any(p.startswith(f"alarms.routes[1].webhook: file:{hook}: must use https://") for p in probs)
    assert not any("routes[2].webhook" in p for p in probs)  # unresolvable here: may exist on the target host
    assert "alarms.routes: cards carry signed Acknowledge links: set api.link_secret (or ack_links = false)" in probs
    assert all(legacy not in p for p in probs)
    monkeypatch.setenv("ACME_HOOK", WORKFLOW)
    assert not any("routes[0]" in p for p in map(str, cfg().problems(["acme"])))


def test_cross_reference_problems() -> None:
    c = AlarmsConfig.model_validate({
        "tenants": {"ghost": {}},
        "rules": [{"name": "a", "kind": "bad_quality", "tags": ["x"], "tenant": "nobody"},
                  {"name": "a", "kind": "bad_quality", "tags": ["y"]}],
        "suppression_groups": [{"name": "g", "condition_tag": "p", "rules": ["zzz"]}],
        "routes": [{"name": "r1", "webhook": "env:X", "fallback": "r2"},
                   {"name": "r2", "webhook": "env:X", "fallback": "r1", "tenant": "acme"},
                   {"name": "r3", "webhook": "env:X", "fallback": "nope"}],
    })
    probs = {str(p) for p in c.problems(["acme"], resolve_secrets=False)}
    assert {
        "alarms.tenants.ghost: unknown tenant 'ghost'",
        "alarms.rules[0].name: duplicate rule name 'a'",
        "alarms.rules[0].tenant: unknown tenant 'nobody'",
        "alarms.suppression_groups[0].rules[0]: unknown rule 'zzz'",
        "alarms.routes[0].fallback: route 'r2' belongs to tenant 'acme'",
        "alarms.routes[0].fallback: fallback routes form a loop",
        "alarms.routes[2].fallback: unknown route 'nope'",
    } <= probs


def test_warnings_flag_inline_secrets_and_unrouted_priorities() -> None:
    c = AlarmsConfig.model_validate({
        "rules": [{"name": "a", "kind": "bad_quality", "tags": ["x"]}],
        "routes": [{"name": "r", "webhook": WORKFLOW, "tenant": "acme", "priorities": ["critical"]}]})
    w = [str(p) for p in c.warnings(["acme"])]
    assert "alarms.routes[0].webhook: secret is written inline; prefer env:, file: or credential:" in w
    assert any("no route for priorities ['high', 'medium', 'low']" in x for x in w)
    assert WORKFLOW not in repr(c) and "SECRETSIG" not in c.model_dump_json()


def test_bind_resolves_rules_groups_inhibition_and_policies() -> None:
    b = bind(cfg(), "acme", TAGS, source_stale={"rtu_1": 60.0, "rtu_2": None})
    assert set(b.alarms) >= {"casing_pressure@well_1/casing_pressure", "low_flow@well_2/flow",
                             "flow_dev@well_3/flow", "pump_fail@well_1/pump_running", "rtu_comms@rtu_1"}
    cp = b.alarms["casing_pressure@well_1/casing_pressure"]
    assert cp.policy.level_priorities == {Level.HI: Priority.HIGH, Level.HIHI: Priority.CRITICAL}
    assert cp.policy.site == "well_1" and cp.policy.unit == "psi" and cp.policy.max_shelve_us == 4 * 3600 * US
    assert cp.policy.timing[Priority.HIGH].reminder_us == 3600 * US
    assert cp.policy.timing[Priority.HIGH].escalate_us == 15 * 60 * US
    assert cp.policy.on_delay_us == 10 * US and cp.policy.chatter_count == 4
    assert b.alarms["flow_dev@well_3/flow"].inputs == {"pv": "well_3/flow", "sp": "well_3/flow_sp"}
    assert b.alarms["pump_fail@well_1/pump_running"].inputs == {"fb": "well_1/pump_running",
                                                                  "cmd": "well_1/pump_cmd"}
    assert ("flow_dev@well_1/flow", "sp") in b.by_tag["well_1/flow_sp"]
    groups = {g.group_id: g for g in b.suppressions}
    assert groups["pump_off@well_2"].members == ("low_flow@well_2/flow",)
    assert groups["pump_off@well_2"].condition_tag == "well_2/pump_running"
    assert b.alarms["low_flow@well_2/flow"].policy.sbd_grace_us == 300 * US
    assert b.suppression_by_tag["well_1/pump_running"] == ("pump_off@well_1",)
    assert b.comm_loss == {"rtu_1": "rtu_comms@rtu_1", "rtu_2": "rtu_comms@rtu_2"}
    assert "low_flow@well_1/flow" in b.inhibits["rtu_comms@rtu_1"]
    assert "low_flow@well_3/flow" in b.inhibits["rtu_comms@rtu_2"]
    assert all(not a.endswith("@rtu_1") for a in b.inhibits["rtu_comms@rtu_1"])
    assert isinstance(b.alarms["casing_pressure@well_1/casing_pressure"].new_evaluator(T0), LimitEvaluator)
    comm = b.alarms["rtu_comms@rtu_1"].new_evaluator(T0)
    assert isinstance(comm, CommLossEvaluator) and comm.stale_us == 300 * US
    assert b.unresolved == ()
    assert groups["pump_off@well_1"].decide(0.0, True, False) is True
    assert groups["pump_off@well_1"].decide(0.0, False, True) is True  # bad quality: hold


def test_bind_reports_missing_companion_tags_and_other_tenants_see_global_rules() -> None:
    tags = {"well_9/flow": TagInfo(), "well_9/casing_pressure": TagInfo()}
    b = bind(cfg(), "other", tags)
    assert "casing_pressure@well_9/casing_pressure" in b.alarms
    assert any("companion tag 'well_9/flow_sp' does not exist" in u for u in b.unresolved)
    assert any("condition tag 'well_9/pump_running' does not exist" in u for u in b.unresolved)
    assert b.alarms["casing_pressure@well_9/casing_pressure"].policy.timing == {}  # no route for tenant "other"


def test_s55_hot_reload_only_changes_fingerprints_of_changed_alarms() -> None:
    before = bind(cfg(), "acme", TAGS)
    again = bind(cfg(), "acme", TAGS)
    assert {k: v.fingerprint for k, v in before.alarms.items()} == {k: v.fingerprint for k, v in again.alarms.items()}
    after = bind(cfg(SAMPLE.replace("setpoint = 1400", "setpoint = 1410")), "acme", TAGS)
    changed = {k for k in before.alarms if before.alarms[k].fingerprint != after.alarms[k].fingerprint}
    assert changed == {f"casing_pressure@well_{n}/casing_pressure" for n in (1, 2, 3)}


def test_system_binding() -> None:
    b = system_binding(cfg(), "acme", "notify:oncall", "Teams channel 'oncall' failed")
    assert b.alarm_id == "system@notify:oncall" and b.policy.priority is Priority.HIGH
    assert b.new_evaluator(T0) is None and b.policy.timing[Priority.HIGH].reminder_us == 3600 * US


def test_disabled_alarms_config_binds_nothing() -> None:
    c = cfg("enabled = false\n" + SAMPLE)
    assert bind(c, "acme", TAGS).alarms == {}
    ev = bind(cfg(), "acme", TAGS).alarms["low_flow@well_1/flow"].new_evaluator(T0)
    assert ev is not None and not isinstance(ev, CommLossEvaluator)
    assert [c.active for c in ev.update("pv", Sample(T0, 5.0), T0)] == []  # on-delay 1 min pending
    assert ev.next_deadline() == T0 + 60 * US


def test_errors_through_the_core_loader_have_alarms_key_paths() -> None:
    from ingestd.config.load import parse_config
    from ingestd.errors import ConfigError
    from ingestd.ports import AdapterRegistry

    data = {"tenants": [{"slug": "acme", "dsn": "env:DSN"}],
            "alarms": {"routes": [{"name": "r", "webhook": "https://x.webhook.office.com/webhookb2/zzz"}],
                       "rules": [{"name": "a", "kind": "limit", "tags": ["t"], "hi": {"setpoint": "high"}}]}}
    with pytest.raises(ConfigError) as ei:
        parse_config(data, AdapterRegistry([]))
    msgs = [str(p) for p in ei.value.problems]
    assert any(m.startswith("alarms.routes[0].webhook: this is a retired Office 365 connector") for m in msgs), msgs
    assert any(m.startswith("alarms.rules[0].hi.setpoint:") for m in msgs), msgs
    assert all("zzz" not in m for m in msgs)
    ok = parse_config({"tenants": [{"slug": "acme", "dsn": "env:DSN"}], "alarms": {}}, AdapterRegistry([]))
    assert ok.alarms == AlarmsConfig()


def test_rule_kinds_constant_matches_the_union() -> None:
    from typing import get_args

    from alarms.config_rules import RULE_KINDS, Rule

    union = get_args(Rule)[0]
    assert {get_args(m.model_fields["kind"].annotation)[0] for m in get_args(union)} == set(RULE_KINDS)
