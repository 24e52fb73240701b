"""The Sparkplug B host application state machine — pure: no I/O, no clock, no protocol library.

Inputs are decoded messages (:class:`~.topics.Topic` + :class:`~.payload.Payload`), the receive time
(µs, for timestamp fallback) and a monotonic ``now`` (s, for timeouts and rate limits). Outputs
(:class:`Output`) are, in order, samples and status changes, plus rebirth requests, problems to
reject and event counts. The source (``source.py``) performs them.

Per edge node (Sparkplug 3.0 §5):

* NBIRTH sets the node's alias table (name, alias, data type), its ``bdSeq`` and the expected
  ``seq``; it forgets the device tables (devices re-send DBIRTH after an NBIRTH). A new session
  (different ``bdSeq``) while devices were online marks those devices down first.
* NDATA/DBIRTH/DDATA/DDEATH carry ``seq`` (0–255, wrapping): a message ahead of the expected seq
  is held up to ``reorder_timeout`` waiting for the gap to fill; when it does not, the held messages
  are processed in order and a rebirth is requested. A message behind the expected seq (late or
  duplicate) is processed without moving the expectation (stored values are idempotent).
* Rebirth (NCMD ``Node Control/Rebirth``) is requested on a seq gap, DATA before BIRTH, an alias or
  name not in the BIRTH and a malformed payload, at most once per ``rebirth_interval`` per node.
* NDEATH whose ``bdSeq`` matches the NBIRTH's marks the node and all its devices down (their points
  go stale, outage windows open); a death with another ``bdSeq`` is stale and ignored. DDEATH marks
  one device down. The next NBIRTH/DBIRTH brings them up again.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ingestd.model import STATUS_OK, Quality

from .payload import DataType, Metric, Payload
from .topics import MsgType, Topic
from .values import NON_NUMERIC, NUMERIC, ValueProblem, core_data_type, quality_of, to_number

__all__ = ["Host", "HostSettings", "MetricRef", "Output", "Problem", "Rebirth", "Resolver", "Sample",
           "StatusChange"]

_MAX_TS_MS: Final = (2**63 - 1) // 1000
_HALF: Final = 128


@dataclass(frozen=True, slots=True)
class MetricRef:
    group: str
    node: str
    device: str
    """"" for a metric of the edge node itself."""
    name: str

    def __str__(self) -> str:
        where = f"{self.group}/{self.node}" + (f"/{self.device}" if self.device else "")
        return f"{where}:{self.name}"


Resolver = Callable[[MetricRef, str], int | None]
"""(metric, core data type) → point index, or None when the metric is not stored."""


@dataclass(frozen=True, slots=True)
class Sample:
    key: int
    ts_us: int
    value: float | None
    quality: int
    status: int
    historical: bool = False


@dataclass(frozen=True, slots=True)
class StatusChange:
    up: bool
    device: str
    """``<group>/<node>[/<device>]``."""
    reason: str = ""
    points: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rebirth:
    group: str
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    detail: str
    key: str
    with_payload: bool = False
    """Attach the message payload to the dead letter."""


@dataclass(slots=True)
class Output:
    actions: list[Sample | StatusChange] = field(default_factory=list)
    rebirths: list[Rebirth] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)

    def count(self, event: str, n: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + n

    @property
    def samples(self) -> list[Sample]:
        return [a for a in self.actions if isinstance(a, Sample)]

    @property
    def status(self) -> list[StatusChange]:
        return [a for a in self.actions if isinstance(a, StatusChange)]


@dataclass(frozen=True, slots=True)
class HostSettings:
    reorder_timeout: float = 2.0
    rebirth_interval: float = 5.0
    store_historical: bool = True
    exclude: Sequence[str] = ("bdSeq", "Node Control/*", "Device Control/*")


@dataclass(slots=True)
class _Def:
    ref: MetricRef
    datatype: int
    key: int | None
    reported: bool = False


@dataclass(slots=True)
class _Table:
    by_alias: dict[int, _Def] = field(default_factory=dict)
    by_name: dict[str, _Def] = field(default_factory=dict)

    def points(self) -> tuple[int, ...]:
        return tuple(sorted({d.key for d in self.by_name.values() if d.key is not None}))


@dataclass(slots=True)
class _Held:
    topic: Topic
    payload: Payload
    recv_us: int


@dataclass(slots=True)
class _Node:
    group: str
    node: str
    online: bool = False
    bd_seq: int | None = None
    table: _Table = field(default_factory=_Table)
    devices: dict[str, _Table] = field(default_factory=dict)
    """Device alias tables since the last NBIRTH."""
    device_online: dict[str, bool] = field(default_factory=dict)
    expected: int | None = None
    held: dict[int, _Held] = field(default_factory=dict)
    deadline: float | None = None
    last_rebirth: float | None = None

    @property
    def key(self) -> str:
        return f"{self.group}/{self.node}"


def _bd_seq(payload: Payload) -> int | None:
    m = payload.metric("bdSeq")
    if m is None or not isinstance(m.value, int) or isinstance(m.value, bool):
        return None
    return m.value


class Host:
    """Host application state for every edge node seen on one broker connection."""

    def __init__(self, settings: HostSettings, resolve: Resolver) -> None:
        self.settings = settings
        self._resolve = resolve
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._exclude = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in settings.exclude)) \
            if settings.exclude else None

    # ------------------------------------------------------------------ queries
    def is_online(self, group: str, node: str, device: str = "") -> bool:
        n = self._nodes.get((group, node))
        if n is None or not n.online:
            return False
        return n.device_online.get(device, False) if device else True

    def next_deadline(self) -> float | None:
        deadlines = [n.deadline for n in self._nodes.values() if n.deadline is not None]
        return min(deadlines) if deadlines else None

    # ------------------------------------------------------------------ inputs
    def handle(self, topic: Topic, payload: Payload, recv_us: int, now: float) -> Output:
        out = Output()
        kind = topic.kind
        if kind in (MsgType.NCMD, MsgType.DCMD, MsgType.STATE):
            out.count("ignored_" + kind.lower())
            return out
        node = self._node(topic)
        if kind is MsgType.NBIRTH:
            self._nbirth(node, topic, payload, recv_us, out)
        elif kind is MsgType.NDEATH:
            self._ndeath(node, payload, now, out)
        else:
            self._sequenced(node, topic, payload, recv_us, now, out)
        return out

    def malformed(self, topic: Topic, detail: str, now: float) -> Output:
        """A message whose payload could not be decoded: dead-letter it and request a rebirth."""
        out = Output()
        out.problems.append(Problem("bad_protobuf", f"{topic.kind} from {topic.device_key}: {detail}",
                                    topic.device_key, with_payload=True))
        if topic.kind not in (MsgType.NDEATH, MsgType.NCMD, MsgType.DCMD, MsgType.STATE):
            self._rebirth(self._node(topic), "malformed payload", now, out)
        return out

    def connection_lost(self, reason: str) -> Output:
        """The host lost its broker: every online node and device goes down (and must rebirth later)."""
        out = Output()
        for node in self._nodes.values():
            if not node.online:
                continue
            self._devices_down(node, reason, out)
            out.actions.append(StatusChange(False, node.key, reason, node.table.points()))
            node.online = False
            node.devices = {}
            node.held.clear()
            node.deadline = None
            node.expected = None
        return out

    def tick(self, now: float) -> Output:
        """Expire reorder timeouts: process what was held and request a rebirth."""
        out = Output()
        for node in self._nodes.values():
            if node.deadline is not None and node.deadline <= now:
                expected = node.expected
                self._flush(node, now, out)
                out.count("seq_gap")
                self._rebirth(node, f"seq gap (expected {expected}) not filled within the reorder timeout", now,
                              out)
        return out

    # ------------------------------------------------------------------ node lifecycle
    @staticmethod
    def _devices_down(node: _Node, reason: str, out: Output) -> None:
        for dev, up in node.device_online.items():
            if up:
                table = node.devices.get(dev)
                out.actions.append(StatusChange(False, f"{node.key}/{dev}", reason, table.points() if table else ()))
                node.device_online[dev] = False

    def _node(self, topic: Topic) -> _Node:
        node = self._nodes.get((topic.group, topic.node))
        if node is None:
            node = self._nodes[(topic.group, topic.node)] = _Node(topic.group, topic.node)
        return node

    def _nbirth(self, node: _Node, topic: Topic, payload: Payload, recv_us: int, out: Output) -> None:
        bd = _bd_seq(payload)
        if node.online and bd != node.bd_seq:
            self._devices_down(node, f"edge node started a new session (bdSeq {bd}) without DDEATH", out)
        node.devices = {}
        node.held.clear()
        node.deadline = None
        node.bd_seq = bd
        node.online = True
        seq = payload.seq
        node.expected = (seq + 1) % 256 if seq is not None and 0 <= seq <= 255 else None
        out.count("nbirth")
        out.actions.append(StatusChange(True, node.key))
        node.table = self._birth(topic, payload, recv_us, out)

    def _ndeath(self, node: _Node, payload: Payload, now: float, out: Output) -> None:
        if not node.online:
            out.count("death_ignored")
            return
        bd = _bd_seq(payload)
        if node.bd_seq is not None and bd != node.bd_seq:
            out.count("stale_death")
            return
        self._flush(node, now, out)
        reason = f"edge node died (NDEATH, bdSeq {bd})"
        self._devices_down(node, reason, out)
        out.actions.append(StatusChange(False, node.key, reason, node.table.points()))
        out.count("ndeath")
        node.online = False
        node.devices = {}
        node.expected = None

    # ------------------------------------------------------------------ seq ordering
    def _sequenced(self, node: _Node, topic: Topic, payload: Payload, recv_us: int, now: float,
                   out: Output) -> None:
        if not node.online:
            out.count("data_before_birth")
            if self._rebirth(node, f"{topic.kind} before NBIRTH", now, out):
                out.problems.append(Problem("data_before_birth", f"{topic.kind} from {topic.device_key} before its "
                                            "NBIRTH: rebirth requested", node.key, with_payload=True))
            return
        seq = payload.seq
        if seq is None or not 0 <= seq <= 255:
            out.problems.append(Problem("bad_seq", f"{topic.kind} from {topic.device_key} has seq {seq}",
                                        node.key, with_payload=True))
            self._process(node, topic, payload, recv_us, now, out)
            self._rebirth(node, "message without a valid seq", now, out)
            return
        if node.expected is None:
            node.expected = seq
        ahead = (seq - node.expected) % 256
        if ahead == 0:
            node.expected = (seq + 1) % 256
            self._process(node, topic, payload, recv_us, now, out)
            self._drain(node, now, out)
        elif ahead < _HALF:
            if self.settings.reorder_timeout <= 0:
                expected = node.expected
                node.expected = (seq + 1) % 256
                out.count("seq_gap")
                self._process(node, topic, payload, recv_us, now, out)
                self._rebirth(node, f"seq gap (expected {expected}, got {seq})", now, out)
                return
            node.held[seq] = _Held(topic, payload, recv_us)
            out.count("seq_held")
            if node.deadline is None:
                node.deadline = now + self.settings.reorder_timeout
        else:
            out.count("seq_late")
            self._process(node, topic, payload, recv_us, now, out)

    def _drain(self, node: _Node, now: float, out: Output) -> None:
        while node.expected is not None and node.expected in node.held:
            h = node.held.pop(node.expected)
            node.expected = (node.expected + 1) % 256
            self._process(node, h.topic, h.payload, h.recv_us, now, out)
        if not node.held:
            node.deadline = None

    def _flush(self, node: _Node, now: float, out: Output) -> None:
        """Process every held message in seq order, skipping the gap(s)."""
        start = node.expected or 0
        for seq in sorted(node.held, key=lambda s: (s - start) % 256):
            h = node.held.pop(seq)
            node.expected = (seq + 1) % 256
            self._process(node, h.topic, h.payload, h.recv_us, now, out)
        node.deadline = None

    # ------------------------------------------------------------------ message contents
    def _process(self, node: _Node, topic: Topic, payload: Payload, recv_us: int, now: float, out: Output) -> None:
        kind = topic.kind
        if kind is MsgType.NDATA:
            self._data(node, node.table, topic, payload, recv_us, now, out)
        elif kind is MsgType.DBIRTH:
            node.devices[topic.device] = self._birth(topic, payload, recv_us, out, status=True)
            node.device_online[topic.device] = True
            out.count("dbirth")
        elif kind is MsgType.DDATA:
            table = node.devices.get(topic.device)
            if table is None or not node.device_online.get(topic.device, False):
                out.count("data_before_birth")
                if self._rebirth(node, f"DDATA from device {topic.device} before its DBIRTH", now, out):
                    out.problems.append(Problem("data_before_birth", f"DDATA from {topic.device_key} before its "
                                                "DBIRTH: rebirth requested", node.key, with_payload=True))
                return
            self._data(node, table, topic, payload, recv_us, now, out)
        elif kind is MsgType.DDEATH:
            table = node.devices.get(topic.device)
            if node.device_online.get(topic.device, False):
                node.device_online[topic.device] = False
                out.actions.append(StatusChange(False, topic.device_key, "device died (DDEATH)",
                                                table.points() if table else ()))
                out.count("ddeath")
            else:
                out.count("death_ignored")

    def _birth(self, topic: Topic, payload: Payload, recv_us: int, out: Output, *, status: bool = False) -> _Table:
        if status:
            out.actions.append(StatusChange(True, topic.device_key))
        table = _Table()
        values: list[tuple[_Def, Metric]] = []
        for m in payload.metrics:
            if m.name is None or m.datatype is None:
                out.problems.append(Problem("bad_birth", f"{topic.kind} from {topic.device_key}: a metric without "
                                            f"{'name' if m.name is None else 'datatype'} (alias {m.alias})",
                                            topic.device_key, with_payload=True))
                continue
            ref = MetricRef(topic.group, topic.node, topic.device, m.name)
            d = _Def(ref, m.datatype, self._key(ref, m.datatype, m.is_transient, out))
            table.by_name[m.name] = d
            if m.alias is not None:
                if m.alias in table.by_alias:
                    out.problems.append(Problem("duplicate_alias", f"{topic.kind} from {topic.device_key}: alias "
                                                f"{m.alias} used by {table.by_alias[m.alias].ref.name!r} and "
                                                f"{m.name!r}", topic.device_key))
                else:
                    table.by_alias[m.alias] = d
            if d.key is not None:
                values.append((d, m))
        for d, m in values:
            self._sample(d, m, payload, recv_us, out)
        return table

    def _key(self, ref: MetricRef, datatype: int, transient: bool, out: Output) -> int | None:
        """The point of a BIRTH metric, or None when it is not stored (excluded, transient, not numeric,
        or not mapped by the resolver)."""
        if self._exclude is not None and self._exclude.fullmatch(ref.name):
            return None
        if transient:
            out.count("transient_skipped")
            return None
        if datatype not in NUMERIC:
            reason = "non_numeric" if datatype in NON_NUMERIC else "unsupported_type"
            out.problems.append(Problem(reason, f"{ref}: {DataType.name_of(datatype)} metric is not stored "
                                        "(numeric types only)", str(ref)))
            return None
        return self._resolve(ref, core_data_type(datatype))

    def _data(self, node: _Node, table: _Table, topic: Topic, payload: Payload, recv_us: int, now: float,
              out: Output) -> None:
        unknown: list[str] = []
        for m in payload.metrics:
            d = table.by_alias.get(m.alias) if m.alias is not None else None
            if d is None and m.name is not None:
                d = table.by_name.get(m.name)
            if d is None:
                unknown.append(f"alias {m.alias}" if m.alias is not None else f"name {m.name!r}")
            elif d.key is not None:
                self._sample(d, m, payload, recv_us, out)
        if unknown:
            out.count("unknown_alias", len(unknown))
            if self._rebirth(node, f"{topic.kind} with metrics not in the BIRTH", now, out):
                out.problems.append(Problem("unknown_alias", f"{topic.kind} from {topic.device_key}: "
                                            f"{', '.join(unknown[:5])} not in the BIRTH: rebirth requested",
                                            topic.device_key, with_payload=True))

    def _sample(self, d: _Def, m: Metric, payload: Payload, recv_us: int, out: Output) -> None:
        assert d.key is not None
        if m.is_transient:
            out.count("transient_skipped")
            return
        if m.is_historical:
            if not self.settings.store_historical:
                out.count("historical_dropped")
                return
            out.count("historical")
        ts_ms = m.timestamp if m.timestamp is not None else payload.timestamp
        if ts_ms is not None and ts_ms > _MAX_TS_MS:
            self._value_problem(d, ValueProblem("bad_timestamp", f"timestamp {ts_ms} ms is out of range"), out)
            return
        ts_us = recv_us if ts_ms is None else ts_ms * 1000
        quality, status = quality_of(m.properties) or (int(Quality.GOOD), STATUS_OK)
        value: float | None = None
        if m.is_null or m.value_field is None:
            quality = int(Quality.BAD)
        else:
            try:
                value = to_number(d.datatype, m.value_field, m.value)
            except ValueProblem as exc:
                self._value_problem(d, exc, out)
                return
            if quality == Quality.BAD:
                value = None
        out.actions.append(Sample(d.key, ts_us, value, quality, status, m.is_historical))

    @staticmethod
    def _value_problem(d: _Def, exc: ValueProblem, out: Output) -> None:
        out.count("value_rejected")
        if not d.reported:  # once per metric and BIRTH; later occurrences are only counted
            d.reported = True
            out.problems.append(Problem(exc.reason, f"{d.ref}: {exc.detail}", str(d.ref)))

    # ------------------------------------------------------------------ rebirth
    def _rebirth(self, node: _Node, reason: str, now: float, out: Output) -> bool:
        last = node.last_rebirth
        if last is not None and now - last < self.settings.rebirth_interval:
            out.count("rebirth_suppressed")
            return False
        node.last_rebirth = now
        out.rebirths.append(Rebirth(node.group, node.node, reason))
        out.count("rebirth_requested")
        return True
