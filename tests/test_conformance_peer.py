"""The scripted peer itself: framing, FIN versus RST, segments, silence, evaluable scripts."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from netdicom2.conformance import script as S
from netdicom2.conformance.peer import Closed, Frame, Listener, PeerError, Wire
from netdicom2.conformance.recipes import Params, plan
from netdicom2.conformance.runner import frame_text, matches
from netdicom2.conformance.script import Pdu, render
from netdicom2.conformance.table import cell
from netdicom2.pdu import AAbortPDU, AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU


@pytest.fixture
def pair() -> Iterator[tuple[Wire, socket.socket]]:
    """A Wire and the raw socket at its other end."""
    listener = Listener()
    wire = Wire(socket.create_connection(listener.address))
    other = listener.accept(2.0)
    yield wire, other
    wire.close()
    other.close()
    listener.close()


def test_frames_whole_pdus_across_and_within_segments(pair: tuple[Wire, socket.socket]) -> None:
    # PS3.8 §9.3.1: a PDU is framed by its 6-byte header, whatever the TCP segmentation.
    wire, other = pair
    two = AReleaseRqPDU().encode() + AAbortPDU(2, 1).encode()
    other.sendall(two[:3])
    assert wire.next_event(time.monotonic() + 0.05) is None
    other.sendall(two[3:])
    first = wire.next_event(time.monotonic() + 2)
    second = wire.next_event(time.monotonic() + 2)
    assert isinstance(first, Frame) and first.data == AReleaseRqPDU().encode()
    assert isinstance(second, Frame) and frame_text(second.data) == "A-ABORT(source=2, reason=1)"


def test_tells_a_fin_from_a_rst(pair: tuple[Wire, socket.socket]) -> None:
    wire, other = pair
    other.shutdown(socket.SHUT_WR)
    event = wire.next_event(time.monotonic() + 2)
    assert isinstance(event, Closed) and event.how == "fin"
    listener = Listener()
    wire2 = Wire(socket.create_connection(listener.address))
    other2 = listener.accept(2.0)
    other2.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    other2.close()
    event = wire2.next_event(time.monotonic() + 2)
    assert isinstance(event, Closed) and event.how == "rst"
    wire2.close()
    listener.close()


def test_sends_segments_with_a_delay(pair: tuple[Wire, socket.socket]) -> None:
    wire, other = pair
    data = AReleaseRpPDU().encode()
    start = time.monotonic()
    assert wire.send(data, segments=(1, 5), delay=0.02)
    assert time.monotonic() - start >= 0.04
    other.settimeout(2)
    received = b""
    while len(received) < len(data):
        received += other.recv(100)
    assert received == data


def test_half_close_keeps_reading(pair: tuple[Wire, socket.socket]) -> None:
    wire, other = pair
    wire.half_close()
    other.settimeout(2)
    assert other.recv(10) == b""  # FIN seen, and we can still read
    other.sendall(AReleaseRpPDU().encode())
    assert isinstance(wire.next_event(time.monotonic() + 2), Frame)


def test_reset_sends_a_rst(pair: tuple[Wire, socket.socket]) -> None:
    wire, other = pair
    wire.reset()
    other.settimeout(2)
    with pytest.raises(ConnectionResetError):
        other.recv(10)


def test_a_send_to_a_closed_peer_reports_it(pair: tuple[Wire, socket.socket]) -> None:
    wire, other = pair
    other.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    other.close()
    assert wire.next_event(time.monotonic() + 2) == Closed("rst", wire.closed.at)  # type: ignore[union-attr]
    assert not wire.send(PDataTfPDU().encode() * 1000)
    assert wire.send_error is not None


def test_listener_times_out() -> None:
    listener = Listener()
    with pytest.raises(PeerError, match="no TCP connection"):
        listener.accept(0.01)
    listener.close()


def test_rules_check_source_and_reason() -> None:
    abort = AAbortPDU(2, 2).encode()
    assert matches(abort, (Pdu("A-ABORT", source=(2,), reason=(0, 1, 2)),))
    assert not matches(abort, (Pdu("A-ABORT", source=(0,)),))
    assert not matches(abort, (Pdu("A-ABORT", source=(2,), reason=(4,)),))
    assert frame_text(b"\x09\x00\x00\x00\x00\x00") == "unknown PDU type 0x09 (6 bytes)"


@pytest.mark.parametrize("name", ["Sta6-Evt10", "Sta4-Evt2", "Sta13-Evt18", "Sta9-Evt14"])
def test_scripts_are_data_with_evaluable_reprs(name: str) -> None:
    from netdicom2 import items, pdu

    state, event = name.split("-")
    planned = plan(cell(state, event), "provider", Params())
    assert isinstance(planned, S.Script)
    scope = {**vars(S), **vars(pdu), **vars(items)}
    assert eval(render(planned), scope) == planned
