"""The wire checks of many answers in order and of an idle association, against a raw socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from netdicom2 import items, pdu
from netdicom2.conformance import script as S
from netdicom2.conformance.peer import Listener, Wire
from netdicom2.conformance.recipes import Params, plans
from netdicom2.conformance.runner import Inconclusive, NotApplicable, StepFailed, WireSteps
from netdicom2.conformance.script import ExpectIdleEnd, ExpectResponses, Step, render
from netdicom2.conformance.table import cell
from netdicom2.dimse import c_echo_rq, c_echo_rsp, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAbortPDU, AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU


class _Steps(WireSteps):
    """WireSteps over a given wire, in the expect phase."""

    def __init__(self, wire: Wire) -> None:
        super().__init__()
        self.wire, self.phase = wire, "expect"

    def step(self, step: Step) -> str:
        note = self.wire_step(step)
        assert note is not None
        return note

    def close(self) -> None:
        self.close_wire()


@pytest.fixture
def pair() -> Iterator[tuple[_Steps, socket.socket]]:
    """The checks over a wire, and the raw socket at its other end (the IUT)."""
    listener = Listener()
    wire = Wire(socket.create_connection(listener.address))
    other = listener.accept(2.0)
    steps = _Steps(wire)
    yield steps, other
    steps.close()
    other.close()
    listener.close()


def _rsp(message_id: int) -> bytes:
    return encode_command(c_echo_rsp(c_echo_rq(message_id)))


def _pdata(*pdvs: tuple[int, bytes]) -> bytes:
    return PDataTfPDU([PresentationDataValueItem(1, ch, data) for ch, data in pdvs]).encode()


def test_answers_in_order_pass_whatever_their_pdus(pair: tuple[_Steps, socket.socket]) -> None:
    # Two responses in one P-DATA-TF, the third in two fragments (PS3.8 Annex E).
    steps, other = pair
    third = _rsp(3)
    other.sendall(_pdata((0x03, _rsp(1)), (0x03, _rsp(2))) + _pdata((0x01, third[:20])))
    other.sendall(_pdata((0x03, third[20:])))
    assert "all 3 requests answered in order" in steps.step(ExpectResponses(1, 3, within=2.0))


def test_answers_out_of_order_fail(pair: tuple[_Steps, socket.socket]) -> None:
    steps, other = pair
    other.sendall(_pdata((0x03, _rsp(2))) + _pdata((0x03, _rsp(1))))
    with pytest.raises(StepFailed, match="response 1 answers message 2, expected 1"):
        steps.step(ExpectResponses(1, 2, within=2.0))


def test_missing_answers_fail_and_say_how_many_came(pair: tuple[_Steps, socket.socket]) -> None:
    steps, other = pair
    other.sendall(_pdata((0x03, _rsp(1))))
    with pytest.raises(StepFailed, match=r"1 of 3 requests answered within 0\.3 s"):
        steps.step(ExpectResponses(1, 3, within=0.3))


def test_a_provider_abort_fails_a_user_abort_is_not_judged(
    pair: tuple[_Steps, socket.socket],
) -> None:
    steps, other = pair
    other.sendall(_pdata((0x03, _rsp(1))) + AAbortPDU(0, 0).encode())
    with pytest.raises(Inconclusive, match=r"its user aborted .*; 1 of 2 requests answered"):
        steps.step(ExpectResponses(1, 2, within=2.0))
    other.sendall(AAbortPDU(2, 2).encode())
    with pytest.raises(StepFailed, match=r"got A-ABORT\(source=2, reason=2\); 0 of 1"):
        steps.step(ExpectResponses(1, 1, within=2.0))


def test_an_idle_release_is_answered_and_must_close(pair: tuple[_Steps, socket.socket]) -> None:
    # AR-1 from Sta6, then our A-RELEASE-RP: AR-3, an orderly close.
    steps, other = pair
    got: list[bytes] = []

    def iut() -> None:  # the IUT in Sta7: reads our A-RELEASE-RP, then closes (AR-3)
        other.settimeout(2.0)
        got.append(other.recv(100))
        other.close()

    reader = threading.Thread(target=iut)
    other.sendall(AReleaseRqPDU().encode())
    reader.start()
    note = steps.step(ExpectIdleEnd(2.0))
    reader.join(3.0)
    assert got == [AReleaseRpPDU().encode()]
    assert "its user released after" in note and "closed (FIN)" in note


def test_an_idle_abort_of_source_2_fails(pair: tuple[_Steps, socket.socket]) -> None:
    steps, other = pair
    other.sendall(AAbortPDU(2, 0).encode())
    with pytest.raises(StepFailed, match="no provider abort"):
        steps.step(ExpectIdleEnd(2.0))


def test_an_idle_association_kept_open_is_not_judged(pair: tuple[_Steps, socket.socket]) -> None:
    steps, _ = pair
    start = time.monotonic()
    with pytest.raises(NotApplicable, match=r"kept the idle association open for 0\.2 s"):
        steps.step(ExpectIdleEnd(0.2))
    assert time.monotonic() - start < 1.0


def test_the_new_cases_are_evaluable_scripts() -> None:
    scope = {**vars(S), **vars(pdu), **vars(items)}
    params = Params(artim=2.0, max_wait=3.0)
    for name, kind in (
        ("Sta6-Evt10", "remote"),
        ("Sta6-Evt12", "remote"),
        ("Sta6-Evt15", "remote"),
        ("Sta7-Evt10", "remote-requestor"),
    ):
        state, event = name.split("-")
        planned = plans(cell(state, event), kind, params)  # type: ignore[arg-type]
        assert isinstance(planned, list) and planned
        for script in planned:
            assert eval(render(script), scope) == script
    idle = plans(cell("Sta6", "Evt15"), "remote-requestor", params)
    assert not isinstance(idle, list) and idle.verdict == "na"  # a requestor's user event
