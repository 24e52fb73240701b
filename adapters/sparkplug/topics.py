"""Pure Sparkplug topic namespace and host STATE messages (Sparkplug 3.0 §4, §5).

``spBv1.0/<group>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge_node>``,
``spBv1.0/<group>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge_node>/<device>`` and ``spBv1.0/STATE/<host_id>``
(payload JSON ``{"online": bool, "timestamp": ms}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "NAMESPACE",
    "MsgType",
    "Topic",
    "ncmd_topic",
    "parse_state",
    "parse_topic",
    "state_payload",
    "state_topic",
]

NAMESPACE: Final = "spBv1.0"


class MsgType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"


_NODE_TYPES: Final = frozenset({MsgType.NBIRTH, MsgType.NDEATH, MsgType.NDATA, MsgType.NCMD})
_DEVICE_TYPES: Final = frozenset({MsgType.DBIRTH, MsgType.DDEATH, MsgType.DDATA, MsgType.DCMD})


@dataclass(frozen=True, slots=True)
class Topic:
    kind: MsgType
    group: str
    node: str
    """Edge node id; for STATE: the host id."""
    device: str = ""

    @property
    def node_key(self) -> str:
        """``<group>/<node>``: the device name used for status/outages of the edge node."""
        return f"{self.group}/{self.node}"

    @property
    def device_key(self) -> str:
        """``<group>/<node>[/<device>]``: the status/outage device of this message's sender."""
        return f"{self.group}/{self.node}/{self.device}" if self.device else self.node_key


def parse_topic(topic: str) -> Topic | None:
    """The parsed topic, or None when it is not a well-formed Sparkplug B topic."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE or not all(parts):
        return None
    if parts[1] == "STATE":
        return Topic(MsgType.STATE, "", parts[2]) if len(parts) == 3 else None
    if len(parts) not in (4, 5):
        return None
    try:
        kind = MsgType(parts[2])
    except ValueError:
        return None
    if len(parts) == 4 and kind in _NODE_TYPES:
        return Topic(kind, parts[1], parts[3])
    if len(parts) == 5 and kind in _DEVICE_TYPES:
        return Topic(kind, parts[1], parts[3], parts[4])
    return None


def ncmd_topic(group: str, node: str) -> str:
    return f"{NAMESPACE}/{group}/NCMD/{node}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """``{"online":true,"timestamp":T}`` (compact JSON, as the spec shows it)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def parse_state(payload: bytes) -> tuple[bool, int | None] | None:
    """(online, timestamp) of a STATE payload, or None when it is not Sparkplug 3.0 STATE JSON."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("online"), bool):
        return None
    ts = doc.get("timestamp")
    return doc["online"], ts if isinstance(ts, int) and not isinstance(ts, bool) else None
