"""``pip install .`` gives a working ``ingestd`` command: build the wheel from a copy of the tree, install
it into a fresh virtualenv and run it from there (its dependencies borrowed from this .venv)."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.daemon import ROOT

PACKAGES = ("ingestd", "adapters", "alarms", "schema", "simulator")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy: an in-tree build would write build/ and *.egg-info into the checkout."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    (whl,) = (tmp / "dist").glob("ingestd-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Path:
    env = wheel.parent.parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=120, capture_output=True)
    # dependencies come from this .venv, appended after the venv's own site-packages: a plain path
    # entry, so the checkout's editable-install hook (a .pth with an import) is not run
    (purelib,) = (env / "lib").glob("python3*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env


def test_wheel_carries_schema_samples_and_the_simulator(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (ROOT / "schema").glob("*.sql"):
        assert f"schema/{sql.name}" in names, sql.name
    for extra in list((ROOT / "adapters").glob("*/sample.toml")) + list((ROOT / "adapters").glob("*/README.md")):
        assert extra.relative_to(ROOT).as_posix() in names, extra
    assert {"simulator/__main__.py", "ingestd/py.typed", "ingestd/sim/layout.py"} <= names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_command_reports_its_version_and_runs(venv: Path, tmp_path: Path) -> None:
    from importlib.metadata import version

    r = subprocess.run([str(venv / "bin" / "ingestd"), "--version"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ingestd {version('ingestd')}" and "unknown" not in r.stdout
    probe = ("import ingestd, schema, simulator; from importlib import resources; "
             "print(ingestd.__file__); print(simulator.__file__); "
             "print(sorted(p.name for p in resources.files('schema').iterdir() if p.name.endswith('.sql')))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60, check=True)
    ingestd_file, simulator_file, sql = r.stdout.splitlines()
    assert ingestd_file.startswith(str(venv)) and simulator_file.startswith(str(venv)), "imported from the wheel"
    assert sql == str(sorted(p.name for p in (ROOT / "schema").glob("*.sql")))
    r = subprocess.run([str(venv / "bin" / "ingestd"), "check-config", str(ROOT / "config" / "example.toml")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
