"""Hostile capture files: every read ends quickly, in bounded memory, with a clear warning.

Each test measures its own figures (wall time, peak RSS growth of this process) and asserts
them as bounds; `--strict` turns each warning into exit status 1.
"""

from __future__ import annotations

import gzip
import resource
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from netdicom2.cli import main
from netdicom2.pcaps.pcapfile import FileStats, Limits, read_frames
from netdicom2.pcaps.pdus import split_stream
from netdicom2.pcaps.reassembly import Segment, reassemble

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
GIB = 1024**3


@contextmanager
def bounded(seconds: float, megabytes: int) -> Iterator[None]:
    """Assert the block takes under ``seconds`` and raises peak RSS by under ``megabytes``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert grown < megabytes, f"peak RSS grew {grown:.0f} MB"


def replay(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """Exit status and output of `netdicom2 replay PATH -q` (then the same with --strict)."""
    status = main(["replay", str(path), "-q", *extra])
    out = capsys.readouterr().out
    assert main(["replay", str(path), "-q", "--strict", *extra]) == 1
    capsys.readouterr()
    return status, out


def sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of ``size`` bytes (holes) that starts with ``head``."""
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def gzip_bomb(path: Path, head: bytes, unit: bytes, expanded: int) -> Path:
    """``head`` then ``unit`` repeated to ``expanded`` bytes, gzip members concatenated."""
    block = unit * (16 * 1024 * 1024 // len(unit))
    member = gzip.compress(block, compresslevel=9, mtime=0)
    with path.open("wb") as f:
        f.write(gzip.compress(head, mtime=0))
        for _ in range(expanded // len(block)):
            f.write(member)
    return path


def test_sparse_64_gib_pcap_ends_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sparse(tmp_path / "sparse.pcap", PCAP_HEADER, 64 * GIB)
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and "1024 all-zero records in a row" in out and "-> INCOMPLETE" in out


def test_caplen_2_31_in_a_sparse_file_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = struct.pack("<IIII", 1, 0, 1 << 31, 1 << 31)
    path = sparse(tmp_path / "huge.pcap", PCAP_HEADER + record, 64 * GIB)
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and "record #1 claims 2,147,483,648 bytes" in out, out


def test_caplen_beyond_the_file_is_a_truncation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(PCAP_HEADER + struct.pack("<IIII", 1, 0, 1 << 31, 60) + b"\0" * 60)
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and "more than the 60 left in the file" in out and "no whole packet" in out


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (b"\0", "all-zero records in a row"),
        (struct.pack("<IIII", 7, 0, 0, 60), "empty records in a row"),
    ],
    ids=["zeros", "empty-records"],
)
def test_4_mb_gzip_bomb_ends_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unit: bytes, expected: str
) -> None:
    path = gzip_bomb(tmp_path / "bomb.pcap.gz", PCAP_HEADER, unit, 4 * GIB)
    assert 1_000_000 < path.stat().st_size < 10_000_000  # a few MB that expand to 4 GiB
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and expected in out, out


def _frame(index: int) -> bytes:
    """A 60-byte Ethernet/IPv4/TCP ACK (repeated: what a real-looking bomb would hold)."""
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 40, index & 0xFFFF, 0, 64, 6, 0, b"\n\0\0\1", b"\n\0\0\2"
    )
    tcp = struct.pack(">HHIIBBHHH", 50000, 104, 1, 1, 0x50, 0x10, 1024, 0, 0)
    return b"\2\0\0\0\0\2\2\0\0\0\0\1\x08\x00" + ip + tcp + b"\0" * 6


def test_gzip_expansion_is_checked_against_the_compressed_size(tmp_path: Path) -> None:
    record = struct.pack("<IIII", 7, 0, 60, 60) + _frame(0)
    path = gzip_bomb(tmp_path / "acks.pcap.gz", PCAP_HEADER, record, 64 * 1024 * 1024)
    stats = FileStats()
    limits = Limits(gzip_ratio=100, gzip_floor=4 * 1024 * 1024)
    with bounded(10.0, 50), path.open("rb") as handle:
        frames = sum(1 for _ in read_frames(handle, stats, limits))
    assert stats.compressed and stats.stopped is not None and "a gzip bomb?" in stats.stopped
    assert frames * 76 <= max(4 * 1024 * 1024, path.stat().st_size * 100)


def test_packet_and_byte_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "acks.pcap"
    record = struct.pack("<IIII", 7, 0, 60, 60) + _frame(0)
    path.write_bytes(PCAP_HEADER + record * 5000)
    status, out = replay(path, capsys, "--max-packets", "1000")
    assert status == 0 and "stopped after --max-packets 1,000 packets" in out
    status, out = replay(path, capsys, "--max-bytes", "10000")
    assert status == 0 and "longer than --max-bytes 10,000" in out
    assert main(["replay", str(path), "-q"]) == 0 and "warning" not in capsys.readouterr().out


def test_time_limit(tmp_path: Path) -> None:
    path = tmp_path / "acks.pcap"
    path.write_bytes(PCAP_HEADER + (struct.pack("<IIII", 7, 0, 60, 60) + _frame(0)) * 3000)
    ticks = iter(range(1_000_000))
    stats = FileStats()
    limits = Limits(time_limit=5.0, clock=lambda: float(next(ticks)))  # one "second" per look
    with path.open("rb") as handle:
        frames = sum(1 for _ in read_frames(handle, stats, limits))
    assert stats.stopped == "stopped after --time-limit 5 s of reading" and frames < 3000


def _pcapng(body_blocks: bytes) -> bytes:
    """SHB and one Ethernet IDB, then the given blocks."""
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    shb = struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body
    shb += struct.pack("<I", 12 + len(shb_body))
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 0, 20)
    return shb + idb + body_blocks


def test_pcapng_block_length_beyond_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = _pcapng(struct.pack("<II", 6, 0xFFFFFFF0))
    path = sparse(tmp_path / "block.pcapng", head, 4096)
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and "has length 4,294,967,280: beyond the end of the file" in out, out


def test_pcapng_block_length_in_gzip_is_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = _pcapng(struct.pack("<II", 6, 0xFFFFFFF0))
    path = gzip_bomb(tmp_path / "block.pcapng.gz", head, b"\0", 4 * GIB)
    with bounded(3.0, 50):
        status, out = replay(path, capsys)
    assert status == 0 and "not a valid block length" in out, out


def test_pcapng_trailing_length_must_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    epb = struct.pack("<IIIIIII", 6, 32 + 60, 0, 0, 0, 60, 60) + _frame(0)
    path = tmp_path / "tail.pcapng"
    path.write_bytes(_pcapng(epb + struct.pack("<I", 99)))
    status, out = replay(path, capsys)
    assert status == 0 and "trailing length differs" in out and "no whole packet" in out


def _fake_headers(size: int, length: int) -> bytes:
    """P-DATA-TF headers every 16 bytes whose PDV items chain through the whole stream."""
    block = b"\x04\x00" + struct.pack(">I", length) + struct.pack(">I", 12) + b"\x01" + b"\0" * 5
    return block * (size // 16)


def _split(data: bytes) -> Callable[[], object]:
    """Reassemble a stream with no SYN and cut it into PDUs."""
    step = 65536
    segments = [
        Segment(float(i), 1000 + i, data[i : i + step], 0x18) for i in range(0, len(data), step)
    ]
    return lambda: split_stream(reassemble(segments))


@pytest.mark.realtime
@pytest.mark.parametrize("length", [1024 * 1024, 1034, 4000])
def test_resynchronisation_is_linear(length: int) -> None:
    small, large = _split(_fake_headers(2 << 20, length)), _split(_fake_headers(8 << 20, length))
    started = time.perf_counter()
    small()
    one = time.perf_counter() - started
    with bounded(15.0, 400):
        started = time.perf_counter()
        large()
        eight = time.perf_counter() - started
    assert eight < 10 * one + 1.5, (one, eight)  # 4 times the bytes; quadratic: 16 times


def test_zlib_damage_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = gzip.compress(PCAP_HEADER + struct.pack("<IIII", 7, 0, 60, 60) + _frame(0), mtime=0)
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(good[:-12] + zlib.compress(b"x")[:4])
    status, out = replay(path, capsys)
    assert status == 0 and "warning" in out, out
