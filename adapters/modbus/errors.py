"""Errors of the Modbus adapter. No pymodbus type escapes ``client.py``; these are what it raises::

    SourceUnavailable (ingestd.errors)      the source gives up; the core supervisor reconnects with backoff
    ├── ConnectionLost                      connect failed, the peer closed the connection, or the byte stream
    │                                       cannot be trusted any more (unexpected transaction id, malformed
    │                                       frame, answer to another request): reconnect
    └── RequestTimeout                      one request got no answer in time (that unit may be down)
    ModbusException                         the device answered with a Modbus exception response (``code``)
"""

from __future__ import annotations

from typing import Final

from ingestd.errors import IngestdError, SourceUnavailable

__all__ = ["EXCEPTION_NAMES", "GATEWAY_CODES", "RETRY_CODES", "ConnectionLost", "ModbusException", "RequestTimeout"]

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

GATEWAY_CODES: Final = frozenset({10, 11})
"""The gateway answered but the unit behind it is unreachable: the unit is reported down."""
RETRY_CODES: Final = frozenset({5, 6})
"""Transient device states worth re-sending the request for (``retries``)."""


class ConnectionLost(SourceUnavailable):
    """The TCP connection is gone or can no longer be trusted."""


class RequestTimeout(SourceUnavailable):
    """No answer to one request within the timeout."""


class ModbusException(IngestdError):
    """The device answered with exception ``code`` (2 = illegal data address, 6 = busy, 11 = gateway ...)."""

    def __init__(self, code: int, where: str = "") -> None:
        self.code = code
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"{where}: exception {code} ({name})" if where else f"exception {code} ({name})")
