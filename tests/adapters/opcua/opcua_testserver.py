"""A real asyncua OPC UA server for the adapter tests (bound to 127.0.0.1 on a free port).

It publishes ``n_tags`` Double variables ``Tag00..`` (string ids) in the namespace :data:`URI`, under
``Objects/Plant/Well<N>`` folders with EngineeringUnits, optional extra namespaces registered first
(so :data:`URI` gets another index), optional OperationLimits that it *enforces*
(``BadTooManyOperations`` on a larger request, like real PLCs), optional Basic256Sha256 security and
username authentication. ``calls`` records the node count of every Read (touching :data:`URI` nodes)
and CreateMonitoredItems request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from adapters.opcua.certs import generate_self_signed
from adapters.opcua.config import OpcUaSourceConfig
from adapters.opcua.source import OpcUaSource
from ingestd.errors import SourceUnavailable
from ingestd.testing import RecordingContext

URI = "urn:wellos:test:plc"
SERVER_URI = "urn:wellos:test:server"


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class ServerPki:
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> ServerPki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory / "server_cert.der", directory / "server_key.pem")
        generate_self_signed(pki.key, pki.cert, SERVER_URI, hostname="localhost", server=True)
        return pki


@dataclass
class PlcServer:
    port: int
    n_tags: int = 5
    extra_namespaces: Sequence[str] = ()
    limits: dict[int, int | None] = field(default_factory=dict)
    """OperationLimits node id → published (and enforced) value; ``None`` deletes the node."""
    pki: ServerPki | None = None
    policies: Sequence[Any] = ()
    """ua.SecurityPolicyType values (default with a pki: Basic256Sha256 SignAndEncrypt only)."""
    trust: Any = None
    """Optional async certificate validator (x509 certificate, application description)."""
    users: dict[str, str] | None = None
    string_tags: int = 0
    calls: dict[str, list[int]] = field(default_factory=lambda: {"read": [], "monitor": []})
    monitor_requests: list[Any] = field(default_factory=list)
    """Every MonitoredItemCreateRequest received (to check sampling, queue size, filters)."""
    ns: int = 0
    nodes: list[Any] = field(default_factory=list)
    server: Any = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> PlcServer:
        srv = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await srv.init()
        srv.set_endpoint(self.endpoint)
        srv.set_server_name("ingestd test PLC")
        await srv.set_application_uri(SERVER_URI)
        if self.pki is not None:
            await srv.load_certificate(str(self.pki.cert))
            await srv.load_private_key(str(self.pki.key))
            srv.set_security_policy(list(self.policies) or [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        if self.trust is not None:
            srv.set_certificate_validator(self.trust)
        if self.users is not None:
            srv.set_identity_tokens([ua.UserNameIdentityToken])
        for extra in self.extra_namespaces:
            await srv.register_namespace(extra)
        self.ns = await srv.register_namespace(URI)
        plant = await srv.nodes.objects.add_folder(ua.NodeId("Plant", self.ns), ua.QualifiedName("Plant", self.ns))
        folders: dict[int, Any] = {}
        self.nodes = []
        for i in range(self.n_tags):
            well = i % 3
            if well not in folders:
                folders[well] = await plant.add_folder(ua.NodeId(f"Well{well}", self.ns),
                                                       ua.QualifiedName(f"Well{well}", self.ns))
            var = await folders[well].add_variable(
                ua.NodeId(f"Tag{i:02d}", self.ns), ua.QualifiedName(f"Tag{i:02d}", self.ns),
                ua.Variant(float(i), ua.VariantType.Double))
            await var.write_attribute(ua.AttributeIds.Description,
                                      ua.DataValue(ua.Variant(ua.LocalizedText(f"Test tag {i}"))))
            eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=4411,
                                  DisplayName=ua.LocalizedText("psi"), Description=ua.LocalizedText("psi"))
            await var.add_property(ua.NodeId(f"Tag{i:02d}.EU", self.ns), ua.QualifiedName("EngineeringUnits", 0),
                                   ua.Variant(eu, ua.VariantType.ExtensionObject))
            self.nodes.append(var)
        for j in range(self.string_tags):
            self.nodes.append(await plant.add_variable(ua.NodeId(f"Text{j}", self.ns),
                                                       ua.QualifiedName(f"Text{j}", self.ns), f"text {j}"))
        for node_id, value in self.limits.items():
            if value is None:
                await srv.delete_nodes([srv.get_node(ua.NodeId(node_id))])
            else:
                await srv.write_attribute_value(ua.NodeId(node_id),
                                                ua.DataValue(ua.Variant(value, ua.VariantType.UInt32)))
        self._instrument(srv)
        await srv.start()
        self.server = srv
        return self

    def _instrument(self, srv: Any) -> None:
        """Count (and enforce the published limits of) requests touching the test namespace."""
        ns = self.ns
        limit_read = self.limits.get(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        limit_mon = self.limits.get(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
        attr = srv.iserver.attribute_service
        subs = srv.iserver.subscription_service
        read, create = attr.read, subs.create_monitored_items

        def counted_read(params: Any) -> Any:
            if any(r.NodeId.NamespaceIndex == ns for r in params.NodesToRead):
                self.calls["read"].append(len(params.NodesToRead))
                if limit_read and len(params.NodesToRead) > limit_read:
                    raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            return read(params)

        async def counted_create(params: Any) -> Any:
            self.calls["monitor"].append(len(params.ItemsToCreate))
            self.monitor_requests.extend(params.ItemsToCreate)
            if limit_mon and len(params.ItemsToCreate) > limit_mon:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            return await create(params)

        attr.read = counted_read
        subs.create_monitored_items = counted_create

    async def write(self, index: int, value: float, *, source_ts: dt.datetime | None = None,
                    server_ts: dt.datetime | None = None, status: int = 0) -> None:
        await self.server.write_attribute_value(self.nodes[index].nodeid, ua.DataValue(
            ua.Variant(value, ua.VariantType.Double), StatusCode=ua.StatusCode(status),
            SourceTimestamp=source_ts, ServerTimestamp=server_ts))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def source_config(endpoint: str, n_tags: int, **extra: Any) -> OpcUaSourceConfig:
    tags = extra.pop("tags", None) or [
        {"name": f"tag{i:02d}", "node_id": f"nsu={URI};s=Tag{i:02d}"} for i in range(n_tags)
    ]
    data = {"name": "plc1", "protocol": "opcua", "endpoint": endpoint, "tags": tags,
            "watchdog_interval": "1s", "request_timeout": "2s", "connect_timeout": "5s"}
    data.update(extra)
    return OpcUaSourceConfig.model_validate(data)


async def supervise(source: OpcUaSource, ctx: RecordingContext, backoff: float = 0.2) -> None:
    """Stand-in for the core supervisor: call run() again after SourceUnavailable (short backoff)."""
    while True:
        try:
            await source.run(ctx)
        except SourceUnavailable:
            await asyncio.sleep(backoff)


def latest(ctx: RecordingContext, tag: str) -> float | None:
    values = ctx.values_by_tag().get(tag)
    return values[-1] if values else None
