"""Variants the matrix does not cover, on targets local and provider (same scripts).

Each is a Table 9-10 cell reached or injected another way: Evt17 by a reset, AE-6's reject
branch, a PDU one byte at a time, two PDUs in one TCP segment.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading

import pytest

from netdicom2.acse import build_rq
from netdicom2.conformance.local import LocalDriver
from netdicom2.conformance.provider import ProviderDriver
from netdicom2.conformance.recipes import ECHO, Params, association_rq, plan
from netdicom2.conformance.runner import Run, execute
from netdicom2.conformance.script import (
    Expect,
    ExpectArtim,
    ExpectTransition,
    Pdu,
    Reset,
    Script,
    Send,
    UserExpect,
    UserExpectNothing,
    UserSend,
)
from netdicom2.conformance.table import PROVIDER_REASONS, cell
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.fsm import State
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAbortPDU, AReleaseRqPDU, PDataTfPDU

KINDS = ["local", "provider"]


@pytest.fixture(autouse=True)
def _quiet_provider(caplog: pytest.LogCaptureFixture) -> None:
    """Lost transports are expected here; the provider logs them as warnings."""
    caplog.set_level(logging.ERROR, logger="netdicom2")


def _base(state: str, event: str) -> Script:
    """The matrix script of a cell, to vary."""
    planned = plan(cell(state, event), "white", Params())
    assert isinstance(planned, Script)
    return planned


def _run(kind: str, script: Script) -> Run:
    """Run a script on a white-box target; fail with the log."""
    driver = LocalDriver(script) if kind == "local" else ProviderDriver(script)
    run = execute(script, driver)
    assert run.ok, "\n".join([run.message, *run.log])
    return run


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_sta6_reset_is_evt17_aa4(kind: str) -> None:
    # PS3.8 Table 9-10 Sta6/Evt17 → AA-4, the transport lost by a RST (SO_LINGER 0).
    base = _base("Sta6", "Evt17")
    expect = (ExpectTransition("Evt17", "AA-4", ("Sta1",)), UserExpect(Pdu("A-ABORT", (2,))))
    _run(kind, dataclasses.replace(base, inject=(Reset(),), expect=expect))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_sta2_rq_without_protocol_version_1_is_rejected_by_the_provider(kind: str) -> None:
    # PS3.8 Table 9-6 AE-6, "otherwise" branch: RJ (1, 2, 2) and ARTIM, Sta13, no indication.
    base = _base("Sta2", "Evt6")
    rq = dataclasses.replace(association_rq(Params()), protocol_version=0x0002)
    expect = (
        ExpectTransition("Evt6", "AE-6", ("Sta13",), ("stop", "send A-ASSOCIATE-RJ", "start")),
        Expect((Pdu("A-ASSOCIATE-RJ", source=(2,), reason=(2,)),)),
        UserExpectNothing(0.05),
        ExpectArtim("start"),
    )
    _run(kind, dataclasses.replace(base, inject=(Send(rq),), expect=expect))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_sta2_rq_one_byte_at_a_time(kind: str) -> None:
    # PS3.8 §9.3.1: the PDU-length frames the PDU, however TCP delivers it.
    base = _base("Sta2", "Evt6")
    rq = association_rq(Params())
    sizes = (1,) * 40
    slow = Send(rq, segments=sizes, delay=0.001)
    _run(kind, dataclasses.replace(base, inject=(slow,)))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_sta6_two_pdus_in_one_segment(kind: str) -> None:
    # Sta6/Evt10 → DT-2 (Sta6), then Sta6/Evt12 → AR-2 (Sta8), from one write.
    base = _base("Sta6", "Evt10")
    both = Send(ECHO.encode() + AReleaseRqPDU().encode())
    expect = (
        ExpectTransition("Evt10", "DT-2", ("Sta6",)),
        ExpectTransition("Evt12", "AR-2", ("Sta8",)),
        UserExpect(Pdu("P-DATA-TF")),
        UserExpect(Pdu("A-RELEASE-RQ")),
    )
    _run(kind, dataclasses.replace(base, inject=(both,), expect=expect))


@pytest.mark.timeout(30)
def test_provider_survives_a_connect_that_completes_after_an_abort_in_sta4() -> None:
    # PS3.8 Table 9-10 Sta4/Evt15 → AA-2 (Sta1). The TRANSPORT CONNECT already issued may
    # still complete; that connection belongs to no association and must just be closed.
    listener = socket.create_server(("127.0.0.1", 0))
    gate = threading.Event()

    def connector(address: tuple[str, int]) -> socket.socket:
        gate.wait(5)
        return socket.create_connection(listener.getsockname()[:2])

    dul = DULServiceProvider(address=("127.0.0.1", 1), connect=connector, artim_timeout=1)
    dul.start()
    rq = build_rq("ANY-SCP", "ME", [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    try:
        states = []
        dul.send(rq)
        states.append(dul.state)
        dul.send(AAbortPDU())
        states.append(dul.state)
        assert states == [State.Sta4, State.Sta1]
        gate.set()
        listener.accept()[0].close()
        dul.join(timeout=1.0)  # returns at once if the event loop died
        assert dul.is_alive()
        dul.send(rq)  # a new association must still be possible
        assert dul.state in (State.Sta4, State.Sta5)
    finally:
        gate.set()
        dul.kill()
        listener.close()


TRANSPORT_STATES = [f"Sta{i}" for i in (2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", TRANSPORT_STATES)
def test_a_reset_is_evt17_in_every_state_with_a_transport(kind: str, state: str) -> None:
    # PS3.8 §9.1.4 (e): a transport failure is Evt17, whatever the state (Table 9-10 row 17).
    base = _base(state, "Evt17")
    spec = cell(state, "Evt17").spec
    assert spec is not None
    expect = (ExpectTransition("Evt17", spec.name, spec.next_states),)
    _run(kind, dataclasses.replace(base, inject=(Reset(),), expect=expect))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_sta6_pdata_longer_than_announced_is_evt19_aa8(kind: str) -> None:
    # PS3.8 Annex D.1: a P-DATA-TF longer than the maximum length we announced (16384 in
    # our A-ASSOCIATE-AC) is a protocol error: Evt19 → AA-8, A-ABORT source 2.
    base = _base("Sta6", "Evt19")
    big = PDataTfPDU([PresentationDataValueItem(1, 0x02, bytes(20000))])
    expect = (
        ExpectTransition("Evt19", "AA-8", ("Sta13",)),
        Expect((Pdu("A-ABORT", source=(2,), reason=PROVIDER_REASONS),)),
        UserExpect(Pdu("A-ABORT", source=(2,))),
    )
    _run(kind, dataclasses.replace(base, inject=(Send(big),), expect=expect))


@pytest.mark.timeout(30)
def test_provider_cuts_pdata_to_the_peers_maximum_length() -> None:
    # PS3.8 Annex D.1: no P-DATA-TF sent may exceed the peer's maximum length (16384 in our
    # A-ASSOCIATE-RQ); a 40000-byte fragment goes out as three PDUs (Sta6/Evt9 → DT-1 each).
    base = _base("Sta6", "Evt9")
    big = PDataTfPDU([PresentationDataValueItem(1, 0x02, bytes(40000))])
    small = Expect((Pdu("P-DATA-TF", max_length=16384),))
    _run("provider", dataclasses.replace(base, inject=(UserSend(big),), expect=(small,) * 3))
