"""pynetdicom's SCP for the benchmarks: Verification + storage, data sets discarded.

``python pynetdicom_scp.py PORT [MAX_PDU]``; binds 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import sys

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def on_store(event: object) -> int:
    """Success without looking at the data set (no decoding)."""
    return 0x0000


def main(argv: list[str]) -> int:
    """Serve until killed."""
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title="PYNETDICOM")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 50
    if len(argv) > 1:
        ae.maximum_pdu_size = int(argv[1])
    ae.start_server(
        ("127.0.0.1", int(argv[0])), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
