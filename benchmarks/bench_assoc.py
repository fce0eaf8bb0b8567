"""One requestor process: N sequential association cycles (associate, C-ECHO, release).

``python bench_assoc.py IMPL PORT N [WARMUP]`` with IMPL one of ``netdicom2`` (Association
over DULServiceProvider, in this process), ``pynetdicom`` (AE.associate, in this process) or
``bare`` (recorded bytes, bare.py). Prints one JSON object: per-cycle seconds for the
association establishment (RQ sent → AC received) and the whole cycle, and CPU seconds.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable

Cycle = Callable[[], tuple[float, float]]


def netdicom2_cycle(port: int) -> Cycle:
    """netdicom2's requestor: a new Association (and provider thread) per cycle."""
    from netdicom2.app_scu import Association
    from netdicom2.dimse import VERIFICATION_SOP_CLASS, c_echo_rq

    contexts = [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])]

    def cycle() -> tuple[float, float]:
        start = time.perf_counter()
        assoc = Association(("127.0.0.1", port), contexts, timeout=10)
        assoc.associate()
        associated = time.perf_counter()
        assoc.send_message(assoc.context_for(VERIFICATION_SOP_CLASS), c_echo_rq(1))
        if assoc.receive_command().status != 0:
            raise RuntimeError("C-ECHO failed")
        assoc.release()
        return associated - start, time.perf_counter() - start

    return cycle


def pynetdicom_cycle(port: int) -> Cycle:
    """pynetdicom's requestor: AE.associate, send_c_echo, release."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title="PYNETDICOM-SCU")
    ae.add_requested_context(Verification)

    def cycle() -> tuple[float, float]:
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port)
        if not assoc.is_established:
            raise RuntimeError("pynetdicom: association not established")
        associated = time.perf_counter()
        status = assoc.send_c_echo()
        if not status or status.Status != 0:
            raise RuntimeError("C-ECHO failed")
        assoc.release()
        return associated - start, time.perf_counter() - start

    return cycle


def bare_cycle(port: int) -> Cycle:
    """The recorded exchange on a bare socket (bare.py)."""
    import bare

    requests, _ = bare.recorded_exchange()
    buf = bytearray(1 << 16)
    return lambda: bare.cycle(port, requests, buf)


IMPLS: dict[str, Callable[[int], Cycle]] = {
    "netdicom2": netdicom2_cycle,
    "pynetdicom": pynetdicom_cycle,
    "bare": bare_cycle,
}


def main(argv: list[str]) -> int:
    """Run the cycles and print the JSON result."""
    impl, port, count = argv[0], int(argv[1]), int(argv[2])
    warmup = int(argv[3]) if len(argv) > 3 else max(3, count // 20)
    cycle = IMPLS[impl](port)
    for _ in range(warmup):
        cycle()
    associate: list[float] = []
    whole: list[float] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(count):
        a, c = cycle()
        associate.append(a)
        whole.append(c)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    print(json.dumps({"associate": associate, "cycle": whole, "cpu": cpu}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
