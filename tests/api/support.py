"""Helpers for query API tests: a daemon with two tenants, MQTT sources, API tokens, an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
import psycopg

from ingestd.api.server import ApiExtension
from ingestd.auth import hash_token, new_token
from ingestd.daemon import Daemon
from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.mosquitto import Mosquitto
from tests.support.wait import eventually

__all__ = ["ApiEnv", "api_env", "mqtt_source", "publish", "token_set"]

SCOPES = {"read": ["read"], "ack": ["ack"], "admin": ["admin"]}


def token_set(tenants: list[str]) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Tokens ``<tenant>_<scope>`` for each tenant and scope; and each tenant's api_tokens config."""
    tokens: dict[str, str] = {}
    conf: dict[str, list[dict[str, Any]]] = {}
    for t in tenants:
        conf[t] = []
        for scope, scopes in SCOPES.items():
            tok = new_token(t)
            tokens[f"{t}_{scope}"] = tok
            conf[t].append({"name": f"{t}-{scope}", "hash": hash_token(tok), "scopes": scopes})
    return tokens, conf


def mqtt_source(broker: Mosquitto, name: str, tenant: str, prefix: str) -> dict[str, Any]:
    """One MQTT source for ``tenant``: topic ``<prefix>/<tenant>/<well>`` carrying ``{"items": [...]}``."""
    return {
        "name": name, "protocol": "mqtt", "tenant": tenant,
        "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}-{name}"},
        "subscriptions": [{"topic": f"{prefix}/{tenant}/{{well}}", "tag": "{well}.{key}", "items_path": "items",
                           "key_path": "tag", "value_path": "value", "timestamp_path": "ts",
                           "timestamp_unit": "us", "quality_path": "quality"}],
    }


async def publish(broker: Mosquitto, messages: list[tuple[str, object]], qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        for topic, payload in messages:
            await c.publish(topic, orjson.dumps(payload), qos=qos)


@dataclass
class ApiEnv:
    daemon: Daemon
    tokens: dict[str, str]
    dbs: dict[str, TenantDb]
    broker: Mosquitto
    prefix: str
    ext: ApiExtension
    cfg: dict[str, Any]
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.api_port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.daemon.api_port}"

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        h = dict(headers)
        if token is not None:
            h["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        c = httpx.AsyncClient(base_url=self.base, headers=h, timeout=30)
        self.clients.append(c)
        return c

    async def send(self, tenant: str, well: str, items: list[dict[str, Any]]) -> None:
        await publish(self.broker, [(f"{self.prefix}/{tenant}/{well}", {"items": items})])

    async def ingest(self, tenant: str, well: str, tags: list[str], n: int, *, start_us: int | None = None,
                     step_us: int = 1_000_000, batch: int = 500) -> int:
        """Publish ``n`` points per tag (GOOD, value = index) and wait until they are in the database."""
        start = start_us if start_us is not None else int(time.time() * 1e6) - n * step_us
        before = await self.count(tenant)
        items = [{"tag": t, "ts": start + i * step_us, "value": float(i)} for i in range(n) for t in tags]
        msgs = [(f"{self.prefix}/{tenant}/{well}", {"items": items[i: i + batch]}) for i in range(0, len(items), batch)]
        await publish(self.broker, msgs)
        await self.wait_rows(tenant, before + len(items))
        return len(items)

    async def query(self, tenant: str, sql: str) -> list[tuple[Any, ...]]:
        """SQL on a tenant database from a worker thread (a blocking call must not stall the daemon's loop)."""
        return await asyncio.to_thread(self.dbs[tenant].query, sql)

    async def count(self, tenant: str) -> int:
        try:
            rows = await self.query(tenant, "SELECT count(*) FROM readings")
        except psycopg.errors.UndefinedTable:
            return 0
        return int(rows[0][0])

    async def wait_rows(self, tenant: str, n: int, timeout: float = 20.0) -> None:
        async def enough() -> bool:
            return await self.count(tenant) >= n

        await eventually(enough, timeout=timeout, what=f"{n} rows in {tenant}")


@contextlib.asynccontextmanager
async def api_env(acme: TenantDb, beta: TenantDb, broker: Mosquitto, state_dir: Path,
                  api: Mapping[str, Any] | None = None, alarm_service: object | None = None,
                  beta_dsn: str | None = None, **ext: Any) -> AsyncIterator[ApiEnv]:
    prefix = f"p{uuid.uuid4().hex[:6]}"
    tokens, conf = token_set(["acme", "beta"])
    cfg = make_config(
        state_dir=state_dir,
        tenants=[{"slug": "acme", "dsn": acme.dsn, "api_tokens": conf["acme"]},
                 {"slug": "beta", "dsn": beta_dsn or beta.dsn, "api_tokens": conf["beta"],
                  "pool": {"connect_timeout": "1s"}}],
        sources=[mqtt_source(broker, "field_acme", "acme", prefix), mqtt_source(broker, "field_beta", "beta", prefix)],
    )
    cfg["api"] = {"listen": "127.0.0.1:0", "public_url": "https://api.example.com",
                  "link_secret": "0123456789abcdef0123456789abcdef", **(api or {})}
    extension = ApiExtension(**ext)
    async with running_daemon(cfg, extensions=[extension], wait_sources=beta_dsn is None) as d:
        if alarm_service is not None:
            d.alarm_service = alarm_service  # type: ignore[attr-defined]
        env = ApiEnv(d, tokens, {"acme": acme, "beta": beta}, broker, prefix, extension, cfg)
        await eventually(lambda: all(tp.db_healthy for tp in d.tenants.values()
                                     if beta_dsn is None or tp.slug == "acme"), what="tenant databases up")
        try:
            yield env
        finally:
            for c in env.clients:
                await c.aclose()
