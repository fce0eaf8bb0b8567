"""One sender process: netdicom2's requestor stores Part 10 files in one association.

``python bench_store.py PORT [--max-operations N] FILE...`` runs ``netdicom2.app_scu.store``
(associate, one C-STORE per file with the data set fragmented to the acceptor's maximum PDU
length, release) and prints one JSON object: seconds from the A-ASSOCIATE request to the
A-RELEASE confirmation, data-set bytes sent and this process's CPU seconds over the same span.
With ``--max-operations N`` it proposes an Asynchronous Operations Window (PS3.7 D.3.3.3) and
keeps up to the N C-STOREs the acceptor grants outstanding.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from netdicom2.app_scu import store
from netdicom2.dimse import read_part10


def main(argv: list[str]) -> int:
    """Store the files and print the JSON result."""
    port, names = int(argv[0]), argv[1:]
    window = 1
    if names[:1] == ["--max-operations"]:
        window, names = int(names[1]), names[2:]
    files = [Path(name) for name in names]
    payload = 0
    for path in files:
        with path.open("rb") as handle:
            payload += path.stat().st_size - read_part10(handle.read(1 << 16)).dataset_offset
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    statuses = store(("127.0.0.1", port), files, timeout=60, max_operations=window)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    if any(statuses):
        raise SystemExit(f"C-STORE failed: {statuses[:5]}")
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    print(json.dumps({"seconds": elapsed, "bytes": payload, "cpu": cpu}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
