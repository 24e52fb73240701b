"""Typed errors of the alarm core, named by what the caller should do.

Exception hierarchy::

    IngestdError
    └── AlarmError
        ├── OperationError          an operator request cannot be applied (API: 409/422); nothing journaled
        │   ├── NothingToAcknowledge    the alarm is NORMAL or already acknowledged (idempotent ack)
        │   ├── StaleEvent              the request names an episode that is no longer the current one
        │   ├── ShelveRejected          duration above the maximum, one-shot on an inactive alarm, ...
        │   ├── InvalidOperation        e.g. unshelve of an unshelved alarm, return-to-service while in service
        │   └── MissingAudit            user or reason/comment missing where the audit trail requires one
        └── LinkError               an acknowledge link does not verify (API: 403)
            ├── LinkInvalid             bad signature, tampered or malformed
            └── LinkExpired             signature fine but past its expiry

Refusals that must be audited (reset while the condition is still abnormal) are *not* exceptions: the
operation returns an :class:`~alarms.model.Outcome` whose ``refused`` is set and whose journal holds the
``RESET_REFUSED`` row, so the caller persists the audit and then answers 409.
"""

from __future__ import annotations

from ingestd.errors import IngestdError

__all__ = [
    "AlarmError",
    "InvalidOperation",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "MissingAudit",
    "NothingToAcknowledge",
    "OperationError",
    "ShelveRejected",
    "StaleEvent",
]


class AlarmError(IngestdError):
    """Base class of the alarm core's errors."""


class OperationError(AlarmError):
    """An operator request that cannot be applied to the alarm in its current state."""


class NothingToAcknowledge(OperationError):
    """The alarm needs no acknowledgement (NORMAL, ACK_ACTIVE or LATCHED_ACK)."""


class StaleEvent(OperationError):
    """The request refers to an alarm episode (event id) that is not the current one."""


class ShelveRejected(OperationError):
    """The shelve request is not allowed (duration above the maximum, one-shot on an inactive alarm)."""


class InvalidOperation(OperationError):
    """The operation makes no sense in the alarm's current state."""


class MissingAudit(OperationError):
    """A user and/or a reason is required for the audit trail."""


class LinkError(AlarmError):
    """An acknowledge link failed verification."""


class LinkInvalid(LinkError):
    """Malformed, tampered with, or signed with another key."""


class LinkExpired(LinkError):
    """Correctly signed but expired."""
