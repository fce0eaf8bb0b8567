"""Targets ``HOST:PORT`` and ``--listen PORT``: any DICOM UL peer, black box.

Only what the wire shows is checked: the PDUs the peer sends (type, source, reason), when it
closes the transport (FIN or RST) and when it stays silent. As an association acceptor the
peer is reached by connecting to it (optionally through a ``connector`` callable, e.g. into a
network namespace); as an association requestor it connects to our listener, started per
cell by an optional ``spawn`` command.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Sequence

from netdicom2.conformance.peer import Address, Closed, Connector, Frame, Listener, PeerError, Wire
from netdicom2.conformance.runner import StepFailed, WireSteps
from netdicom2.conformance.script import Accept, Connect, ElapseArtim, Script, Step
from netdicom2.exceptions import NetDicomError
from netdicom2.pdu import AAbortPDU, AAssociateAcPDU, AAssociateRjPDU, AAssociateRqPDU, decode
from netdicom2.pdu import AReleaseRqPDU as _ReleaseRq

__all__ = ["RemoteDriver", "probe_acceptor", "probe_requestor"]


class Spawner:
    """Starts the requestor under test for one cell (``{port}`` in argv is our port)."""

    def __init__(self, argv: Sequence[str], port: int) -> None:
        """Remember the command."""
        self.argv = [arg.replace("{port}", str(port)) for arg in argv]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run the command in the background, output discarded."""
        self.stop()
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        """End the command if it still runs."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RemoteDriver(WireSteps):
    """Runs a wire-only script against a peer at an address or from a listener."""

    def __init__(
        self,
        script: Script,
        *,
        address: Address | None = None,
        connector: Connector | None = None,
        listener: Listener | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        """Where the peer is: ``address`` (acceptor) or ``listener`` (requestor)."""
        super().__init__()
        self.script = script
        self.address = address
        self.connector = connector
        self.listener = listener
        self.spawner = spawner
        self.aftermath_window = min(script.artim + 1.0, 3.0)

    def step(self, step: Step) -> str:
        """Perform one wire step."""
        note = self.wire_step(step)
        if note is not None:
            return note
        if isinstance(step, Connect):
            if self.address is None:
                raise StepFailed("no address to connect to")
            self.wire = Wire.connect(self.address, self.connector)
            return f"connected to {self.address[0]}:{self.address[1]}"
        if isinstance(step, Accept):
            if self.listener is None:
                raise StepFailed("not listening")
            if self.spawner is not None:
                self.spawner.start()
            self.wire = Wire(self.listener.accept(step.within))
            return "the peer connected"
        if isinstance(step, ElapseArtim):
            return "waiting for the peer's ARTIM on the wall clock"
        raise StepFailed(f"step {type(step).__name__} needs a white-box target")

    def close(self) -> None:
        """Close our end; end a spawned requestor."""
        self.close_wire()
        if self.spawner is not None:
            self.spawner.stop()


def _identity(pdu: AAssociateRqPDU | AAssociateAcPDU) -> dict[str, str]:
    """Implementation class UID and version name from user information (PS3.7 D.3.3.2)."""
    return {
        "implementation_class_uid": pdu.implementation_class_uid or "",
        "implementation_version_name": pdu.implementation_version_name or "",
    }


def _next_pdu(wire: Wire, within: float) -> bytes:
    """The next whole PDU, or PeerError."""
    event = wire.next_event(time.monotonic() + within)
    if isinstance(event, Frame):
        return event.data
    if isinstance(event, Closed):
        raise PeerError(f"the peer closed the transport ({event.how})")
    raise PeerError(f"nothing from the peer within {within} s")


def probe_acceptor(
    address: Address, connector: Connector | None, rq: AAssociateRqPDU
) -> dict[str, str]:
    """Associate once and release (PS3.8 §7.1, §7.2): who the peer says it is."""
    wire = Wire.connect(address, connector)
    try:
        wire.send(rq.encode())
        answer = decode(_next_pdu(wire, 5.0))
        if isinstance(answer, AAssociateRjPDU):
            return {"error": f"the peer rejected the association: {answer!r}"}
        if not isinstance(answer, AAssociateAcPDU):
            return {"error": f"unexpected answer {answer!r}"}
        wire.send(_ReleaseRq().encode())
        with contextlib.suppress(PeerError, NetDicomError):
            _next_pdu(wire, 1.0)  # an unanswered release is Sta6-Evt12's to judge, not ours
        return _identity(answer)
    except (PeerError, NetDicomError) as exc:
        return {"error": str(exc)}
    finally:
        wire.close()


def probe_requestor(listener: Listener, spawner: Spawner | None) -> dict[str, str]:
    """Take one A-ASSOCIATE-RQ and reject it (transient, PS3.8 Table 9-21)."""
    if spawner is not None:
        spawner.start()
    try:
        wire = Wire(listener.accept(30.0))
    except PeerError as exc:
        return {"error": str(exc)}
    try:
        rq = decode(_next_pdu(wire, 5.0))
        if not isinstance(rq, AAssociateRqPDU):
            return {"error": f"unexpected first PDU {rq!r}"}
        wire.send(AAssociateRjPDU(result=2, source=1, reason_diag=1).encode())
        return _identity(rq)
    except (PeerError, NetDicomError) as exc:
        wire.send(AAbortPDU().encode())
        return {"error": str(exc)}
    finally:
        wire.close()
        if spawner is not None:
            spawner.stop()
