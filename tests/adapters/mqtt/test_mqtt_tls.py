"""MQTT over TLS with a client certificate and username/password against a real Mosquitto."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from adapters.mqtt.config import MqttSourceConfig
from adapters.mqtt.source import MqttSource
from ingestd.errors import SourceAuthError, SourceUnavailable
from ingestd.testing import RecordingContext
from tests.adapters.mqtt.certs import Pki, make_pki
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Pki]]:
    pki = make_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "ingestd", "correct horse"], check=True)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {pwfile}\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\n"
    )
    b = Mosquitto(extra=extra, head="per_listener_settings true")
    b.start()
    b.tls_port = port  # type: ignore[attr-defined]
    yield b, pki
    b.close()


def cfg(port: int, pki: Pki, password: str) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate({
        "name": "tls", "protocol": "mqtt", "tenant": "t1",
        "connection": {"host": "127.0.0.1", "port": port, "username": "ingestd", "password": password,
                       "client_id": "ingestd-tls-test",
                       "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                               "key_file": str(pki.client_key)}},
        "subscriptions": [{"topic": "secure/{tag}"}],
    })


async def test_tls_with_client_certificate_and_password(tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, pki = tls_broker
    port = broker.tls_port  # type: ignore[attr-defined]
    ctx = RecordingContext.for_source(cfg(port, pki, "correct horse"))
    task = asyncio.create_task(MqttSource(ctx.config).run(ctx))  # type: ignore[arg-type]
    try:
        await ctx.wait_for(lambda c: any(e.kind == "up" for e in c.rec.status))
        tls = ssl.create_default_context(cafile=str(pki.ca))
        tls.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        async with aiomqtt.Client("127.0.0.1", port, username="ingestd", password="correct horse",
                                  tls_context=tls) as pub:
            await pub.publish("secure/pressure", b'{"value": 42.5}', qos=1)
        await ctx.wait_rows(1)
        assert ctx.values_by_tag() == {"pressure": [42.5]}
    finally:
        task.cancel()


async def test_wrong_password_is_an_auth_error(tls_broker: tuple[Mosquitto, Pki]) -> None:
    broker, pki = tls_broker
    ctx = RecordingContext.for_source(cfg(broker.tls_port, pki, "wrong"))  # type: ignore[attr-defined]
    with pytest.raises(SourceAuthError) as ei:
        await MqttSource(ctx.config).run(ctx)  # type: ignore[arg-type]
    assert "wrong" not in str(ei.value)


async def test_untrusted_broker_certificate_is_refused(tls_broker: tuple[Mosquitto, Pki], tmp_path: Path) -> None:
    broker, pki = tls_broker
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    c = cfg(broker.tls_port, pki, "correct horse")  # type: ignore[attr-defined]
    bad = c.model_copy(update={"connection": c.connection.model_copy(update={
        "tls": c.connection.tls.model_copy(update={"ca_file": str(other.ca)})})})  # type: ignore[union-attr]
    ctx = RecordingContext.for_source(bad)
    with pytest.raises(SourceUnavailable):
        await MqttSource(bad).run(ctx)


def test_sample_config_is_valid() -> None:
    import tomllib

    from adapters.registry import REGISTRY
    from ingestd.config.load import parse_config

    data = tomllib.loads((Path(__file__).resolve().parents[3] / "adapters/mqtt/sample.toml").read_text())
    data["tenants"] = [{"slug": "acme", "dsn": "env:X"}]
    cfg_ = parse_config(data, REGISTRY)
    assert cfg_.sources[0].protocol == "mqtt"
