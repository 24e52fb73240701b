"""``ingestd demo`` / ``make demo``: everything on one machine, nothing installed system-wide.

Starts, as children of this process: PostgreSQL (+ TimescaleDB) and Mosquitto in the work directory
(:mod:`ingestd.sim.services`), the simulated well field on every protocol whose adapter is registered
(``python -m simulator``), and ``ingestd run`` with the query API and /metrics; prints the URLs, a demo
API token and a sample query. Ctrl-C (or SIGTERM) stops them in order — ingestd first, so it flushes —
and every child also gets a parent-death signal, so no server outlives the demo.

``--duration N`` is the CI form: run N seconds, check that every source delivered readings, that they
were committed and that the API answers with the demo token, stop, exit 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from adapters.registry import REGISTRY
from alarms.config import AlarmsConfig

from .config.load import load_config
from .errors import ConfigError
from .reload import config_problems
from .sim.democonfig import TENANT, DemoPorts, demo_config
from .sim.layout import PROTOCOL_ORDER, Layout
from .sim.services import LocalMosquitto, LocalPostgres, ServiceError, free_port, spawn

__all__ = ["run_demo"]


class DemoFailed(RuntimeError):
    pass


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir).resolve()
        self.pg: LocalPostgres | None = None
        self.broker: LocalMosquitto | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.runtime: dict[str, Any] = {}
        self.protocols = [p for p in PROTOCOL_ORDER if p in REGISTRY]

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        self.ports = DemoPorts(postgres=free_port(), mqtt=free_port(1883), modbus=free_port(5020),
                               opcua=free_port(4840), api=free_port(self.args.api_port),
                               metrics=free_port(self.args.metrics_port))
        _say(f"ingestd demo — work directory {w}")
        self.pg = LocalPostgres(w / "pg", self.ports.postgres)
        edition = "PostgreSQL + TimescaleDB" if self.pg.timescaledb else "PostgreSQL (no TimescaleDB found)"
        _say(f"  {edition} on 127.0.0.1:{self.ports.postgres} (data in {self.pg.root})")
        self.pg.start()
        self.pg.ensure_database(TENANT)
        self.broker = LocalMosquitto(w / "mosquitto", self.ports.mqtt)
        self.broker.start()
        _say(f"  Mosquitto on 127.0.0.1:{self.ports.mqtt}")
        self.token = self._token()
        config = self._write_config()
        self._start_simulator()
        self._start_ingestd(config)
        (w / "demo.json").write_text(json.dumps({
            "pids": {"postgres": self.pg.proc.pid if self.pg.proc else None,
                     "mosquitto": self.broker.proc.pid if self.broker.proc else None,
                     **{name: p.pid for name, p in self.children.items()}},
            "ports": self.ports.__dict__, "api_port": self.runtime.get("api_port"),
            "metrics_port": self.runtime.get("metrics_port"), "protocols": self.protocols}))

    def _token(self) -> str:
        path = self.workdir / "api_token"
        if path.exists():
            return path.read_text().strip()
        token = f"igd_{TENANT}_{secrets.token_urlsafe(32)}"
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return token

    def _write_config(self) -> Path:
        path = self.workdir / "ingestd.toml"
        alarms = {"rules", "suppression_groups"} <= set(AlarmsConfig.model_fields)
        for with_alarms in ([True, False] if alarms else [False]):
            path.write_text(demo_config(workdir=str(self.workdir), ports=self.ports, protocols=self.protocols,
                                        wells=self.args.wells, token=self.token, alarms=with_alarms))
            try:
                cfg = load_config(path, REGISTRY)
                problems = config_problems(cfg)
                if problems:
                    raise ConfigError(problems, file=str(path))
            except ConfigError as exc:
                if with_alarms:
                    _say(f"  (alarm rules left out: this build's [alarms] section rejects them: {exc.problems[0]})")
                    continue
                raise DemoFailed(f"the generated demo configuration is invalid (a bug):\n{exc}") from None
            return path
        raise DemoFailed("no valid demo configuration")

    def _start_simulator(self) -> None:
        layout = Layout.of(self.args.wells, self.protocols)
        spread = ", ".join(f"{p} {ws[0]}-{ws[-1]}" for p in layout.protocols if (ws := layout.wells_of(p)))
        _say(f"  simulated field: {self.args.wells} wells — {spread}")
        ready = self.workdir / "simulator.json"
        ready.unlink(missing_ok=True)
        # the child runs in the work directory: point it at the simulator package found from here (an
        # installed one, or the source checkout's when the editable install predates the package)
        spec = importlib.util.find_spec("simulator")
        home = Path(spec.origin).parents[1] if spec and spec.origin else Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONFAULTHANDLER": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(home), os.environ.get("PYTHONPATH")) if p)}
        argv = [sys.executable, "-m", "simulator", "--wells", str(self.args.wells), "--seed", str(self.args.seed),
                "--protocols", ",".join(self.protocols), "--mqtt-port", str(self.ports.mqtt),
                "--modbus-port", str(self.ports.modbus), "--opcua-port", str(self.ports.opcua),
                "--ready-file", str(ready)]
        proc = self.children["simulator"] = spawn(argv, self.workdir / "simulator.log", env=env, cwd=self.workdir)
        self._wait_for(lambda: ready.exists(), proc, "the simulator", self.workdir / "simulator.log")

    def _start_ingestd(self, config: Path) -> None:
        _say(f"  ingestd (log: {self.workdir / 'ingestd.log'})")
        runtime = self.workdir / "state" / "runtime.json"
        runtime.unlink(missing_ok=True)
        proc = self.children["ingestd"] = spawn([sys.executable, "-m", "ingestd", "run", "-c", str(config)],
                                                self.workdir / "ingestd.log", cwd=self.workdir,
                                                env={**os.environ, "PYTHONFAULTHANDLER": "1"})

        def up() -> bool:
            with contextlib.suppress(OSError, ValueError):
                self.runtime = json.loads(runtime.read_text())
            return self.runtime.get("pid") == proc.pid

        self._wait_for(up, proc, "ingestd", self.workdir / "ingestd.log")

    @staticmethod
    def _wait_for(cond: Any, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise DemoFailed(f"{what} exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"{what} did not start within {timeout:g}s (see {log})")
            time.sleep(0.1)  # readiness polling of a child process

    # ------------------------------------------------------------------ running
    def banner(self) -> None:
        api, metrics = self.runtime.get("api_port"), self.runtime.get("metrics_port")
        token_file = self.workdir / "api_token"
        rel = token_file.relative_to(Path.cwd()) if token_file.is_relative_to(Path.cwd()) else token_file
        _say("\nReady.")
        if api:
            _say(f"  query API   http://127.0.0.1:{api}   (OpenAPI: http://127.0.0.1:{api}/openapi.json)")
        else:
            _say("  query API   not running in this build")
        _say(f"  metrics     http://127.0.0.1:{metrics}/metrics")
        _say(f"  API token   {self.token}   (tenant '{TENANT}', also in {rel})")
        if api:
            _say("  try:")
            _say(f'    curl -s -H "Authorization: Bearer $(cat {rel})" '
                 f'"http://127.0.0.1:{api}/v1/tenants/{TENANT}/latest?match=well_07.*"')
        assert self.pg is not None
        _say(f"  database    psql {self.pg.dsn(TENANT)}")
        _say(f"  config      {self.workdir / 'ingestd.toml'}")
        _say("Ctrl-C stops everything." if self.args.duration is None
             else f"Running for {self.args.duration:g}s, then checking that data arrived.")

    def wait(self) -> None:
        deadline = None if self.args.duration is None else time.monotonic() + self.args.duration
        while deadline is None or time.monotonic() < deadline:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    raise DemoFailed(f"{name} exited unexpectedly with {proc.returncode} (see {name}.log)")
            for name, svc in (("PostgreSQL", self.pg), ("Mosquitto", self.broker)):
                if svc is not None and svc.proc is not None and svc.proc.poll() is not None:
                    raise DemoFailed(f"{name} exited unexpectedly")
            time.sleep(0.2)  # supervising children; Ctrl-C interrupts at once

    def check(self) -> list[str]:
        """After ``--duration``: every source delivered, rows are committed, the API answers the token."""
        problems = []
        metrics = self._http(f"http://127.0.0.1:{self.runtime['metrics_port']}/metrics")
        for proto in self.protocols:
            src = f"field-{proto}"
            got = sum(float(m.group(1)) for m in re.finditer(
                rf'^ingestd_points_received_total\{{[^}}]*source="{src}"[^}}]*\}} (\S+)$', metrics, re.M))
            _say(f"  {src:16s} {int(got):7d} readings received")
            if got <= 0:
                problems.append(f"source {src} delivered no readings")
        assert self.pg is not None
        rows = int(self.pg.psql("SELECT count(*) FROM readings", TENANT) or 0)
        _say(f"  committed to the database: {rows} readings")
        if rows <= 0:
            problems.append("no readings were committed to the database")
        api = self.runtime.get("api_port")
        if api:
            try:
                body = json.loads(self._http(f"http://127.0.0.1:{api}/v1/tenants/{TENANT}/latest?match=well_*",
                                             token=self.token))
                _say(f"  API /latest answered with {len(body.get('items', []))} live values")
                if not body.get("items"):
                    problems.append("the API returned no live values")
            except (OSError, ValueError) as exc:
                problems.append(f"the API did not answer: {exc}")
        return problems

    @staticmethod
    def _http(url: str, token: str | None = None) -> str:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (local http URL built here)
            return str(r.read().decode())

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """ingestd first (it flushes its inboxes), then the field, the broker, the database."""
        for name in ("ingestd", "simulator"):
            proc = self.children.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(45 if name == "ingestd" else 10)
                except subprocess.TimeoutExpired:
                    print(f"demo: {name} did not stop in time; its stack trace is in {name}.log", file=sys.stderr)
                    proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dump where it hangs
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                    proc.kill()
                    proc.wait(10)
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            self.pg.stop()


def run_demo(args: argparse.Namespace) -> int:
    if args.wells < 1:
        print("demo: --wells must be at least 1", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    demo = Demo(args)
    code = 0
    try:
        demo.start()
        demo.banner()
        demo.wait()
        if args.duration is not None:
            _say("\nChecking:")
            problems = demo.check()
            for p in problems:
                _say(f"  FAILED: {p}")
            code = 1 if problems else 0
    except KeyboardInterrupt:
        _say("\nstopping…")
    except (DemoFailed, ServiceError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            demo.stop()
        signal.signal(signal.SIGTERM, previous)
    _say("demo stopped." if code == 0 else "demo stopped (with errors).")
    return code
