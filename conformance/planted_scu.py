"""A small scripted association requestor with switchable deviations (test peer, ``--listen``).

``python -m netdicom2.conformance.planted_scu PORT [DEVIATION ...]`` connects to
127.0.0.1:PORT, proposes
Verification, sends one C-ECHO and releases, like an echo SCU, following Table 9-10 for
everything a black-box matrix can drive on the requestor's side: AE-3/AE-4, AA-8 with source
2, AR-2 answered (AR-4), AR-6, the release collision (AR-8, AR-9, AR-3), AA-6/AA-7 and its
timer in Sta13, AR-3 closing with a FIN. Each name in ``DEVIATIONS`` plants one bug.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence

from netdicom2.acse import build_rq
from netdicom2.conformance.planted import _Closed, _decodes, _read_pdu
from netdicom2.dimse import c_echo_rq, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAbortPDU, AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU

__all__ = ["DEVIATIONS", "run"]

DEVIATIONS: dict[str, str] = {
    "reset-after-abort": "AA-8: a RST right after its A-ABORT",
    "close-on-collision": "AR-8: closes on an A-RELEASE-RQ in Sta7 instead of answering",
    "rst-after-release": "AR-3: closes with a RST, not a FIN",
    "abort-source-0": "AA-8 sends an A-ABORT of source 0 (service-user)",
    "abort-on-data-in-sta7": "a P-DATA-TF in Sta7 is aborted (AA-8) instead of indicated (AR-6)",
}
_VERIFICATION = "1.2.840.10008.1.1"
_IMPLICIT = "1.2.840.10008.1.2"


def run(port: int, deviations: Iterable[str] = (), *, timer: float = 0.5) -> None:
    """One association against 127.0.0.1:port (Table 9-10 from Sta4)."""
    bugs = frozenset(deviations)
    with contextlib.suppress(_Closed, OSError), socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(build_rq("ANY-SCP", "PLANTED-SCU", [(_VERIFICATION, [_IMPLICIT])]).encode())
        _Requestor(s, bugs, timer).loop()


class _Requestor:
    """The requestor's side of one association."""

    def __init__(self, sock: socket.socket, bugs: frozenset[str], timer: float) -> None:
        """Sta5 after AE-2 (our A-ASSOCIATE-RQ sent)."""
        self.sock, self.bugs, self.timer = sock, bugs, timer
        self.state = "Sta5"
        self.deadline: float | None = time.monotonic() + 5.0  # the ACSE wait for the answer

    def loop(self) -> None:
        """Read and act until the association and its connection are over."""
        while True:
            pdu = _read_pdu(self.sock, self.deadline)
            if pdu is None:  # Evt18 in Sta13 (AA-2) or no answer (the user aborts, AA-1)
                if self.state != "Sta13":
                    self.sock.sendall(AAbortPDU(0, 0).encode())
                return
            before = self.state
            self.state = self._event(pdu[0], pdu)
            if self.state == "Sta1":
                return
            if self.state == "Sta13" and before != "Sta13":  # ARTIM started
                self.deadline = time.monotonic() + self.timer
            elif self.state != "Sta13":
                self.deadline = None

    def _abort(self) -> str:
        """AA-8: A-ABORT (source 2), ARTIM, Sta13."""
        source = 0 if "abort-source-0" in self.bugs else 2
        self.sock.sendall(AAbortPDU(source, 2).encode())
        if "reset-after-abort" in self.bugs:
            self._reset()
        return "Sta13"

    def _reset(self) -> None:
        """Close with a RST (SO_LINGER 0) and stop."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise _Closed

    def _event(self, kind: int, pdu: bytes) -> str:
        """One received PDU in the current state (PS3.8 Table 9-10)."""
        state, valid = self.state, kind in range(1, 8) and _decodes(pdu)
        if kind == 0x07 and valid:
            return "Sta1"  # AA-3 (or AA-2 in Sta13): close
        if state == "Sta13":
            if kind == 0x01 or not valid:
                self.sock.sendall(AAbortPDU(2, 2).encode())  # AA-7
            return "Sta13"  # AA-6
        if not valid:
            return self._abort()  # Evt19: AA-8
        if state == "Sta5":
            if kind == 0x02:  # AE-3, then the user's C-ECHO (DT-1)
                echo = encode_command(c_echo_rq(1))
                self.sock.sendall(PDataTfPDU([PresentationDataValueItem(1, 0x03, echo)]).encode())
                return "Sta6"
            if kind == 0x03:
                return "Sta1"  # AE-4: close
            return self._abort()
        if state == "Sta6":
            if kind == 0x04:  # DT-2, then the user's release (AR-1)
                self.sock.sendall(AReleaseRqPDU().encode())
                return "Sta7"
            if kind == 0x05:  # AR-2, then the user's AR-4
                self.sock.sendall(AReleaseRpPDU().encode())
                return "Sta13"
            return self._abort()
        if state == "Sta7":
            if kind == 0x04:
                if "abort-on-data-in-sta7" in self.bugs:
                    return self._abort()
                return "Sta7"  # AR-6
            if kind == 0x06:
                return self._released()
            if kind == 0x05:  # AR-8 (Sta9), the user's AR-9: A-RELEASE-RP, Sta11
                if "close-on-collision" in self.bugs:
                    return "Sta1"
                self.sock.sendall(AReleaseRpPDU().encode())
                return "Sta11"
            return self._abort()
        if kind == 0x06:  # Sta11: AR-3
            return self._released()
        return self._abort()

    def _released(self) -> str:
        """AR-3: the release is complete, close the transport (a FIN)."""
        if "rst-after-release" in self.bugs:
            self._reset()
        return "Sta1"


def main(argv: Sequence[str]) -> int:
    """``PORT [DEVIATION ...]``: one association."""
    unknown = set(argv[1:]) - set(DEVIATIONS)
    if not argv or unknown:
        print(f"usage: PORT [{' | '.join(DEVIATIONS)}] ...", file=sys.stderr)
        return 2
    run(int(argv[0]), argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
