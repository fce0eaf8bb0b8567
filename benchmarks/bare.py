"""The physical limit: bare Python sockets exchanging pre-recorded PDUs, decoding nothing.

``python bare.py serve PORT`` answers each connection's A-ASSOCIATE-RQ, P-DATA-TF and
A-RELEASE-RQ with recorded A-ASSOCIATE-AC, C-ECHO-RSP and A-RELEASE-RP bytes (it only reads the
6-byte PDU headers to frame, PS3.8 §9.3.1) and times each connection from accept() to the
requestor's close: the association as this server sees it, free of the requestor's process
start-up (``served(PORT)`` collects the times). ``python bare.py recv PORT`` drains connections
with ``recv_into`` a reusable buffer; ``python bare.py send PORT BYTES CHUNK`` pushes BYTES with
``sendall`` of CHUNK-sized slices and prints the MB/s and CPU seconds as JSON.
"""

from __future__ import annotations

import json
import resource
import socket
import struct
import sys
import time

from netdicom2.acse import build_rq, negotiate
from netdicom2.dimse import VERIFICATION_SOP_CLASS, c_echo_rq, c_echo_rsp, encode_command
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AReleaseRpPDU, AReleaseRqPDU, PDataTfPDU

_HEADER = struct.Struct(">BxI")
# Not a PS3.8 PDU type: a connection opening with it asks the bare server for its timings.
QUERY = 0xFF
IMPLICIT_LE = "1.2.840.10008.1.2"


def recorded_exchange() -> tuple[list[bytes], dict[int, bytes]]:
    """The requestor's three PDUs, and the acceptor's answer by received PDU type."""
    rq = build_rq("ANY-SCP", "BARE-SCU", [(VERIFICATION_SOP_CLASS, [IMPLICIT_LE])])
    ac, _ = negotiate(rq)
    echo = c_echo_rq(1)
    rq_pdata = PDataTfPDU([PresentationDataValueItem(1, 0x03, encode_command(echo))]).encode()
    rsp_pdata = PDataTfPDU(
        [PresentationDataValueItem(1, 0x03, encode_command(c_echo_rsp(echo)))]
    ).encode()
    requests = [rq.encode(), rq_pdata, AReleaseRqPDU().encode()]
    answers = {0x01: ac.encode(), 0x04: rsp_pdata, 0x05: AReleaseRpPDU().encode()}
    return requests, answers


def read_pdu(sock: socket.socket, buf: bytearray) -> int:
    """Read one whole PDU into buf (framed by its header only); its type, or 0 on EOF."""
    view = memoryview(buf)
    have = 0
    need = 6
    while have < need:
        got = sock.recv_into(view[have:])
        if not got:
            return 0
        have += got
        if need == 6 and have >= 6:
            need = 6 + _HEADER.unpack_from(buf)[1]
    return buf[0]


def nodelay(sock: socket.socket) -> socket.socket:
    """TCP_NODELAY on: each PDU leaves at once instead of waiting for the previous ACK."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve(port: int) -> None:
    """Answer association cycles one connection at a time, forever; time each one."""
    _, answers = recorded_exchange()
    buf = bytearray(1 << 16)
    times: list[float] = []  # accept() → EOF, per connection closed cleanly by its requestor
    with socket.create_server(("127.0.0.1", port), backlog=128) as listener:
        while True:
            conn, _ = listener.accept()
            start = time.perf_counter()
            with nodelay(conn):
                while pdu_type := read_pdu(conn, buf):
                    if pdu_type == QUERY:
                        conn.sendall(json.dumps(times).encode())
                        times.clear()
                        break
                    answer = answers.get(pdu_type)
                    if answer is None:
                        break
                    conn.sendall(answer)
                else:
                    times.append(time.perf_counter() - start)


def served(port: int) -> list[float]:
    """The bare server's connection times (s) since the previous call, which it then forgets."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_HEADER.pack(QUERY, 0))
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return [float(t) for t in json.loads(b"".join(chunks))]


def cycle(port: int, requests: list[bytes], buf: bytearray) -> tuple[float, float]:
    """One associate, C-ECHO, release with recorded bytes: (associate s, whole cycle s)."""
    start = time.perf_counter()
    with nodelay(socket.create_connection(("127.0.0.1", port))) as sock:
        sock.sendall(requests[0])
        read_pdu(sock, buf)
        associated = time.perf_counter()
        for request in requests[1:]:
            sock.sendall(request)
            read_pdu(sock, buf)
    end = time.perf_counter()
    return associated - start, end - start


def drain(port: int) -> None:
    """Receive and discard every connection's bytes into one reusable buffer, forever."""
    buf = bytearray(1 << 20)
    with socket.create_server(("127.0.0.1", port), backlog=16) as listener:
        while True:
            conn, _ = listener.accept()
            with conn:
                while conn.recv_into(buf):
                    pass
                conn.sendall(b"k")  # tells the sender everything arrived


def send(port: int, total: int, chunk: int) -> dict[str, float]:
    """sendall `total` bytes in `chunk`-sized slices of one buffer; wait for the receiver."""
    data = memoryview(bytes(range(256)) * (chunk // 256 + 1))[:chunk]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sent = 0
        while sent < total:
            sock.sendall(data)
            sent += chunk
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return {"seconds": elapsed, "bytes": sent, "cpu": cpu}


def main(argv: list[str]) -> int:
    """serve PORT | recv PORT | send PORT BYTES CHUNK."""
    command, port = argv[0], int(argv[1])
    if command == "serve":
        serve(port)
    elif command == "recv":
        drain(port)
    elif command == "send":
        print(json.dumps(send(port, int(argv[2]), int(argv[3]))))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
