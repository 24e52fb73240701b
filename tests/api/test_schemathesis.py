"""CI fuzzing of the OpenAPI document with schemathesis (4.x pytest integration) against the real app.

The daemon runs in a background thread with its own event loop (the fuzzer's HTTP client is
synchronous); it has two tenants with data ingested over MQTT and a fake alarm engine. Every request
carries an admin token of tenant ``acme``; the ``tenant`` path parameter is pinned to ``acme`` so the
fuzzer reaches the real handlers (other tenants are covered by test_auth). Checks: no 5xx, documented
status codes, content types, headers and response schemas.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingestd.api.app import openapi_document
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer

from .fake_alarms import FakeAlarms
from .support import api_env

US = 1_000_000


@dataclass
class LiveApi:
    url: str
    token: str


@pytest.fixture(scope="module")
def live_api(pg_ts: PgServer, mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    acme = TenantDb("apache", pg_ts, pg_ts.create_database())
    beta = TenantDb("apache", pg_ts, pg_ts.create_database())
    state_dir = Path(tmp_path_factory.mktemp("state"))
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        fake = FakeAlarms()
        async with api_env(acme, beta, mosquitto, state_dir, alarm_service=fake) as env:
            t0 = int(time.time() * US) - 3600 * US
            await env.ingest("acme", "w1", ["p", "q"], 200, start_us=t0)
            fake.raise_alarm("acme", "hi@w1.p")
            stop = asyncio.Event()
            box.update(loop=asyncio.get_running_loop(), stop=stop, url=env.base, token=env.tokens["acme_admin"])
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="ingestd-under-fuzz", daemon=True)
    thread.start()
    assert ready.wait(90), "daemon did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield LiveApi(box["url"], box["token"])
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)
        for db in (acme, beta):
            pg_ts.drop_database(db.name)
    if "error" in box:
        raise box["error"]


schema = schemathesis.openapi.from_dict(openapi_document(), config=schemathesis.Config.from_dict({
    "parameters": {"tenant": "acme"},
    "generation": {"max-examples": 60},
}))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: Any, live_api: LiveApi) -> None:
    case.call_and_validate(base_url=live_api.url, headers={"Authorization": f"Bearer {live_api.token}"},
                           checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_headers_conformance, response_schema_conformance])
