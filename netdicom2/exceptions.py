"""Exceptions of netdicom2: decode failures, local misuse, and the seed API's timeout."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AbortReason",
    "LocalProtocolError",
    "NetDicomError",
    "PDUDecodeError",
    "PDUTooLargeError",
    "ServerFailedError",
    "TimeoutError",
]


class AbortReason:
    """A-ABORT reason/diag codes for source 2 (PS3.8 §9.3.8, Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class NetDicomError(Exception):
    """Base class of every error netdicom2 raises on purpose."""


class PDUDecodeError(NetDicomError):
    """Bytes that are not a valid PDU: where (PDU type, byte offset, field) and why (PS3.8 §9.3)."""

    def __init__(
        self,
        reason: str,
        *,
        pdu_type: int | None = None,
        offset: int = 0,
        field: str = "",
        abort_reason: int = AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ) -> None:
        self.reason = reason
        self.pdu_type = pdu_type
        self.offset = offset
        self.field = field
        self.abort_reason = abort_reason
        kind = "unknown" if pdu_type is None else f"0x{pdu_type:02X}"
        super().__init__(f"PDU type {kind}, offset {offset}, field {field or '-'}: {reason}")


class LocalProtocolError(NetDicomError):
    """A local primitive that Table 9-10 does not allow in the current state (a blank cell)."""

    def __init__(self, state: Any, event: Any, pdu: Any = None, message: str = "") -> None:
        self.state = state
        self.event = event
        self.pdu = pdu
        name = type(pdu).__name__ if pdu is not None else "primitive"
        text = message or "not allowed in this state (PS3.8 Table 9-10 blank cell)"
        super().__init__(f"{_name(event)} ({name}) in {_name(state)}: {text}")


class TimeoutError(NetDicomError):
    """No PDU arrived within the timeout given to DULServiceProvider.receive()."""


def _name(value: Any) -> str:
    """The standard's name of an enum member (Sta6, Evt10), else str()."""
    return str(getattr(value, "value", value))


class ProviderStoppedError(LocalProtocolError):
    """A call on a DULServiceProvider whose event loop has stopped (after stop(), kill())."""

    def __init__(self, state: Any, event: Any = None, pdu: Any = None) -> None:
        super().__init__(state, event or "call", pdu, "the provider has stopped")


class PDUTooLargeError(LocalProtocolError):
    """A P-DATA-TF longer than the peer's maximum PDU length (PS3.8 Annex D.1): fragment first."""

    def __init__(
        self, state: Any, event: Any, pdu: Any = None, *, length: int, maximum: int
    ) -> None:
        self.length = length
        self.maximum = maximum
        super().__init__(
            state,
            event,
            pdu,
            f"PDU-length {length} exceeds the peer's maximum length {maximum} (PS3.8 Annex D.1)",
        )


class ServerFailedError(NetDicomError):
    """A DULServer loop stopped on a failure no single connection could contain.

    Raised from ``serve_forever()`` and again from ``shutdown()``/``wait()``; ``__cause__`` is
    the original exception. The listener is closed and every association aborted.
    """
