"""Side-by-side PDU codec timings: netdicom2, pynetdicom, scapy and a bare struct parser.

Decode and encode of an A-ASSOCIATE-RQ (3 presentation contexts + user information) and of a
P-DATA-TF carrying one 16 KiB PDV. Medians of ``timeit.repeat``; ratios are other/netdicom2
(> 1 means netdicom2 is faster). Run: ``python benchmarks/bench_codec.py [--quick]``.

Goals (same run): >= 4x pynetdicom on A-ASSOCIATE-RQ decode, >= 1.5x on P-DATA-TF decode and
on both encodes.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import timeit
import warnings
from collections.abc import Callable
from typing import Any

from netdicom2 import pdu as nd
from netdicom2.items import (
    ApplicationContextItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    UserInformationItem,
)

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def sample_rq() -> bytes:
    """A typical SCU request: 3 contexts with 2 transfer syntaxes each, 3 user sub-items."""
    contexts = [
        PresentationContextItemRQ(2 * i + 1, uid, [EXPLICIT_LE, IMPLICIT_LE])
        for i, uid in enumerate(
            ("1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.2.2.1")
        )
    ]
    info = UserInformationItem(
        [
            MaximumLengthSubItem(16384),
            ImplementationClassUIDSubItem("1.2.826.0.1.3680043.9.3811.2.0.0"),
            ImplementationVersionNameSubItem("NETDICOM2_010"),
        ]
    )
    pdu = nd.AAssociateRqPDU("ANY-SCP", "BENCH-SCU", [ApplicationContextItem(), *contexts, info])
    return pdu.encode()


def sample_pdata() -> bytes:
    """One P-DATA-TF with a single 16 KiB data set PDV (last fragment)."""
    return nd.PDataTfPDU([PresentationDataValueItem(1, 0x02, bytes(range(256)) * 64)]).encode()


_ITEM = struct.Struct(">BBH")
_HEAD = struct.Struct(">BBI")
_PDV = struct.Struct(">IBB")


def bare_rq(data: bytes) -> int:
    """The floor: walk every item and sub-item header of an RQ, build no objects."""
    _, _, length = _HEAD.unpack_from(data)
    end = 6 + length
    off = 74
    count = 0
    while off < end:
        item_type, _, item_length = _ITEM.unpack_from(data, off)
        value = off + 4
        off = value + item_length
        if item_type in (0x20, 0x50):
            sub = value + (4 if item_type == 0x20 else 0)
            while sub < off:
                _, _, sub_length = _ITEM.unpack_from(data, sub)
                sub += 4 + sub_length
                count += 1
        count += 1
    return count


def bare_pdata(data: bytes) -> memoryview:
    """The floor: header and PDV header unpacked, fragment sliced as a memoryview."""
    view = memoryview(data)
    _, _, length = _HEAD.unpack_from(view)
    pdv_length, _, _ = _PDV.unpack_from(view, 6)
    return view[12 : min(10 + pdv_length, 6 + length)]


def median_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """Median µs per call over repeats."""
    times = timeit.repeat(func, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e6


def main() -> int:
    """Run all cases and print the table; exit 1 when a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    number, repeat = (200, 5) if args.quick else (2000, 9)

    # Third-party imports here so that importing this module stays cheap.
    from pynetdicom import pdu as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.contrib.dicom import DICOM

    rq, pdata = sample_rq(), sample_pdata()

    def pn_rq() -> object:
        p = pn.A_ASSOCIATE_RQ()
        p.decode(rq)
        return p

    def pn_pdata() -> object:
        p = pn.P_DATA_TF()
        p.decode(pdata)
        return p

    objects: dict[str, tuple[Any, Any]] = {
        "netdicom2": (nd.AAssociateRqPDU.decode(rq), nd.PDataTfPDU.decode(pdata)),
        "pynetdicom": (pn_rq(), pn_pdata()),
        "scapy": (DICOM(rq), DICOM(pdata)),
    }
    for packet in objects["scapy"]:
        packet.clear_cache()
    # Every encoder must reproduce the input, or the timing is meaningless.
    for name, (rq_obj, pd_obj) in objects.items():
        encoded = [bytes(o) if name == "scapy" else o.encode() for o in (rq_obj, pd_obj)]
        if encoded != [rq, pdata]:
            print(f"{name}: encode does not reproduce the input", file=sys.stderr)
            return 2

    cases: dict[str, dict[str, Callable[[], object]]] = {
        "A-ASSOCIATE-RQ decode": {
            "netdicom2": lambda: nd.decode(rq),
            "pynetdicom": pn_rq,
            "scapy": lambda: DICOM(rq),
            "bare struct": lambda: bare_rq(rq),
        },
        "P-DATA-TF decode": {
            "netdicom2": lambda: nd.decode(pdata),
            "pynetdicom": pn_pdata,
            "scapy": lambda: DICOM(pdata),
            "bare struct": lambda: bare_pdata(pdata),
        },
        "A-ASSOCIATE-RQ encode": {
            "netdicom2": objects["netdicom2"][0].encode,
            "pynetdicom": objects["pynetdicom"][0].encode,
            "scapy": lambda: bytes(objects["scapy"][0]),
        },
        "P-DATA-TF encode": {
            "netdicom2": objects["netdicom2"][1].encode,
            "pynetdicom": objects["pynetdicom"][1].encode,
            "scapy": lambda: bytes(objects["scapy"][1]),
        },
    }
    goals = {
        "A-ASSOCIATE-RQ decode": 4.0,
        "P-DATA-TF decode": 1.5,
        "A-ASSOCIATE-RQ encode": 1.5,
        "P-DATA-TF encode": 1.5,
    }
    print(f"RQ {len(rq)} bytes, P-DATA-TF {len(pdata)} bytes; median of {repeat}x{number}")
    header = f"{'case':<24}{'library':<13}{'µs/op':>10}{'vs netdicom2':>14}"
    print(header)
    print("-" * len(header))
    missed = []
    for case, funcs in cases.items():
        scapy_number = max(1, number // 20)
        results = {
            lib: median_us(func, scapy_number if lib == "scapy" else number, repeat)
            for lib, func in funcs.items()
        }
        ours = results["netdicom2"]
        for lib, value in results.items():
            print(f"{case:<24}{lib:<13}{value:>10.2f}{value / ours:>13.2f}x")
        ratio = results["pynetdicom"] / ours
        if ratio < goals[case]:
            missed.append(f"{case}: {ratio:.2f}x pynetdicom (goal {goals[case]}x)")
    for line in missed:
        print("MISSED", line)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
