"""Helpers of the alarm engine tests: a real daemon with the alarm engine, an MQTT source, the local Teams
server, and readers of the tenant database's alarm tables."""

from __future__ import annotations

import contextlib
import time

# tests/support starts servers with log files it never closes; when the garbage collector finalises one while
# pytest's unraisable hook imports tracemalloc for the first time, that import is circular and the test errors
# at random (see tests/ops/conftest.py). Importing tracemalloc first removes the race.
import tracemalloc  # noqa: F401
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
import psycopg

from alarms.engine import AlarmExtension
from alarms.service import EngineService
from alarms.tenant import TenantAlarms
from ingestd.daemon import Daemon
from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.mosquitto import Mosquitto
from tests.support.wait import eventually

from .teams_server import FakeTeams, Recorded

__all__ = ["LINK_SECRET", "PUBLIC_URL", "AlarmEnv", "alarm_env", "cards", "limit_rule", "route"]

PUBLIC_URL = "https://ingestd.example.com"
LINK_SECRET = "0123456789abcdef0123456789abcdef"


def limit_rule(name: str = "casing", tags: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "kind": "limit", "tags": tags or ["w1.casing_pressure"],
                            "priority": "high", "hi": {"setpoint": 100.0, "deadband": 5.0}}
    rule.update(kw)
    return rule


def route(name: str, webhook: str, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "tenant": "acme", "webhook": webhook, "group_wait": "0s",
                         "group_interval": "1s", "retry_deadline": "20s"}
    r.update(kw)
    return r


def mqtt_source(broker: Mosquitto, prefix: str) -> dict[str, Any]:
    return {
        "name": "field", "protocol": "mqtt", "backoff_initial": "0.2s", "backoff_max": "1s", "breaker_reset": "1s",
        "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}"},
        "subscriptions": [{"topic": f"{prefix}/acme/wells/{{well}}/{{tag}}", "tenant": "acme",
                           "tag": "{well}.{tag}"}],
    }


def cards(teams: FakeTeams) -> list[dict[str, Any]]:
    """The Adaptive Cards received so far (every body validated by the fake Teams endpoint)."""
    out = []
    for r in teams.requests:
        assert r.errors == [], r.errors
        out.append(r.json["attachments"][0]["content"])
    return out


def card_text(card: Mapping[str, Any]) -> str:
    return orjson.dumps(card).decode()


@dataclass
class AlarmEnv:
    daemon: Daemon
    ext: AlarmExtension
    db: TenantDb
    broker: Mosquitto
    prefix: str
    teams: dict[str, FakeTeams]
    cfg: dict[str, Any]
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def service(self) -> EngineService:
        svc = self.ext.service
        assert svc is not None
        return svc

    @property
    def rt(self) -> TenantAlarms:
        return self.ext.tenant("acme")

    async def publish(self, tag: str, value: float | None, *, well: str = "w1") -> None:
        """One reading now (timestamps strictly increase between calls)."""
        self.ts_ms = max(self.ts_ms + 1, int(time.time() * 1000))
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
            await c.publish(f"{self.prefix}/acme/wells/{well}/{tag}", orjson.dumps({"ts": self.ts_ms, "value": value}),
                            qos=1)

    async def publish_many(self, readings: list[tuple[str, str, float | None]]) -> None:
        """Several readings (well, tag, value) over one connection, in order."""
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
            for well, tag, value in readings:
                self.ts_ms = max(self.ts_ms + 1, int(time.time() * 1000))
                await c.publish(f"{self.prefix}/acme/wells/{well}/{tag}",
                                orjson.dumps({"ts": self.ts_ms, "value": value}), qos=1)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self.db.query(sql)
        except psycopg.errors.UndefinedTable:
            return []

    def journal(self, alarm_id: str | None = None) -> list[tuple[Any, ...]]:
        """(alarm_id, seq, kind, to_state) in write order."""
        where = f" WHERE alarm_id = '{alarm_id}'" if alarm_id else ""
        return self.query(f"SELECT alarm_id, seq, kind, to_state FROM alarm_journal{where} ORDER BY id")

    def kinds(self, alarm_id: str) -> list[str]:
        return [r[2] for r in self.journal(alarm_id)]

    def outbox(self) -> list[tuple[Any, ...]]:
        """(alarm_id, seq, kind, status, route, dedup_key) in id order."""
        return self.query("SELECT alarm_id, seq, kind, status, route, dedup_key FROM notification_outbox ORDER BY id")

    async def wait(self, pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        return await eventually(pred, timeout=timeout, what=what)

    async def wait_journal(self, alarm_id: str, kind: str, n: int = 1, timeout: float = 20.0) -> None:
        await self.wait(lambda: self.kinds(alarm_id).count(kind) >= n, f"{n} {kind} of {alarm_id} journaled",
                        timeout)

    async def settled(self, timeout: float = 20.0) -> None:
        """Nothing left to send: the outbox holds no pending row and the sender is idle."""
        def done() -> bool:
            rt = self.rt
            return (not rt.sender.busy and rt.core.buffer.empty
                    and not any(r[3] == "pending" for r in self.outbox()))
        await self.wait(done, "notifications settled", timeout)


@contextlib.asynccontextmanager
async def alarm_env(db: TenantDb, broker: Mosquitto, state_dir: Any, *, rules: list[dict[str, Any]],
                    routes: Callable[[dict[str, FakeTeams]], list[dict[str, Any]]] | None = None,
                    teams: tuple[str, ...] = ("oncall",), alarms: Mapping[str, Any] | None = None,
                    prefix: str | None = None, servers: dict[str, FakeTeams] | None = None,
                    ext: AlarmExtension | None = None, tenant: Mapping[str, Any] | None = None,
                    api_listen: str | None = None, extra_extensions: list[Any] | None = None,
                    **sections: Any) -> AsyncIterator[AlarmEnv]:
    """A daemon with an MQTT source, the alarm engine and one fake Teams endpoint per name in ``teams``."""
    prefix = prefix or f"a{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as stack:
        if servers is None:
            servers = {}
            for name in teams:
                servers[name] = await stack.enter_async_context(FakeTeams())
        route_list = routes(servers) if routes else [route(n, s.url) for n, s in servers.items()]
        cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": db.dsn, **(tenant or {})}],
                          sources=[mqtt_source(broker, prefix)], **sections)
        cfg["api"] = {"public_url": PUBLIC_URL, "link_secret": LINK_SECRET}
        if api_listen is not None:
            cfg["api"]["listen"] = api_listen
        cfg["alarms"] = {"rules": rules, "routes": route_list, **(alarms or {})}
        extension = ext or AlarmExtension()
        async with running_daemon(cfg, extensions=[extension, *(extra_extensions or [])]) as d:
            env = AlarmEnv(d, extension, db, broker, prefix, servers, cfg)
            await eventually(lambda: extension.tenants["acme"].loaded.is_set(), what="alarm state loaded")
            yield env


async def wait_cards(teams: FakeTeams, n: int, timeout: float = 20.0) -> list[Recorded]:
    return await teams.wait_requests(n, timeout)


@dataclass
class ProxiedDb(TenantDb):
    """A tenant database reached through a :class:`~tests.alarms.proxy.CuttableProxy` (queries go direct)."""

    proxy_port: int = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.proxy_port}/{self.name}"
