"""Captures with frames over 65,535 bytes, recorded on loopback at test time, read whole.

A loopback capture (MTU 65,536, segmentation offload) holds frames of up to 65,549 bytes. They
are recorded here with an AF_PACKET socket inside a private network namespace while netdicom2
stores a multi-megabyte data set; nothing large is kept in the repository. The same frames are
then written as pcap, pcapng, with a short snaplen and cut mid-record.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main
from netdicom2.pcaps.flows import load_capture
from netdicom2.pcaps.pcapfile import FileStats, read_frames
from netdicom2.pcaps.plan import ReplayResult
from netdicom2.pcaps.replay_remote import replay_remote
from tests.peers import dcmtk_storescp, pynetdicom_scp, require

ROOT = Path(__file__).resolve().parents[1]
DATASET = 3 * 1024 * 1024  # pixel bytes of the stored object
MAX_PDU = 1024 * 1024  # announced by both sides of the recording

# Runs inside `unshare -n`: loopback up, an AF_PACKET socket on lo, one C-STORE, frames to JSON.
_SNIFF = r"""
import json, socket, struct, subprocess, sys, threading
from pathlib import Path
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
out, size, max_pdu = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sniff.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: no drops
sniff.bind(("lo", 0))
sniff.settimeout(0.5)
frames = []
def run():
    while True:
        try:
            data, addr = sniff.recvfrom(1 << 20, socket.MSG_TRUNC)
        except socket.timeout:
            return
        if addr[2] != socket.PACKET_OUTGOING:  # loopback shows each frame twice
            frames.append(data)
thread = threading.Thread(target=run)
thread.start()
from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import store
from tests.dicomfiles import write_part10
part10 = write_part10(out.with_suffix(".dcm"), "1.2.826.0.1.3680043.2.1143.77", size)
with StorageSCP("127.0.0.1", 11112, max_pdu_length=max_pdu) as scp:
    statuses = store(("127.0.0.1", 11112), [part10], max_pdu_length=max_pdu)
thread.join()
drops = struct.unpack("II", sniff.getsockopt(263, 6, 8))[1]  # PACKET_STATISTICS
with out.open("wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for i, frame in enumerate(frames):
        f.write(struct.pack("<IIII", 1000 + i // 1000, i % 1000 * 1000, len(frame), len(frame)))
        f.write(frame)
print(json.dumps({"statuses": statuses, "drops": drops, "frames": len(frames)}))
"""


def _records(path: Path) -> list[bytes]:
    """The frames of a pcap written by the sniffer."""
    stats = FileStats()
    with path.open("rb") as handle:
        frames = [f.data for f in read_frames(handle, stats)]
    assert not stats.warnings, stats.warnings
    return frames


def write_pcap(path: Path, frames: list[bytes], snaplen: int = 262144) -> Path:
    """Frames as a pcap (Ethernet), each cut to ``snaplen`` as tcpdump -s would."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        for i, frame in enumerate(frames):
            kept = frame[:snaplen]
            f.write(struct.pack("<IIII", 1000, i, len(kept), len(frame)) + kept)
    return path


def write_pcapng(path: Path, frames: list[bytes]) -> Path:
    """Frames as a pcapng: SHB, one IDB with nanosecond resolution, one EPB each."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        size = len(body) + 12
        return struct.pack("<II", kind, size) + body + struct.pack("<I", size)

    option = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)  # if_tsresol 10^-9
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(block(1, struct.pack("<HHI", 1, 0, 0) + option))
    for i, frame in enumerate(frames):
        stamp = (1000 * 10**9) + i
        head = struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame))
        out.append(block(6, head + frame))
    path.write_bytes(b"".join(out))
    return path


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loopback capture of one 3 MiB C-STORE with 1 MiB PDUs, recorded now."""
    require("unshare")
    require("ip")
    path = tmp_path_factory.mktemp("large") / "loopback.pcap"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", _SNIFF, str(path), str(DATASET), str(MAX_PDU)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["statuses"] == [0] and outcome["drops"] == 0, outcome
    return path


def test_loopback_frames_over_65535_bytes_are_read_whole(large: Path) -> None:
    frames = _records(large)
    assert max(len(f) for f in frames) > 65535  # the capture really has such frames
    capture = load_capture(large)
    (conn,) = capture.connections
    assert conn.notes == [] or not any("missing" in n for n in conn.notes), conn.notes
    assert [r.status for r in conn.rq.pdus + conn.ac.pdus].count("ok") == conn.pdu_count
    # Both streams hold exactly the PDUs' bytes: nothing lost in the long frames.
    assert conn.rq.stream.gaps == [] and conn.ac.stream.gaps == []
    assert conn.rq.stream.size == sum(len(r.data) for r in conn.rq.pdus) > 3_000_000


def test_codec_check_counts_every_pdu(large: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert main(["replay", str(large), "-q", "--strict", "--json", str(report)]) == 0
    entry = json.loads(report.read_text())["captures"][0]
    assert entry["warnings"] == [] and entry["verdict"] == "OK"
    codec = entry["codec"]
    assert codec["incomplete"] == 0 and codec["exact"] == codec["total"] == codec["pdus"] > 6


def test_pcapng_with_nanosecond_stamps_reads_the_same(large: Path, tmp_path: Path) -> None:
    frames = _records(large)
    ng = load_capture(write_pcapng(tmp_path / "c.pcapng", frames))
    plain = load_capture(large)
    assert [r.data for r in ng.connections[0].rq.pdus] == [
        r.data for r in plain.connections[0].rq.pdus
    ]
    assert ng.stats.file.format == "pcapng" and ng.stats.file.warnings == []
    first = ng.connections[0].rq.pdus[0].time
    assert 1000.0 < first < 1000.001  # nanosecond ticks, not microseconds


def test_short_snaplen_is_counted_not_ok(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pcap(tmp_path / "snap.pcap", _records(large), snaplen=2000)
    assert main(["replay", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    # Every PDU longer than what one frame carries is incomplete, and the summary says so.
    assert "incomplete (not checked) " in out and "-> INCOMPLETE" in out, out
    assert "-> OK" not in out
    assert main(["replay", str(path), "-q", "--strict"]) == 1


def test_truncated_file_warns_with_the_last_whole_packet(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = large.read_bytes()
    frames = _records(large)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - len(frames[-1]) // 2])  # inside the last record
    assert main(["replay", str(cut), "-q"]) == 0
    out = capsys.readouterr().out
    whole = len(frames) - 1
    assert f"the file ends inside record #{whole + 1}" in out, out
    assert f"last whole packet: #{whole} " in out and "-> INCOMPLETE" in out
    assert main(["replay", str(cut), "-q", "--strict"]) == 1


def test_large_store_replays_against_netdicom2(large: Path) -> None:
    assert main(["replay", str(large), "-q", "--against", "local"]) == 0
    with StorageSCP("127.0.0.1", 0, max_pdu_length=MAX_PDU) as scp:
        target = f"127.0.0.1:{scp.address[1]}"
        assert main(["replay", str(large), "-q", "--against", target]) == 0


# ------------------------------------------------------------------ live replay, smaller max


def _replay(path: Path, address: tuple[str, int], **kwargs: Any) -> ReplayResult:
    """The capture's one connection replayed against a live acceptor."""
    (conn,) = load_capture(path).connections
    return replay_remote(conn, address, step_timeout=10.0, **kwargs)


def _refragmented(result: ReplayResult) -> bool:
    """The result notes the re-fragmentation to a 16 KiB-ish maximum length."""
    return any("re-fragmented" in note for note in result.notes)


def test_refragmented_for_netdicom2_with_a_smaller_max_length(large: Path) -> None:
    with StorageSCP("127.0.0.1", 0, max_pdu_length=16384) as scp:
        plain = _replay(large, scp.address)
        ignored = _replay(large, scp.address, ignore=["max-length"])
        verbatim = _replay(large, scp.address, verbatim=True, ignore=["max-length"])
    # The only difference: the Maximum Length the live acceptor announced.
    assert [d.what for d in plain.differences] == ["user information 51H"], plain.differences
    assert ignored.ok and ignored.verdict == "OK" and _refragmented(ignored)
    assert ignored.differences[0].excused_by == "--ignore max-length"
    assert ignored.received[-2].startswith("P-DATA-TF") and "status 0x0000" not in str(
        [d.actual for d in ignored.differences]
    )
    # As recorded, the 1 MiB P-DATA-TF breaks the live acceptor's limit: it aborts.
    assert not verbatim.ok and any("A-ABORT" in r for r in verbatim.received)


@pytest.mark.interop
def test_refragmented_for_dcmtk_storescp(large: Path, tmp_path: Path) -> None:
    with dcmtk_storescp(tmp_path) as server:
        result = _replay(
            large, ("127.0.0.1", server.port), connect=server.connect, ignore=["max-length"]
        )
    assert result.ok, [d.as_dict() for d in result.differences]
    assert _refragmented(result) and result.sent == 6  # RQ, command, 3 data PDUs, RELEASE-RQ


@pytest.mark.interop
def test_refragmented_for_pynetdicom(large: Path, tmp_path: Path) -> None:
    with pynetdicom_scp(tmp_path) as server:
        result = _replay(
            large, ("127.0.0.1", server.port), connect=server.connect, ignore=["max-length"]
        )
    assert result.ok, [d.as_dict() for d in result.differences]
    assert _refragmented(result)


def _with_hole(large: Path, tmp_path: Path) -> Path:
    """The capture without one full-size frame in the middle of the data set."""
    frames = _records(large)
    big = [i for i, f in enumerate(frames) if len(f) > 60000]
    drop = big[len(big) // 2]
    return write_pcap(tmp_path / "hole.pcap", frames[:drop] + frames[drop + 1 :])


def test_a_pdu_with_missing_bytes_is_never_sent(large: Path, tmp_path: Path) -> None:
    path = _with_hole(large, tmp_path)
    with StorageSCP("127.0.0.1", 0, max_pdu_length=MAX_PDU) as scp:
        stopped = _replay(path, scp.address)
        filled = _replay(path, scp.address, fill_holes=True)
    assert stopped.verdict == "INCOMPLETE" and stopped.differences == []
    assert stopped.incomplete is not None and "--fill-holes" in stopped.incomplete
    assert stopped.sent == 3 and filled.sent == 6  # stopped before the cut data PDU
    # Zeros in a pixel data set: the SCP still stores it; the answer is compared, and marked.
    assert filled.verdict == "OK", [d.as_dict() for d in filled.differences]
    assert any("missing bytes sent as zeros" in n for n in filled.notes)
    assert filled.received[1:] == ["P-DATA-TF [ctx 1 cmd last 124 B]", "A-RELEASE-RP"]


def test_hole_replay_exit_status(large: Path, tmp_path: Path) -> None:
    path = _with_hole(large, tmp_path)
    with StorageSCP("127.0.0.1", 0, max_pdu_length=MAX_PDU) as scp:
        target = f"127.0.0.1:{scp.address[1]}"
        assert main(["replay", str(path), "-q", "--against", target]) == 0
        assert main(["replay", str(path), "-q", "--against", target, "--strict"]) == 1
        assert main(["replay", str(path), "-q", "--against", target, "--fill-holes"]) == 0


def test_ignore_is_shown_as_excused_everywhere(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    with StorageSCP("127.0.0.1", 0, max_pdu_length=16384) as scp:
        target = f"127.0.0.1:{scp.address[1]}"
        assert main(["replay", str(large), "--against", target]) == 1
        capsys.readouterr()
        argv = ["replay", str(large), "--against", target, "--ignore", "max-length"]
        assert main([*argv, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "~ step 1: user information 51H" in out and "excused: --ignore max-length" in out
    assert "re-fragmented" in out
    (replay,) = json.loads(report.read_text())["captures"][0]["replays"]
    assert [d["excused_by"] for d in replay["differences"]] == ["--ignore max-length"]


# ------------------------------------------------------------------ --extract


def _dataset(part10: bytes) -> bytes:
    """The data set of a Part 10 file: after the preamble, DICM and the File Meta group."""
    meta_length = struct.unpack_from("<I", part10, 128 + 4 + 8)[0]
    return part10[128 + 4 + 12 + meta_length :]


def test_extract_writes_the_stored_object(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pydicom = pytest.importorskip("pydicom")
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["replay", str(large), "-q", "--extract", str(folder)]) == 0
    assert "extracted 1 data sets" in capsys.readouterr().out
    (written,) = folder.iterdir()
    original = large.with_suffix(".dcm").read_bytes()  # the file the recording stored
    assert _dataset(written.read_bytes()) == _dataset(original)
    meta = pydicom.dcmread(written).file_meta
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # what the AC accepted
    assert written.name == f"{meta.MediaStorageSOPInstanceUID}.dcm"


def test_extract_leaves_out_a_data_set_with_missing_bytes(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    path = _with_hole(large, tmp_path)
    assert main(["replay", str(path), "--extract", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "not extracted:" in out and "the capture lost bytes of this message" in out
    assert list(folder.iterdir()) == []


def test_extract_folder_is_checked_first(tmp_path: Path, large: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(large), "--extract", str(tmp_path / "missing")])
    assert exit_info.value.code == 2


def test_local_replay_stops_before_missing_bytes(
    large: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_hole(large, tmp_path)
    assert main(["replay", str(path), "-q", "--against", "local", "--as", "scp"]) == 0
    out = capsys.readouterr().out
    assert "0 different, 1 incomplete" in out and "-> INCOMPLETE" in out, out
