"""OPC UA: one server with a folder per well and a variable per tag, updated every tick.

Node ids are string ids in :data:`ingestd.sim.layout.OPCUA_NAMESPACE` (``well_01.casing_pressure``),
values carry a source timestamp; a well in a comm fault reports BadCommunicationError.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from asyncua import ua as _ua
from asyncua.server.server import Server as _Server

from ingestd.sim.layout import OPCUA_NAMESPACE, TAGS, UNITS, well_name

from .field import Field

__all__ = ["OpcUaField"]

# asyncua's annotations use its own wrapper types (UInt32, Int16, String…) where plain Python values
# are accepted at runtime; go through Any rather than casting every argument
ua: Any = _ua
Server: Any = _Server

_BAD_COMM = ua.StatusCode(ua.StatusCodes.BadCommunicationError)


class OpcUaField:
    def __init__(self, field: Field, wells: list[int], port: int) -> None:
        self.field = field
        self.wells = wells
        self.port = port
        self._server: Any = None
        self._nodes: dict[tuple[int, str], Any] = {}

    async def start(self) -> None:
        for name in ("asyncua", "asyncua.server"):
            logging.getLogger(name).setLevel(logging.ERROR)
        srv = Server()
        await srv.init()
        srv.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}")
        srv.set_server_name("WellOS demo field RTU")
        srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await srv.register_namespace(OPCUA_NAMESPACE)
        for w in self.wells:
            name = well_name(w)
            folder = await srv.nodes.objects.add_folder(ua.NodeId(name, ns), ua.QualifiedName(name, ns))
            for tag in TAGS:
                variant = ua.Variant(False, ua.VariantType.Boolean) if tag == "pump_running" else \
                    ua.Variant(0.0, ua.VariantType.Double)
                var = await folder.add_variable(ua.NodeId(f"{name}.{tag}", ns), ua.QualifiedName(tag, ns), variant)
                if UNITS[tag]:
                    await var.write_attribute(ua.AttributeIds.Description,
                                              ua.DataValue(ua.Variant(ua.LocalizedText(UNITS[tag]))))
                self._nodes[(w, tag)] = var
        await srv.start()
        self._server = srv

    async def update(self, ts_ms: int) -> None:
        stamp = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        for (w, tag), node in self._nodes.items():
            v = self.field.values(w)[tag]
            variant = ua.Variant(bool(v), ua.VariantType.Boolean) if tag == "pump_running" else \
                ua.Variant(v, ua.VariantType.Double)
            status = _BAD_COMM if self.field.faulted(w) else ua.StatusCode(ua.StatusCodes.Good)
            await self._server.write_attribute_value(node.nodeid, ua.DataValue(
                variant, StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=stamp))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
