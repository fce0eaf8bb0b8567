"""Seed byte streams: a small corpus made by netdicom2's own codec, plus external captures.

``python -m netdicom2.fuzz.seeds`` rewrites ``fuzz/seeds/*.bin`` from the codec
(A-ASSOCIATE-RQ/AC/RJ,
P-DATA-TF with a C-ECHO, A-RELEASE-RQ/RP, A-ABORT). The external seeds (ProFuzzBench's DCMTK
client sessions, dcm4che's "naughty" A-ASSOCIATE-AC) are read in place from
``../shared/external-captures/seeds`` (or ``$NETDICOM2_EXTERNAL_SEEDS``) when present; they are
never copied into the repository.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

from netdicom2.acse import build_rq, negotiate
from netdicom2.framing import fragment
from netdicom2.pdu import AAbortPDU, AAssociateRjPDU, AReleaseRpPDU, AReleaseRqPDU

__all__ = ["SEED_DIR", "external_dir", "make_seeds", "seed_pdus", "split_pdus", "write_seeds"]

SEED_DIR = Path(__file__).resolve().parent / "seeds"
_VERIFICATION = "1.2.840.10008.1.1"
_CT = "1.2.840.10008.5.1.4.1.1.2"
_TS = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def _echo_command() -> bytes:
    """C-ECHO-RQ command set, Implicit VR Little Endian (PS3.7 Table 9.3-12)."""
    parts = [
        (0x0002, b"1.2.840.10008.1.1\x00"),
        (0x0100, struct.pack("<H", 0x0030)),
        (0x0110, struct.pack("<H", 1)),
        (0x0800, struct.pack("<H", 0x0101)),
    ]
    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in parts)
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def make_seeds() -> dict[str, bytes]:
    """The project's seed streams, each a concatenation of whole PDUs (PS3.8 §9.3)."""
    rq = build_rq("ANY-SCP", "FUZZ-SCU", [(_VERIFICATION, ["1.2.840.10008.1.2"]), (_CT, _TS)])
    ac, _ = negotiate(rq)
    echo = b"".join(
        p.encode() for p in fragment(1, _echo_command(), is_command=True, max_pdu_length=16384)
    )
    return {
        "requestor-echo-release.bin": rq.encode() + echo + AReleaseRqPDU().encode(),
        "acceptor-ac-release.bin": ac.encode() + AReleaseRpPDU().encode(),
        "reject.bin": AAssociateRjPDU(result=1, source=1, reason_diag=7).encode(),
        "abort.bin": AAbortPDU(source=2, reason_diag=2).encode(),
    }


def write_seeds(directory: Path = SEED_DIR) -> list[Path]:
    """Write ``make_seeds()`` into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in make_seeds().items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def external_dir() -> Path | None:
    """``../shared/external-captures/seeds`` beside the repository, if it is there."""
    override = os.environ.get("NETDICOM2_EXTERNAL_SEEDS")
    if override:
        return Path(override) if Path(override).is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "external-captures" / "seeds"
        if candidate.is_dir():
            return candidate
    return None


def split_pdus(stream: bytes) -> list[bytes]:
    """Cut a stream of whole PDUs by their headers (PS3.8 §9.3.1); a ragged tail is kept."""
    out = []
    off = 0
    while off < len(stream):
        if len(stream) - off < 6:
            out.append(stream[off:])
            break
        end = off + 6 + struct.unpack_from(">I", stream, off + 2)[0]
        out.append(stream[off:end])
        off = end
    return out


@functools.cache
def seed_pdus() -> tuple[tuple[str, bytes], ...]:
    """Every seed PDU as (name, bytes): the project's corpus, then the external plain streams."""
    streams: dict[str, bytes] = {}
    if SEED_DIR.is_dir() and any(SEED_DIR.glob("*.bin")):
        streams.update({p.name: p.read_bytes() for p in sorted(SEED_DIR.glob("*.bin"))})
    else:
        streams.update(make_seeds())
    external = external_dir()
    if external is not None:
        for path in sorted(external.glob("*/**/*")):
            if path.is_file() and path.suffix in (".raw", ".bin") and "replay" not in str(path):
                streams[f"{path.parent.name}/{path.name}"] = path.read_bytes()
    pdus = []
    for name, stream in streams.items():
        for index, pdu in enumerate(split_pdus(stream)):
            pdus.append((f"{name}#{index}", pdu))
    return tuple(pdus)


if __name__ == "__main__":  # pragma: no cover - tool
    for written in write_seeds():
        print(written)
