"""config/example.toml: valid, and it writes out every key of every core section (DESIGN §2: each
documented key appears in config/)."""

from __future__ import annotations

import subprocess
import sys

from pydantic import BaseModel

from adapters.registry import REGISTRY
from ingestd.config.load import IngestdConfig, load_config
from ingestd.leases import needs_lease
from tests.support.daemon import ROOT

EXAMPLE = ROOT / "config" / "example.toml"


def unwritten(model: BaseModel, path: str) -> list[str]:
    """Keys of ``model`` (recursively) that the file leaves at their defaults instead of writing them."""
    missing = [f"{path}.{name}" for name in type(model).model_fields if name not in model.model_fields_set]
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            missing += unwritten(value, f"{path}.{name}")
    return missing


def test_example_is_valid_and_complete() -> None:
    cfg = load_config(EXAMPLE, REGISTRY)
    missing = [k for section in ("daemon", "pipeline", "api", "coordination")
               for k in unwritten(getattr(cfg, section), section)]
    missing += unwritten(cfg.tenants[0], "tenants[0]")
    missing += [k for k in unwritten(cfg.alarms, "alarms") if not k.startswith("alarms.defaults.chatter")]
    assert missing == [], f"document these keys in config/example.toml: {missing}"
    assert set(IngestdConfig.model_fields) <= {k for k in IngestdConfig.model_fields if k in cfg.model_fields_set}
    assert {s.protocol for s in cfg.sources} == set(REGISTRY.protocols()), "one example source per protocol"
    assert {s.name for s in cfg.sources if needs_lease(s, cfg.coordination)} == {"pad12-plc", "battery3-opcua"}


def test_check_config_accepts_the_example_without_its_secrets() -> None:
    r = subprocess.run([sys.executable, "-m", "ingestd", "check-config", str(EXAMPLE)], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert "leased through the coordination database: pad12-plc, battery3-opcua" in r.stdout
