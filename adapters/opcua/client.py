"""The only module importing asyncua: one OPC UA session, translated into ingestd's terms.

Everything that crosses this boundary is plain Python (``NodeId`` from :mod:`.nodeid`,
:class:`~.decode.RawSamples` columns, ints, strings) and every asyncua/ua exception is translated::

    BadUserAccessDenied, BadIdentityToken*, BadCertificate*, BadSecurityChecksFailed,
    server certificate mismatch                           -> SourceAuthError
    no endpoint with the configured policy/mode            -> SourceConfigError
    socket errors, timeouts, any other Bad status          -> SourceUnavailable

asyncua's own reconnection is never used: ``auto_reconnect`` stays off, the health probe is ours
(see source.py), and a lost transport only sets :attr:`OpcUaClient.lost`. The supervisor in the core
calls ``run()`` again, which opens a brand-new session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from asyncua import ua as _ua
from asyncua.client.client import Client as _Client
from asyncua.crypto import security_policies as _security_policies
from asyncua.crypto import uacrypto as _uacrypto

from ingestd.errors import SourceAuthError, SourceConfigError, SourceError, SourceUnavailable

from .decode import RawSamples
from .nodeid import IdKind, NodeId
from .plan import ItemSettings

__all__ = [
    "Attribute",
    "BrowseRef",
    "ConnectSettings",
    "NotificationBuffer",
    "OpcUaClient",
    "ReadPlan",
    "SubscriptionInfo",
    "status_name",
]

log = logging.getLogger(__name__)

# asyncua ships partial, string-typed annotations that mypy --strict rejects in many places; the
# library is bound as Any here, at the boundary, and nothing asyncua-typed leaves this module.
Client: Any = _Client
ua: Any = _ua
security_policies: Any = _security_policies
uacrypto: Any = _uacrypto

_POLICIES: Final[dict[str, Any]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_AUTH_CODES: Final = {
    ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenRejected,
    ua.StatusCodes.BadIdentityTokenInvalid, ua.StatusCodes.BadUserSignatureInvalid,
}
_CERT_CODES: Final = {
    ua.StatusCodes.BadSecurityChecksFailed, ua.StatusCodes.BadCertificateInvalid,
    ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadCertificateTimeInvalid,
    ua.StatusCodes.BadCertificateRevoked, ua.StatusCodes.BadCertificateUriInvalid,
    ua.StatusCodes.BadCertificateUseNotAllowed, ua.StatusCodes.BadSecurityPolicyRejected,
}
_PASSWORD_RE: Final = re.compile(r"(Password=)(b?'[^']*'|b?\"[^\"]*\")")


class _RedactPasswords(logging.Filter):
    """asyncua logs whole requests at DEBUG, ActivateSession's UserNameIdentityToken included;
    redact the password so enabling debug logging never leaks it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Password=" in message:
            record.msg, record.args = _PASSWORD_RE.sub(r"\1<redacted>", message), None
        return True


class _QuietConnectionLoss(logging.Filter):
    """asyncua's publish loop logs a traceback at ERROR for every connection loss before the source
    notices it; the source reports the loss once itself (see source.py), so drop that duplicate."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.msg == "Publish iteration crashed; retrying in 1s" and isinstance(exc, OSError))


for _name in ("asyncua.client.ua_client.UASocketProtocol", "asyncua.client.ua_client.UaClient",
              "asyncua.client.ua_session.UaSession", "asyncua.client.client"):
    logging.getLogger(_name).addFilter(_RedactPasswords())
logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_QuietConnectionLoss())

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US: Final = dt.timedelta(microseconds=1)
_VALUE: Final = ua.AttributeIds.Value
_ATTRS: Final = {
    "value": ua.AttributeIds.Value, "data_type": ua.AttributeIds.DataType,
    "value_rank": ua.AttributeIds.ValueRank, "description": ua.AttributeIds.Description,
}
Attribute = Literal["value", "data_type", "value_rank", "description"]


def status_name(code: int) -> str:
    """``BadNodeIdUnknown (0x80340000)``."""
    name, _ = ua.status_codes.get_name_and_doc(code)
    return f"{name} (0x{code & 0xFFFF_FFFF:08X})"


def translate(exc: BaseException, what: str, cert_path: Path | None = None) -> SourceError:
    """Map an asyncua/transport exception to the error type telling the supervisor what to do."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ua.UaStatusCodeError):
        code = int(exc.code)
        if code in _AUTH_CODES:
            return SourceAuthError(f"{what}: the server rejected the user identity ({status_name(code)})")
        if code in _CERT_CODES:
            return SourceAuthError(f"{what}: the server rejected the client certificate or security settings "
                                   f"({status_name(code)}); trust ingestd's client certificate on the server"
                                   + (f" ({cert_path})" if cert_path else ""))
        return SourceUnavailable(f"{what}: {status_name(code)}")
    if isinstance(exc, TimeoutError):
        return SourceUnavailable(f"{what}: timed out")
    if isinstance(exc, OSError):
        return SourceUnavailable(f"{what}: {exc.strerror or str(exc) or type(exc).__name__}")
    if isinstance(exc, ua.UaError):
        if "certificate mismatch" in str(exc):
            return SourceAuthError(f"{what}: the server certificate does not match security.server_cert")
        if "No matching endpoints" in str(exc):
            return SourceConfigError(f"{what}: the server offers no endpoint with the configured security "
                                     f"policy and mode ({exc})")
        return SourceUnavailable(f"{what}: {exc}")
    return SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}")


def to_ua(node: NodeId) -> Any:
    return ua.NodeId(node.identifier, node.namespace)


def from_ua(node: Any) -> NodeId:
    ident = node.Identifier
    kind: IdKind = "i" if isinstance(ident, int) else "s" if isinstance(ident, str) else "b" \
        if isinstance(ident, bytes) else "g"
    return NodeId(int(node.NamespaceIndex), kind, ident)


def _us(t: dt.datetime | None) -> int:
    if t is None:
        return 0
    try:
        return (t - _EPOCH) // _ONE_US
    except TypeError:  # naive datetime: OPC UA times are UTC
        return (t.replace(tzinfo=dt.UTC) - _EPOCH) // _ONE_US


def _append_values(raw: RawSamples, keys: Sequence[int], dvs: Sequence[Any]) -> None:
    """Columns from DataValues — the per-sample hot path: attribute reads and appends only."""
    raw.key.extend(keys)
    val, sta, src, srv = raw.value.append, raw.status.append, raw.source_us.append, raw.server_us.append
    for dv in dvs:
        var = dv.Value
        val(None if var is None else var.Value)
        sc = dv.StatusCode
        sta(0 if sc is None else sc.value)
        t = dv.SourceTimestamp
        src(0 if t is None else _us(t))
        t = dv.ServerTimestamp
        srv(0 if t is None else _us(t))


def _plain(v: Any) -> object:
    """asyncua values of browse attributes → plain Python (NodeId, str, int, ...)."""
    if isinstance(v, ua.NodeId):
        return from_ua(v)
    if isinstance(v, ua.LocalizedText):
        return v.Text or ""
    if isinstance(v, ua.EUInformation):
        return v.DisplayName.Text or ""
    if isinstance(v, ua.QualifiedName):
        return v.Name or ""
    return v


@dataclass(frozen=True, slots=True)
class ConnectSettings:
    endpoint: str
    source: str
    """Used in messages and the session name."""
    policy: str = "None"
    mode: str = "None"
    cert: bytes | None = field(default=None, repr=False)
    """Client application instance certificate (DER)."""
    key: bytes | None = field(default=None, repr=False)
    """Its private key (unencrypted PKCS#8 DER, in memory only)."""
    cert_path: Path | None = None
    """Where the certificate lives (named in messages so the operator knows what to trust)."""
    server_cert: bytes | None = field(default=None, repr=False)
    """Pinned server certificate (DER)."""
    application_uri: str = "urn:ingestd"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    request_timeout: float = 5.0
    session_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class BrowseRef:
    node: NodeId
    browse_name: str
    display_name: str
    node_class: int
    """1 Object, 2 Variable, 4 Method, 64 DataType, ..."""
    reference_type: NodeId


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    subscription_id: int
    publishing_interval: float
    """Revised by the server, in seconds."""
    keepalive_count: int


class ReadPlan:
    """A prepared Read request (built once per session, sent every poll)."""

    __slots__ = ("_params", "keys")

    def __init__(self, keys: Sequence[int], nodes: Sequence[NodeId], max_age: float) -> None:
        self.keys = list(keys)
        self._params: Any = ua.ReadParameters(
            MaxAge=max_age * 1000.0, TimestampsToReturn=ua.TimestampsToReturn.Both,
            NodesToRead=[ua.ReadValueId(NodeId=to_ua(n), AttributeId=_VALUE) for n in nodes],
        )


class NotificationBuffer:
    """Filled by the publish loop (a cheap synchronous callback), drained by one emitter task."""

    def __init__(self, max_items: int) -> None:
        self._items: list[Any] = []
        self.capacity = max_items
        self.ready = asyncio.Event()
        self.last_publish = time.monotonic()
        self.status_error: int | None = None
        self.dropped = 0

    def __call__(self, result: Any) -> None:
        self.last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return
        for n in data:
            if isinstance(n, ua.DataChangeNotification):
                self._items.extend(n.MonitoredItems)
            elif isinstance(n, ua.StatusChangeNotification) and not n.Status.is_good():
                self.status_error = int(n.Status.value)
        excess = len(self._items) - self.capacity
        if excess > 0:
            del self._items[:excess]
            self.dropped += excess
        self.ready.set()

    def drain(self) -> RawSamples:
        items, self._items = self._items, []
        self.ready.clear()
        raw = RawSamples()
        _append_values(raw, [it.ClientHandle for it in items], [it.Value for it in items])
        return raw


class OpcUaClient:
    """One connected session. Create with :meth:`connect`; always :meth:`close`."""

    def __init__(self, settings: ConnectSettings, client: Any) -> None:
        self.settings = settings
        self._client = client
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._what = f"OPC UA source {settings.source!r} ({settings.endpoint})"

    @classmethod
    async def connect(cls, s: ConnectSettings) -> OpcUaClient:
        client = Client(s.endpoint, timeout=s.request_timeout, watchdog_intervall=3600.0)
        client.name = client.description = f"ingestd {s.source}"
        client.application_uri = s.application_uri
        client.product_uri = "urn:wellos:ingestd"
        client.session_timeout = int(s.session_timeout * 1000)
        self = cls(s, client)
        client.connection_lost_callback = self._on_connection_lost
        try:
            async with asyncio.timeout(s.connect_timeout):
                if s.policy != "None":
                    await self._set_security(client, s)
                if s.username is not None:
                    client.set_user(s.username)
                    client.set_password(s.password or "")
                await client.connect()
        except (Exception, asyncio.CancelledError) as exc:
            # a timeout may interrupt asyncua between session activation and the start of its
            # supervisor: stop the channel-renew task it may already have started, drop the socket
            renew = getattr(client, "_renew_channel_task", None)
            if renew is not None:
                renew.cancel()
            client.disconnect_socket()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise translate(exc, f"{self._what}: connect", s.cert_path) from exc
        return self

    @staticmethod
    async def _set_security(client: Any, s: ConnectSettings) -> None:
        policy = _POLICIES[s.policy]
        mode = ua.MessageSecurityMode.Sign if s.mode == "Sign" else ua.MessageSecurityMode.SignAndEncrypt
        endpoints = await client.connect_and_get_server_endpoints()
        match = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy.URI]
        if not match:
            offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints})
            raise SourceConfigError(f"OPC UA source {s.source!r}: {s.endpoint} offers no endpoint with "
                                    f"{s.policy}/{s.mode} (offered: {', '.join(offered)})")
        presented = uacrypto.der_from_x509(uacrypto.x509_from_der(match[0].ServerCertificate))
        if s.server_cert is not None and s.server_cert != presented:
            raise SourceAuthError(f"OPC UA source {s.source!r}: the server presents another certificate than "
                                  "security.server_cert")
        if s.cert is None or s.key is None:
            raise SourceConfigError(f"OPC UA source {s.source!r}: a security policy needs a client certificate")
        await client.set_security(
            policy, uacrypto.CertProperties(s.cert, "der"), uacrypto.CertProperties(s.key, "der"),
            server_certificate=uacrypto.CertProperties(presented, "der"), mode=mode,
        )

    async def _on_connection_lost(self, exc: Exception) -> None:
        self.mark_lost(f"connection lost ({type(exc).__name__}: {exc})")

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    async def close(self) -> None:
        """Close the session (deleting its subscriptions) and the socket; never raises."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await self._client.disconnect()
        except (OSError, TimeoutError, ua.UaError) as exc:  # best effort: the server may be gone
            log.debug("%s: disconnect: %r", self._what, exc)
            self._client.disconnect_socket()

    async def _call(self, what: str, op: Awaitable[Any]) -> Any:
        try:
            return await op
        except (Exception, TimeoutError) as exc:
            if isinstance(exc, SourceError):
                raise
            raise translate(exc, f"{self._what}: {what}") from exc

    # --- reads ------------------------------------------------------------------------------

    async def read_attributes(self, nodes: Sequence[NodeId],
                              attribute: Attribute = "value") -> list[tuple[object, int]]:
        """(plain value, status code) per node, in one Read request."""
        params = ua.ReadParameters(
            TimestampsToReturn=ua.TimestampsToReturn.Neither,
            NodesToRead=[ua.ReadValueId(NodeId=to_ua(n), AttributeId=_ATTRS[attribute]) for n in nodes],
        )
        dvs = await self._call(f"read {attribute}", self._client.uaclient.read(params))
        out: list[tuple[object, int]] = []
        for dv in dvs:
            sc = 0 if dv.StatusCode is None else int(dv.StatusCode.value)
            out.append((None if dv.Value is None else _plain(dv.Value.Value), sc))
        return out

    async def namespace_array(self) -> list[str]:
        [(value, status)] = await self.read_attributes([NodeId(0, "i", ua.ObjectIds.Server_NamespaceArray)])
        if status >> 31 or not isinstance(value, list):
            raise SourceUnavailable(f"{self._what}: cannot read the namespace array ({status_name(status)})")
        return [str(u) for u in value]

    async def server_state(self) -> int:
        """Server_ServerStatus_State (0 Running, 1 Failed, 2 NoConfiguration, 3 Suspended, 4 Shutdown, ...)."""
        [(value, status)] = await self.read_attributes([NodeId(0, "i", ua.ObjectIds.Server_ServerStatus_State)])
        if status >> 31 or not isinstance(value, int):
            raise SourceUnavailable(f"{self._what}: server status unreadable ({status_name(status)})")
        return value

    async def operation_limits(self, nodes: dict[str, int]) -> dict[str, int | None]:
        """Published OperationLimits by name (``None`` where absent, unreadable or not a number)."""
        names = list(nodes)
        values = await self.read_attributes([NodeId(0, "i", nodes[n]) for n in names])
        return {n: (v if isinstance(v, int) and not isinstance(v, bool) and not s >> 31 else None)
                for n, (v, s) in zip(names, values, strict=True)}

    async def read(self, plan: ReadPlan) -> RawSamples:
        dvs = await self._call("read", self._client.uaclient.read(plan._params))
        raw = RawSamples()
        _append_values(raw, plan.keys, dvs)
        return raw

    async def register_nodes(self, nodes: Sequence[NodeId]) -> list[NodeId]:
        ua_ids = [to_ua(n) for n in nodes]
        ids = await self._call("register nodes", self._client.uaclient.register_nodes(ua_ids))
        return [from_ua(n) for n in ids]

    # --- subscriptions ----------------------------------------------------------------------

    async def create_subscription(
        self, *, publishing_interval: float, keepalive_count: int, lifetime_count: int, max_notifications: int,
        priority: int, buffer: NotificationBuffer,
    ) -> SubscriptionInfo:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_interval * 1000.0, RequestedLifetimeCount=lifetime_count,
            RequestedMaxKeepAliveCount=keepalive_count, MaxNotificationsPerPublish=max_notifications,
            PublishingEnabled=True, Priority=priority,
        )
        res = await self._call("create subscription", self._client.uaclient.create_subscription(params, buffer))
        return SubscriptionInfo(int(res.SubscriptionId), float(res.RevisedPublishingInterval) / 1000.0,
                                int(res.RevisedMaxKeepAliveCount))

    async def create_monitored_items(self, subscription_id: int,
                                     items: Sequence[tuple[int, NodeId, ItemSettings]]) -> list[int]:
        """One CreateMonitoredItems call; the status code per item (client handle = point index)."""
        requests = []
        for key, node, st in items:
            mp = ua.MonitoringParameters(ClientHandle=key, SamplingInterval=st.sampling_interval_ms,
                                         QueueSize=st.queue_size, DiscardOldest=st.discard_oldest)
            if st.needs_filter:
                mp.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger(st.trigger),
                                                DeadbandType=st.deadband_type, DeadbandValue=st.deadband_value)
            requests.append(ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=to_ua(node), AttributeId=_VALUE),
                MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=mp,
            ))
        params = ua.CreateMonitoredItemsParameters(SubscriptionId=subscription_id,
                                                   TimestampsToReturn=ua.TimestampsToReturn.Both,
                                                   ItemsToCreate=requests)
        uaclient = self._client.uaclient
        results = await self._call("create monitored items", uaclient.create_monitored_items(params))
        return [int(r.StatusCode.value) for r in results]

    # --- browsing ---------------------------------------------------------------------------

    async def browse(self, nodes: Sequence[NodeId], *, reference_type: int = ua.ObjectIds.HierarchicalReferences,
                     inverse: bool = False, node_class_mask: int = 0) -> list[list[BrowseRef]]:
        """References of each node (one Browse call, continuation points followed)."""
        direction = ua.BrowseDirection.Inverse if inverse else ua.BrowseDirection.Forward
        params = ua.BrowseParameters(NodesToBrowse=[ua.BrowseDescription(
            NodeId=to_ua(n), BrowseDirection=direction, ReferenceTypeId=ua.NodeId(reference_type),
            IncludeSubtypes=True, NodeClassMask=node_class_mask, ResultMask=ua.BrowseResultMask.All,
        ) for n in nodes])
        results = await self._call("browse", self._client.uaclient.browse(params))
        out: list[list[BrowseRef]] = []
        for res in results:
            refs = list(res.References or [])
            cp = res.ContinuationPoint
            while cp:
                nxt = ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[cp])
                [more] = await self._call("browse next", self._client.uaclient.browse_next(nxt))
                refs.extend(more.References or [])
                cp = more.ContinuationPoint
            out.append([
                BrowseRef(from_ua(r.NodeId), r.BrowseName.Name or "", r.DisplayName.Text or "", int(r.NodeClass),
                          from_ua(r.ReferenceTypeId))
                for r in refs if not getattr(r.NodeId, "ServerIndex", 0)
            ])
        return out

