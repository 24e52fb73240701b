"""OPC UA node ids as written in config, parsed and resolved without any protocol library.

Accepted forms (OPC UA Part 6 §5.3.1.10 string notation)::

    i=2258                      namespace 0, numeric
    ns=2;i=1001                 numeric         (0..4294967295)
    ns=2;s=Line1.Pressure       string          (anything after ``s=``, ``;`` included)
    ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a   GUID (canonical 8-4-4-4-12 hex)
    ns=2;b=M/RbKBsRVkePCePcx24oRA==               opaque ByteString, standard base64
    nsu=urn:acme:plc;s=Line1.Pressure             namespace by URI (also with i=, g=, b=)

``nsu=`` ids are resolved against the server's namespace array on every connect, because a server
restart or a PLC download may move a namespace to another index.

* :func:`parse_node_id` turns a string into a :class:`NodeRef` (raises :class:`ValueError` with a
  message fit for a config error);
* :meth:`NodeRef.resolve` maps it to a :class:`NodeId` (namespace index) using the namespace array,
  raising :class:`UnknownNamespace` when the URI is not (or no longer) published;
* :func:`format_node_id` writes a :class:`NodeId` back, in ``nsu=`` form when the URI is known.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "IdKind",
    "Identifier",
    "NodeId",
    "NodeRef",
    "UnknownNamespace",
    "format_node_id",
    "parse_node_id",
]

IdKind = Literal["i", "s", "g", "b"]
Identifier = int | str | uuid.UUID | bytes

_MAX_NS: Final = 65535
_MAX_NUMERIC: Final = 2**32 - 1
_MAX_STRING: Final = 4096
_GUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_ID_RE: Final = re.compile(r"(?P<kind>[isgb])=(?P<ident>.*)", re.DOTALL)
_NS_RE: Final = re.compile(r"ns=(?P<ns>[^;]*);(?P<rest>.*)", re.DOTALL)
_NSU_RE: Final = re.compile(r"nsu=(?P<uri>.*?);(?P<rest>[isgb]=.*)", re.DOTALL)
_HINT: Final = "expected e.g. 'ns=2;s=Tank1.Level', 'ns=3;i=1001' or 'nsu=urn:vendor:plc;s=Tank1.Level'"


class UnknownNamespace(LookupError):
    """An ``nsu=`` namespace URI is not in the server's namespace array."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"namespace URI {uri!r} is not published by the server")


@dataclass(frozen=True, slots=True)
class NodeId:
    """A node id with a concrete namespace index (what goes on the wire)."""

    namespace: int
    kind: IdKind
    identifier: Identifier

    def __str__(self) -> str:
        prefix = f"ns={self.namespace};" if self.namespace else ""
        return f"{prefix}{self.kind}={_ident_text(self.kind, self.identifier)}"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A configured node id: the namespace is an index (``ns=``) or a URI (``nsu=``)."""

    namespace: int | str
    kind: IdKind
    identifier: Identifier

    @property
    def by_uri(self) -> bool:
        return isinstance(self.namespace, str)

    def resolve(self, namespace_array: Sequence[str]) -> NodeId:
        """The wire node id for this server. Raises :class:`UnknownNamespace` for an unknown URI."""
        if isinstance(self.namespace, int):
            return NodeId(self.namespace, self.kind, self.identifier)
        try:
            index = list(namespace_array).index(self.namespace)
        except ValueError:
            raise UnknownNamespace(self.namespace) from None
        return NodeId(index, self.kind, self.identifier)

    def __str__(self) -> str:
        text = f"{self.kind}={_ident_text(self.kind, self.identifier)}"
        if isinstance(self.namespace, str):
            return f"nsu={self.namespace};{text}"
        return f"ns={self.namespace};{text}" if self.namespace else text


def parse_node_id(text: str) -> NodeRef:
    """Parse a node id string. Raises :class:`ValueError` explaining what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty node id ({_HINT})")
    if text != text.strip():
        raise ValueError(f"node id {text!r} has leading or trailing whitespace")
    namespace: int | str = 0
    rest = text
    if text.startswith("nsu="):
        m = _NSU_RE.fullmatch(text)
        if not m:
            raise ValueError(f"{text!r}: 'nsu=<uri>;' must be followed by i=, s=, g= or b= ({_HINT})")
        namespace = m.group("uri")
        if not namespace:
            raise ValueError(f"{text!r}: empty namespace URI after 'nsu='")
        rest = m.group("rest")
    elif text.startswith("ns="):
        m = _NS_RE.fullmatch(text)
        if not m:
            raise ValueError(f"{text!r}: 'ns=<index>' must be followed by ';' and i=, s=, g= or b= ({_HINT})")
        raw_ns = m.group("ns")
        if not raw_ns.isdigit() or not raw_ns.isascii():
            raise ValueError(f"{text!r}: namespace index {raw_ns!r} is not a number")
        namespace = int(raw_ns)
        if namespace > _MAX_NS:
            raise ValueError(f"{text!r}: namespace index {namespace} is outside 0..{_MAX_NS}")
        rest = m.group("rest")
    m = _ID_RE.fullmatch(rest)
    if not m:
        raise ValueError(f"{text!r} is not a node id ({_HINT})")
    kind: IdKind = m.group("kind")  # type: ignore[assignment]
    return NodeRef(namespace, kind, _parse_identifier(text, kind, m.group("ident")))


def _parse_identifier(text: str, kind: IdKind, raw: str) -> Identifier:
    if kind == "i":
        if not raw.isdigit() or not raw.isascii():
            raise ValueError(f"{text!r}: numeric identifier {raw!r} is not a non-negative integer")
        value = int(raw)
        if value > _MAX_NUMERIC:
            raise ValueError(f"{text!r}: numeric identifier {value} is outside 0..{_MAX_NUMERIC}")
        return value
    if kind == "s":
        if not raw:
            raise ValueError(f"{text!r}: empty string identifier")
        if len(raw) > _MAX_STRING:
            raise ValueError(f"{text!r}: string identifier longer than {_MAX_STRING} characters")
        return raw
    if kind == "g":
        if not _GUID_RE.fullmatch(raw):
            raise ValueError(f"{text!r}: {raw!r} is not a GUID (use 8-4-4-4-12 hex digits)")
        return uuid.UUID(raw)
    try:
        value_b = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r}: {raw!r} is not valid base64") from None
    if not value_b:
        raise ValueError(f"{text!r}: empty opaque (b=) identifier")
    return value_b


def _ident_text(kind: IdKind, identifier: Identifier) -> str:
    if kind == "b" and isinstance(identifier, bytes):
        return base64.b64encode(identifier).decode("ascii")
    return str(identifier)


def format_node_id(node: NodeId, namespace_array: Sequence[str], *, prefer_uri: bool = True) -> str:
    """Write ``node`` as text: ``nsu=<uri>;…`` when the index is in ``namespace_array`` and
    ``prefer_uri`` (namespace 0 stays short: ``i=85``), else ``ns=<index>;…``."""
    if prefer_uri and node.namespace and node.namespace < len(namespace_array):
        return str(NodeRef(namespace_array[node.namespace], node.kind, node.identifier))
    return str(node)
