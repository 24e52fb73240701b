"""Config: every error at once with its key path; summaries; secrets never in messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.registry import REGISTRY
from ingestd.config.load import load_config, parse_config, warnings
from ingestd.config.types import Secret, SecretUnavailable, parse_bytes, parse_duration
from ingestd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def base(**over: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "tenants": [{"slug": "acme", "dsn": "env:ACME_DSN"}],
        "sources": [{
            "name": "mq", "protocol": "mqtt",
            "subscriptions": [{"topic": "{tenant}/wells/{well}/{tag}", "tenant": "{tenant}", "tag": "{well}.{tag}"}],
        }],
    }
    cfg.update(over)
    return cfg


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, REGISTRY)
    return [str(p) for p in ei.value.problems]


def test_valid_config_parses_into_frozen_models() -> None:
    cfg = parse_config(base(), REGISTRY)
    assert cfg.tenants[0].slug == "acme"
    assert cfg.pipeline.batch_max_rows == 5000
    assert cfg.pipeline.batch_max_age == 0.25
    with pytest.raises(Exception, match="frozen"):
        cfg.tenants[0].slug = "x"  # type: ignore[misc]


def test_every_error_is_reported_with_its_key_path() -> None:
    data = base(
        tenants=[{"slug": "Acme!", "dsn": "env:X"}, {"slug": "b", "dsn": "env:Y", "retention": {"raw": "ninety"}}],
        sources=[
            {"name": "a", "protocol": "mqtt", "tenant": "b", "subscriptions": [{"topic": "x/{a}", "tag": "{b}"}]},
            {"name": "c", "protocol": "bogus"},
            {"name": "d", "protocol": "mqtt", "tenant": "b", "subscriptions": [{"topic": "t/{tag}"}],
             "tags": [{"name": "t1", "deadband": -1}], "colour": "red"},
        ],
        pipeline={"batch_max_age": "soon"},
    )
    got = problems(data)
    expect_prefixes = [
        "pipeline.batch_max_age: 'soon' is not a duration",
        "tenants[0].slug: 'Acme!' is not a valid tenant slug",
        "tenants[1].retention.raw: 'ninety' is not a duration",
        "sources[0].subscriptions[0]: tag template '{b}' uses ['b']",
        "sources[1].protocol: unknown protocol 'bogus'",
        "sources[2].tags[0].deadband: -1: input should be greater than or equal to 0",
        "sources[2].colour: unknown key",
    ]
    for prefix in expect_prefixes:
        assert any(g.startswith(prefix) for g in got), (prefix, got)
    assert len(got) == len(expect_prefixes), got


def test_cross_checks_unknown_tenant_and_duplicates() -> None:
    data = base(
        tenants=[{"slug": "a", "dsn": "env:A"}, {"slug": "b", "dsn": "env:B"}],
        sources=[
            {"name": "s", "protocol": "mqtt", "tenant": "zz", "subscriptions": [{"topic": "t/{tag}"}]},
            {"name": "s", "protocol": "mqtt", "subscriptions": [{"topic": "t/{tag}"}]},
            {"name": "u", "protocol": "mqtt", "tenant": "a", "subscriptions": [{"topic": "u/{tag}"}],
             "tags": [{"name": "x"}, {"name": "x"}]},
        ],
    )
    got = problems(data)
    assert "sources[0].tenant: unknown tenant 'zz'" in got
    assert "sources[1].name: duplicate source name 's'" in got
    assert "sources[1].tenant: required when several tenants are configured" in got
    assert "sources[2].tags[1].name: tag 'x' is already defined at sources[2].tags[0]" in got


def test_secret_values_never_appear_in_errors_or_reprs() -> None:
    pw = "s3cr3t-PASSWORD"
    data = base(tenants=[{"slug": "acme", "dsn": f"postgresql://u:{pw}@db/x", "pool": {"max_size": 0}}])
    msg = "\n".join(problems(data))
    assert "tenants[0].pool.max_size" in msg
    assert pw not in msg
    cfg = parse_config(base(tenants=[{"slug": "acme", "dsn": f"postgresql://u:{pw}@db/x"}]), REGISTRY)
    assert pw not in repr(cfg)
    assert pw not in str(cfg.model_dump())
    assert cfg.tenants[0].dsn.reveal().endswith("@db/x")
    assert any("secret is written inline" in str(w) for w in warnings(cfg))


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTD_T_DSN", "postgresql://x")
    assert Secret("env:INGESTD_T_DSN").reveal() == "postgresql://x"
    f = tmp_path / "dsn"
    f.write_text("postgresql://file\n")
    assert Secret(f"file:{f}").reveal() == "postgresql://file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert Secret("credential:dsn").reveal() == "postgresql://file"
    with pytest.raises(SecretUnavailable, match="INGESTD_MISSING is not set"):
        Secret("env:INGESTD_MISSING").reveal()


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("5s", 5), ("10m", 600), ("2h", 7200),
                                                ("90d", 90 * 86400), (3, 3.0), ("1.5s", 1.5)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_sizes() -> None:
    assert parse_bytes("64MiB") == 64 * 1024 * 1024
    assert parse_bytes("2GB") == 2_000_000_000
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[[tenants]\nslug = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p, REGISTRY)


def test_shipped_config_files_are_valid() -> None:
    files = sorted((ROOT / "config").glob("*.toml"))
    assert files, "config/*.toml must exist"
    for f in files:
        load_config(f, REGISTRY)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[tenants]]\nslug = "acme"\ndsn = "env:ACME_DSN"\n\n'
        '[[sources]]\nname = "mq"\nprotocol = "mqtt"\n'
        'subscriptions = [{ topic = "wells/{well}/{tag}", tag = "{well}.{tag}" }]\n'
        '[[sources.tags]]\nname = "w1.tp"\nunit = "psi"\n'
    )
    r = run_cli("check-config", str(good))
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert "mqtt" in r.stdout and "1 configured tag" in r.stdout
    assert "plain-text MQTT connection" in r.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('unit = "psi"', 'unit = "psi"\ndeadband = -2\nheartbeat = "x"'))
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "sources[0].tags[0].deadband" in r.stderr
    assert "sources[0].tags[0].heartbeat" in r.stderr


def test_version_comes_from_package_metadata() -> None:
    r = run_cli("--version")
    assert r.returncode == 0
    from importlib.metadata import version

    assert r.stdout.strip() == f"ingestd {version('ingestd')}"


def test_durability_warnings() -> None:
    cfg = parse_config(base(pipeline={"batch_max_age": "2s", "durability_deadline": "1s",
                                      "spool": {"fsync": "never"}}), REGISTRY)
    found = [str(w) for w in warnings(cfg)]
    assert any(w.startswith("pipeline.batch_max_age: 2s exceeds durability_deadline 1s") for w in found)
    assert any(w.startswith('pipeline.spool.fsync: "never"') for w in found)
    assert not any(w.startswith("pipeline.") for w in map(str, warnings(parse_config(base(), REGISTRY))))
