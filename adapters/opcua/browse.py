"""``ingestd browse opc.tcp://HOST:PORT``: walk the address space and print a tag config.

:func:`browse` connects (with the same security/auth options as a source), walks hierarchical
references from the Objects folder down to ``depth`` levels, and returns ready-to-paste TOML: one
``[[sources.tags]]`` per numeric Variable, with a name derived from the browse path, the node id in
``nsu=`` form (stable across namespace index changes), the mapped ``data_type``, the unit from the
``EngineeringUnits`` property and the description. Variables whose values cannot be stored (strings,
date-times, arrays, structures) are listed as comments. :func:`format_tags` is the pure formatter.

Namespace 0 (the standard Server object and its diagnostics) is not walked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ingestd.config.base import DataType
from ingestd.config.types import Duration, Secret
from ingestd.errors import SourceError

from .client import Attribute, BrowseRef, OpcUaClient
from .config import AuthConfig, LimitsConfig, SecurityConfig, check_endpoint
from .nodeid import NodeId, format_node_id
from .plan import LIMIT_NODES, chunked, effective_limits
from .settings import connect_settings

__all__ = ["BrowsedVariable", "browse", "format_tags", "tag_name"]

_OBJECTS: Final = NodeId(0, "i", 85)
_HAS_PROPERTY_ID: Final = 46
_HAS_PROPERTY: Final = NodeId(0, "i", _HAS_PROPERTY_ID)
_HAS_SUBTYPE: Final = 45
_HIERARCHICAL: Final = 33
_OBJECT, _VARIABLE, _DATATYPE = 1, 2, 64
_BOOL: Final = {1}
_INTS: Final = {2, 3, 4, 5, 6, 7, 8, 9, 27, 28}
_FLOATS: Final = {10, 11, 26}
_ENUM: Final = 29
_TYPE_NAMES: Final = {
    1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32", 8: "Int64", 9: "UInt64",
    10: "Float", 11: "Double", 12: "String", 13: "DateTime", 14: "Guid", 15: "ByteString", 16: "XmlElement",
    17: "NodeId", 18: "ExpandedNodeId", 19: "StatusCode", 20: "QualifiedName", 21: "LocalizedText",
    22: "Structure", 23: "DataValue", 24: "BaseDataType", 25: "DiagnosticInfo", 26: "Number", 27: "Integer",
    28: "UInteger", 29: "Enumeration",
}
_NAME_BAD_CHARS: Final = re.compile(r"[^A-Za-z0-9_.:#+\-]")


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    path: tuple[str, ...]
    """Browse names from below the Objects folder down to the variable."""
    node: NodeId
    data_type: DataType | None
    """ingestd data type, or ``None`` when the values cannot be stored as numbers."""
    type_name: str
    unit: str = ""
    description: str = ""
    array: bool = False


def tag_name(path: Sequence[str]) -> str:
    """``("Plant", "Well 1", "Pressure")`` → ``Plant/Well_1/Pressure`` (a valid ingestd tag name)."""
    parts = [_NAME_BAD_CHARS.sub("_", p.strip()) or "_" for p in path]
    name = "/".join(parts)
    if not name[0].isalnum():
        name = f"t{name}"
    return name[:200]


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_tags(variables: Iterable[BrowsedVariable], namespace_array: Sequence[str], *, endpoint: str,
                depth: int | None = None, pattern: str | None = None, truncated: bool = False,
                generated: dt.datetime | None = None) -> str:
    """TOML ``[[sources.tags]]`` entries for ``variables`` (pure; deterministic given ``generated``)."""
    variables = sorted(variables, key=lambda v: v.path)
    usable = [v for v in variables if v.data_type is not None and not v.array]
    when = (generated or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# OPC UA tags browsed from {endpoint} at {when}"
        + (f" (depth {depth})" if depth is not None else "") + (f", filter {pattern!r}" if pattern else ""),
        f"# {len(usable)} tag(s); {len(variables) - len(usable)} variable(s) skipped (listed as comments)."
        + (" Output truncated at the node limit." if truncated else ""),
        "# Paste after your OPC UA source, e.g.:",
        "#   [[sources]]",
        '#   name = "plc1"',
        '#   protocol = "opcua"',
        f"#   endpoint = {_toml_str(endpoint)}",
        "",
    ]
    seen: dict[str, int] = {}
    skipped: list[str] = []
    for v in variables:
        node_id = format_node_id(v.node, namespace_array)
        if v.data_type is None or v.array:
            why = "arrays are not supported" if v.array else f"{v.type_name} values cannot be stored"
            skipped.append(f"#   {'/'.join(v.path)} ({node_id}): {why}".replace("\n", " "))
            continue
        name = tag_name(v.path)
        n = seen.get(name, 0) + 1
        seen[name] = n
        if n > 1:
            name = f"{name[:195]}_{n}"
        lines += ["[[sources.tags]]", f"name = {_toml_str(name)}", f"node_id = {_toml_str(node_id)}",
                  f"data_type = {_toml_str(v.data_type)}"]
        if v.unit:
            lines.append(f"unit = {_toml_str(v.unit)}")
        if v.description:
            lines.append(f"description = {_toml_str(v.description)}")
        lines.append("")
    if skipped:
        lines += ["# Skipped variables:", *skipped]
    return "\n".join(lines).rstrip("\n") + "\n"


@dataclass(frozen=True, slots=True)
class _Timeouts:
    connect_timeout: float
    request_timeout: float
    session_timeout: float = 60.0


async def browse(endpoint: str, *, depth: int = 6, pattern: str | None = None,
                 security: SecurityConfig | None = None, auth: AuthConfig | None = None,
                 state_dir: Path | None = None, timeout: Duration = 10.0, max_nodes: int = 50_000) -> str:
    """Walk ``endpoint`` from Objects and return TOML tag config (see the module docstring).

    ``pattern`` is a glob over the generated tag name (``Plant/*/Pressure``, ``*Flow*``).
    ``state_dir`` holds the client certificate when a security policy is used (the source's own
    state directory, so the server trusts the same certificate).
    """
    endpoint = check_endpoint(endpoint)
    security, auth = security or SecurityConfig(), auth or AuthConfig()
    if security.policy != "None" and state_dir is None and security.client_cert is None:
        raise ValueError("a security policy needs state_dir (for the client certificate) or client_cert")
    settings = await asyncio.to_thread(connect_settings, "browse", endpoint, security, auth,
                                       state_dir or Path("."), timeouts=_Timeouts(timeout, timeout))
    client = await OpcUaClient.connect(settings)
    try:
        namespaces = await client.namespace_array()
        limits = effective_limits(await client.operation_limits(LIMIT_NODES), LimitsConfig())
        walker = _Walker(client, limits.browse, limits.read, max_nodes)
        variables = await walker.walk(depth, pattern)
    finally:
        await client.close()
    return format_tags(variables, namespaces, endpoint=endpoint, depth=depth, pattern=pattern,
                       truncated=walker.truncated)


class _Walker:
    def __init__(self, client: OpcUaClient, browse_chunk: int, read_chunk: int, max_nodes: int) -> None:
        self.client, self.browse_chunk, self.read_chunk, self.max_nodes = client, browse_chunk, read_chunk, max_nodes
        self.truncated = False
        self._supertype: dict[NodeId, NodeId | None] = {}

    async def _browse(self, nodes: Sequence[NodeId], *, reference_type: int = _HIERARCHICAL, inverse: bool = False,
                      node_class_mask: int = 0) -> list[list[BrowseRef]]:
        out: list[list[BrowseRef]] = []
        for chunk in chunked(nodes, self.browse_chunk):
            out += await self.client.browse(chunk, reference_type=reference_type, inverse=inverse,
                                            node_class_mask=node_class_mask)
        return out

    async def _read(self, nodes: Sequence[NodeId], attribute: Attribute) -> list[tuple[object, int]]:
        out: list[tuple[object, int]] = []
        for chunk in chunked(nodes, self.read_chunk):
            out += await self.client.read_attributes(chunk, attribute)
        return out

    async def walk(self, depth: int, pattern: str | None) -> list[BrowsedVariable]:
        found: dict[NodeId, tuple[str, ...]] = {}
        units: dict[NodeId, NodeId] = {}
        visited = {_OBJECTS}
        frontier: list[tuple[NodeId, tuple[str, ...]]] = [(_OBJECTS, ())]
        for _ in range(depth):
            if not frontier:
                break
            children = await self._browse([n for n, _ in frontier], node_class_mask=_OBJECT | _VARIABLE)
            nxt: list[tuple[NodeId, tuple[str, ...]]] = []
            for (parent, path), refs in zip(frontier, children, strict=True):
                for ref in refs:
                    if ref.reference_type == _HAS_PROPERTY:
                        if ref.browse_name == "EngineeringUnits":
                            units[parent] = ref.node
                        continue
                    if ref.node.namespace == 0 or ref.node in visited:
                        continue
                    visited.add(ref.node)
                    child_path = (*path, ref.browse_name or ref.display_name or str(ref.node.identifier))
                    if ref.node_class == _VARIABLE and len(found) < self.max_nodes:
                        found[ref.node] = child_path
                    elif ref.node_class == _VARIABLE:
                        self.truncated = True
                    nxt.append((ref.node, child_path))
            frontier = nxt
        if depth > 0 and frontier:  # properties (units) of the deepest variables
            for (parent, _), refs in zip(frontier, await self._browse([n for n, _ in frontier],
                                                                      reference_type=_HAS_PROPERTY_ID), strict=True):
                for ref in refs:
                    if ref.browse_name == "EngineeringUnits":
                        units[parent] = ref.node
        selected = [(n, p) for n, p in found.items() if pattern is None or fnmatch.fnmatchcase(tag_name(p), pattern)]
        return await self._describe(selected, units)

    async def _describe(self, selected: list[tuple[NodeId, tuple[str, ...]]],
                        units: dict[NodeId, NodeId]) -> list[BrowsedVariable]:
        nodes = [n for n, _ in selected]
        data_types = await self._read(nodes, "data_type")
        ranks = await self._read(nodes, "value_rank")
        descriptions = await self._read(nodes, "description")
        eu_nodes = [units[n] for n in nodes if n in units]
        eu_values = dict(zip(eu_nodes, await self._read(eu_nodes, "value"), strict=True))
        base = await self._builtin_types({dt_ for dt_, _ in data_types if isinstance(dt_, NodeId)})
        out: list[BrowsedVariable] = []
        for (node, path), (dtype, _), (rank, _), (desc, _) in zip(selected, data_types, ranks, descriptions,
                                                                  strict=True):
            builtin = base.get(dtype) if isinstance(dtype, NodeId) else None
            unit = eu_values.get(units[node], ("", 0))[0] if node in units else ""
            out.append(BrowsedVariable(
                path=path, node=node, data_type=_ingestd_type(builtin),
                type_name=_TYPE_NAMES.get(builtin or 0, str(dtype)),
                unit=unit if isinstance(unit, str) else "", description=desc if isinstance(desc, str) else "",
                array=isinstance(rank, int) and rank >= 0,
            ))
        return out

    async def _builtin_types(self, types: set[NodeId]) -> dict[NodeId, int | None]:
        """Map each data type to the built-in type it derives from (walking HasSubtype upwards)."""
        result: dict[NodeId, int | None] = {}
        pending = {t: t for t in types}
        for _ in range(12):
            done = {t: cur for t, cur in pending.items() if cur.namespace == 0 and isinstance(cur.identifier, int)
                    and (cur.identifier in _TYPE_NAMES)}
            for t, cur in done.items():
                result[t] = int(cur.identifier)
                del pending[t]
            if not pending:
                break
            unknown = sorted({c for c in pending.values() if c not in self._supertype}, key=str)
            if unknown:
                parents = await self._browse(unknown, reference_type=_HAS_SUBTYPE, inverse=True,
                                             node_class_mask=_DATATYPE)
                for node, refs in zip(unknown, parents, strict=True):
                    self._supertype[node] = refs[0].node if refs else None
            for t, cur in list(pending.items()):
                parent = self._supertype.get(cur)
                if parent is None:
                    result[t] = None
                    del pending[t]
                else:
                    pending[t] = parent
        return result | dict.fromkeys(pending)


def _ingestd_type(builtin: int | None) -> DataType | None:
    if builtin in _BOOL:
        return "bool"
    if builtin in _INTS:
        return "int"
    if builtin in _FLOATS:
        return "float"
    if builtin == _ENUM:
        return "enum"
    return None


def browse_cli(args: Any) -> int:
    """``ingestd browse`` entry point: prints the tag config to stdout; errors to stderr, exit 1.

    ``args``: endpoint, depth, pattern, username, password (value or env:/file: reference),
    security ("Policy[,Mode]"), cert, key, server_cert, state_dir (optional).
    """
    policy, _, mode = (args.security or "None").partition(",")
    try:
        security = SecurityConfig.model_validate({
            "policy": policy.strip() or "None", "mode": mode.strip() or None,
            "client_cert": args.cert, "client_key": args.key, "server_cert": args.server_cert,
        })
        auth = AuthConfig(method="username", username=args.username, password=Secret(args.password)) \
            if args.username else AuthConfig()
        state = getattr(args, "state_dir", None)
        state_dir = Path(state) if state else (Path.home() / ".ingestd-browse" if security.policy != "None" else None)
        text = asyncio.run(browse(args.endpoint, depth=args.depth, pattern=args.pattern, security=security,
                                  auth=auth, state_dir=state_dir))
    except (SourceError, ValueError, OSError) as exc:
        sys.stderr.write(f"browse failed: {exc}\n")
        return 1
    sys.stdout.write(text)
    return 0
