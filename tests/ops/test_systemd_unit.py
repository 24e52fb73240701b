"""The systemd unit, sysusers and tmpfiles snippets: verified by systemd's own tools, hardened, and
consistent with what the daemon does (state directory, exit codes, stop timeout)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ingestd.config.model import DaemonConfig
from ingestd.config.types import parse_duration
from tests.support.daemon import ROOT

UNIT = ROOT / "systemd" / "ingestd.service"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` → every value (systemd keys may repeat)."""
    out: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[f"{section}.{key.strip()}"].append(value.strip())
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verify_script_passes_and_exposure_is_low() -> None:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "verify-systemd.sh")], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Overall exposure level for ingestd.service: (\d+\.\d+) (\w+)", r.stdout)
    assert m is not None, r.stdout
    assert float(m.group(1)) <= 2.0 and m.group(2) == "OK", m.group(0)


def test_unit_is_a_hardened_notify_service() -> None:
    s = unit_settings(UNIT)

    def one(key: str) -> str:
        values = s[f"Service.{key}"]
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("ExecStart").startswith("/opt/ingestd/bin/ingestd run --config /etc/ingestd/")
    assert one("Restart") == "on-failure" and one("RestartPreventExitStatus") == "2"
    assert 10 <= parse_duration(one("WatchdogSec").removesuffix("s")) <= 120
    assert parse_duration(one("TimeoutStopSec").removesuffix("s")) > DaemonConfig().shutdown_timeout + 10
    assert one("User") == one("Group") == "ingestd"
    assert one("StateDirectory") == "ingestd" and DaemonConfig().state_dir == "/var/lib/ingestd"
    assert one("ConfigurationDirectory") == "ingestd"
    assert one("LoadCredential") == "ingestd:/etc/ingestd/credentials"
    assert one("UMask") == "0077" and one("CapabilityBoundingSet") == ""
    assert one("RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"
    assert one("SystemCallArchitectures") == "native"
    assert s["Service.SystemCallFilter"][0] == "@system-service"
    assert re.fullmatch(r"\d+[KMG]", one("MemoryMax"))
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "LockPersonality",
                "RestrictRealtime", "RestrictNamespaces", "RestrictSUIDSGID", "MemoryDenyWriteExecute"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert s["Install.WantedBy"] == ["multi-user.target"]


def test_sysusers_and_tmpfiles_match_the_unit() -> None:
    users = [line.split() for line in (ROOT / "systemd/sysusers.d/ingestd.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert users[0][:2] == ["u", "ingestd"]
    tmpfiles = (ROOT / "systemd/tmpfiles.d/ingestd.conf").read_text()
    assert re.search(r"^d\s+/etc/ingestd/credentials\s+0700\s+root\s+root", tmpfiles, re.M)


def test_invalid_configuration_exits_with_status_2(tmp_path: Path) -> None:
    """RestartPreventExitStatus=2 relies on this: a broken config file must not restart-loop."""
    bad = tmp_path / "ingestd.toml"
    bad.write_text('[[tenants]]\nslug = "Bad Slug"\ndsn = "env:X"\n')
    r = subprocess.run([sys.executable, "-m", "ingestd", "run", "-c", str(bad)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 2
    assert "tenants[0].slug" in r.stderr
