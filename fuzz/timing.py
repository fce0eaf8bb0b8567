"""ARTIM timing oracles (PS3.8 §9.1.5, Table 9-10 Evt18 in Sta2 and Sta13 → AA-2).

* ``fake_clock``: the sans-I/O core on a fake clock. A silent peer in Sta2, or a peer that does
  not close in Sta13, is dropped exactly at the deadline and not a tick before; a peer that acts
  before the deadline is never dropped.
* ``wall_clock``: the same over a real socket with our threaded provider; the measured error
  (close time minus ARTIM) is returned so that tests can bound it and reports can state it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from netdicom2.connection import CloseTransport, Connection, Effect, SendPDU
from netdicom2.dulprovider import DULServiceProvider
from netdicom2.fuzz.strategies import setup_rq
from netdicom2.fuzz.wire import Peer

__all__ = ["ArtimOutcome", "fake_clock", "wall_clock"]

#: Where the peer waits: Sta2 (connected, no A-ASSOCIATE-RQ yet) or Sta13 (after our RJ).
PLACES = ("Sta2", "Sta13")


@dataclass
class ArtimOutcome:
    """When the provider dropped the connection, relative to when ARTIM started."""

    place: str
    artim: float
    delay: float  # when the peer acted (sent RQ / closed); inf = never
    dropped_after: float | None  # None: not dropped by the provider
    early_probe_effects: int = 0  # effects of handle_timer just before the deadline (fake)

    @property
    def error(self) -> float | None:
        """Measured drop time minus ARTIM."""
        return None if self.dropped_after is None else self.dropped_after - self.artim


def _closes(effects: list[Effect]) -> bool:
    return any(isinstance(e, CloseTransport) for e in effects)


def fake_clock(place: str, artim: float, delay: float, start: float = 1000.0) -> ArtimOutcome:
    """Sans-I/O core: a peer silent for ``delay`` seconds (then acting) in ``place``."""
    conn = Connection(artim_timeout=artim)
    conn.transport_accepted(start)
    t0 = start
    if place == "Sta13":
        effects = conn.receive_bytes(setup_rq(version=0).encode(), start)  # AE-6 rejects
        assert any(isinstance(e, SendPDU) for e in effects) and conn.state.value == "Sta13"
    deadline = conn.timer_deadline
    assert deadline is not None
    # Never before the deadline: the last representable instant before it does nothing.
    before = conn.handle_timer(deadline - max(1e-9, deadline * 1e-15))
    outcome = ArtimOutcome(place, artim, delay, None, len(before))
    if delay < artim:
        now = t0 + delay
        if place == "Sta2":
            conn.receive_bytes(setup_rq().encode(), now)  # AE-6: ARTIM stopped
        else:
            conn.transport_closed(now)  # AR-5: ARTIM stopped
        later = conn.handle_timer(t0 + 10 * artim + 10)
        if _closes(later):
            outcome.dropped_after = 10 * artim + 10
        return outcome
    if _closes(conn.handle_timer(deadline)):
        outcome.dropped_after = deadline - t0
    return outcome


def wall_clock(
    place: str, artim: float, delay: float | None, *, slack: float = 2.0
) -> ArtimOutcome:
    """Our provider over loopback: a peer silent for ``delay`` s (None: for ever) in ``place``."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    t0 = time.monotonic()
    dul = DULServiceProvider(server, artim_timeout=artim)
    dul.start()
    peer = Peer(client, response_timeout=artim + slack)
    try:
        if place == "Sta13":
            peer.send(setup_rq(version=0).encode())
            if peer.expect("RJ") is None:
                raise AssertionError("the provider did not reject protocol version 0")
            t0 = peer.times[-1]
        outcome = ArtimOutcome(place, artim, float("inf") if delay is None else delay, None)
        if delay is not None:
            peer.wait(delay)  # reads meanwhile: a drop before the deadline would show here
            if peer.end is None and place == "Sta2":
                peer.send(setup_rq().encode())  # AE-6 stops ARTIM
                peer.wait(artim + 0.2)
                if peer.end is not None and peer.t_close is not None:
                    outcome.dropped_after = peer.t_close - t0
                return outcome
            if peer.end is None:
                peer.close_ours("fin")
                peer.read_until(time.monotonic() + slack)
                return outcome  # we closed first: AR-5, nothing to time
        peer.read_until(t0 + artim + slack)
        if peer.end is not None and peer.t_close is not None:
            outcome.dropped_after = peer.t_close - t0
        return outcome
    finally:
        if peer.our_close != "rst":
            peer.close()
        dul.kill()
        dul.join(artim + slack)
