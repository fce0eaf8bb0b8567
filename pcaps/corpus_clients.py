"""Scripted clients for the corpus: PDUs built with netdicom2's codec, plain blocking sockets.

Used by ``pcaps.record_corpus`` for what no off-the-shelf tool sends: every user-information
sub-item in one A-ASSOCIATE-RQ, and the ugly cases (unknown PDU type, absurd PDU-length,
truncated request, silent connection). Every read is bounded by a socket timeout.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from netdicom2.dimse import c_echo_rq, encode_command
from netdicom2.items import (
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
)
from netdicom2.pdu import AAssociateRqPDU, AReleaseRqPDU, PDataTfPDU

__all__ = [
    "all_sub_items_session",
    "echo_rq",
    "garbage_after_association",
    "garbage_before_association",
    "huge_length_after_association",
    "silent_connection",
    "truncated_request",
]

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_VR = "1.2.840.10008.1.2"
EXPLICIT_VR = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1234.2"  # corpus client, fixed for stable files
_TIMEOUT = 5.0


def echo_rq(called: str, calling: str = "CORPUS-RAW", *, all_sub_items: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ for Verification (and SC storage), optionally every sub-item 51H-58H."""
    subs: list[object] = [
        MaximumLengthSubItem(16384),
        ImplementationClassUIDSubItem(IMPLEMENTATION_UID),
    ]
    if all_sub_items:
        # PS3.7 D.3.3.3-D.3.3.7, in ascending item type (PS3.8 §9.3.2.3 note).
        subs += [
            # A window other than the default 1/1, so that the acceptor answers with 53H too.
            AsynchronousOperationsWindowSubItem(invoked=2, performed=2),
            SCPSCURoleSelectionSubItem(SECONDARY_CAPTURE, scu_role=1, scp_role=1),
            ImplementationVersionNameSubItem("CORPUS_RAW_1"),
            SOPClassExtendedNegotiationSubItem(SECONDARY_CAPTURE, b"\x01\x00"),
            SOPClassCommonExtendedNegotiationSubItem(
                SECONDARY_CAPTURE, "1.2.840.10008.4.2", ["1.2.840.10008.5.1.4.1.1.7.1"]
            ),
            # Type 5 (JWT) with a positive response requested: the AC carries 59H.
            UserIdentityRQSubItem(
                user_identity_type=5,
                positive_response_requested=1,
                primary_field=b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJjb3JwdXMifQ.",
            ),
        ]
    else:
        subs.append(ImplementationVersionNameSubItem("CORPUS_RAW_1"))
    items: list[object] = [
        ApplicationContextItem(),
        PresentationContextItemRQ(1, VERIFICATION, [IMPLICIT_VR]),
    ]
    if all_sub_items:
        items.append(PresentationContextItemRQ(3, SECONDARY_CAPTURE, [EXPLICIT_VR, IMPLICIT_VR]))
    items.append(UserInformationItem(subs))  # type: ignore[arg-type]
    return AAssociateRqPDU(called, calling, items).encode()  # type: ignore[arg-type]


def _echo_pdata(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command in one P-DATA-TF on context 1 (PS3.8 Annex E.2: 03H)."""
    command = encode_command(c_echo_rq(message_id))
    return PDataTfPDU([PresentationDataValueItem(1, 0x03, command)]).encode()


def _connect(address: tuple[str, int]) -> socket.socket:
    """A blocking TCP connection with a bounded timeout on every operation."""
    return socket.create_connection(address, timeout=_TIMEOUT)


def _read_pdu(sock: socket.socket) -> bytes | None:
    """One PDU, None at EOF or reset (bounded by the socket timeout)."""
    data = b""
    need = 6
    while len(data) < need:  # bounded: each recv returns data, EOF, or times out
        try:
            chunk = sock.recv(need - len(data))
        except (TimeoutError, ConnectionError):
            return None
        if not chunk:
            return None
        data += chunk
        if len(data) == 6 and need == 6:
            need = 6 + min(struct.unpack(">I", data[2:6])[0], 1 << 24)
    return data


def _drain(sock: socket.socket) -> None:
    """Read until the peer closes or aborts (or the timeout): its reaction reaches the capture."""
    for _ in range(64):  # bounded number of PDUs
        pdu = _read_pdu(sock)
        if pdu is None or pdu[0] == 0x07:
            return  # PS3.8 AA-3: after an A-ABORT the receiver closes the transport


def _finish(sock: socket.socket) -> None:
    """Close our side after the peer's reaction."""
    _drain(sock)
    with contextlib.suppress(OSError):
        sock.close()


def _associate(address: tuple[str, int], called: str) -> socket.socket:
    """Connect and get an A-ASSOCIATE-AC for a plain Verification request."""
    sock = _connect(address)
    sock.sendall(echo_rq(called))
    answer = _read_pdu(sock)
    if answer is None or answer[0] != 0x02:
        raise RuntimeError(f"association not accepted: {answer!r}")
    return sock


def all_sub_items_session(address: tuple[str, int], called: str) -> None:
    """Every user-information sub-item in the RQ, then C-ECHO and an orderly release."""
    sock = _connect(address)
    sock.sendall(echo_rq(called, all_sub_items=True))
    answer = _read_pdu(sock)
    if answer is None or answer[0] != 0x02:
        _finish(sock)
        return
    sock.sendall(_echo_pdata())
    _read_pdu(sock)
    sock.sendall(AReleaseRqPDU().encode())
    _read_pdu(sock)  # A-RELEASE-RP; PS3.8 AR-3: the requestor closes
    sock.close()


def garbage_before_association(address: tuple[str, int], called: str) -> None:
    """An unknown PDU type 09H before any A-ASSOCIATE-RQ (Sta2: Evt19 -> AA-1)."""
    sock = _connect(address)
    sock.sendall(bytes.fromhex("09000000000400000000"))
    _finish(sock)


def garbage_after_association(address: tuple[str, int], called: str) -> None:
    """An unknown PDU type 09H on an established association (Sta6: Evt19 -> AA-8)."""
    sock = _associate(address, called)
    sock.sendall(bytes.fromhex("09000000000400000000"))
    _finish(sock)


def huge_length_after_association(address: tuple[str, int], called: str) -> None:
    """A P-DATA-TF header declaring 4 GiB - 16 bytes, then a few bytes (Annex D.1 violation)."""
    sock = _associate(address, called)
    sock.sendall(b"\x04\x00\xff\xff\xff\xf0" + bytes(16))
    _finish(sock)


def truncated_request(address: tuple[str, int], called: str) -> None:
    """The first half of an A-ASSOCIATE-RQ, then an orderly close of our side."""
    sock = _connect(address)
    rq = echo_rq(called)
    sock.sendall(rq[: len(rq) // 2])
    sock.shutdown(socket.SHUT_WR)
    _finish(sock)


def silent_connection(address: tuple[str, int], called: str) -> None:
    """Connect and send nothing: the acceptor's ARTIM closes the connection (Sta2, Evt18)."""
    sock = _connect(address)
    _finish(sock)
