"""store() reads Part 10 files for C-STORE: File Meta groups of any length, any file size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import store
from netdicom2.dimse import DimseError, read_part10
from tests.dicomfiles import EXPLICIT_VR_LE, SECONDARY_CAPTURE, secondary_capture, write_part10

WAIT = 10.0


def _meta_element(element: int, vr: bytes, raw: bytes) -> bytes:
    """A group 0002 element in Explicit VR LE (PS3.10 §7.1)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(raw)) + raw
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def _long_meta_file(path: Path, instance: str, private_bytes: int) -> Path:
    """A Part 10 file whose File Meta group carries a long (0002,0102) Private Information."""
    body = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", SECONDARY_CAPTURE.encode() + b"\x00"),
            _meta_element(0x0003, b"UI", instance.encode()),
            _meta_element(0x0010, b"UI", EXPLICIT_VR_LE.encode()),
            _meta_element(0x0100, b"UI", b"1.2.826.0.1.3680043.9.3811.9"),
            _meta_element(0x0102, b"OB", bytes(range(256)) * (private_bytes // 256)),
        ]
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    path.write_bytes(
        b"\x00" * 128 + b"DICM" + group_length + body + secondary_capture(instance, 2000)
    )
    return path


def _dataset(path: Path) -> bytes:
    data = path.read_bytes()
    return data[read_part10(data).dataset_offset :]


@pytest.mark.parametrize("private_bytes", [0, 3840, 9000, 70000])
def test_a_file_meta_group_longer_than_the_first_read_is_read_whole(
    tmp_path: Path, private_bytes: int
) -> None:
    instance = f"1.2.826.0.1.3680043.9.3811.88.{private_bytes}"
    path = _long_meta_file(tmp_path / "long-meta.dcm", instance, private_bytes)
    out = tmp_path / "out"
    out.mkdir()
    with StorageSCP("127.0.0.1", 0, output_dir=out) as scp:
        assert store(scp.address, [path], timeout=WAIT) == [0]
    assert _dataset(out / f"{instance}.dcm") == _dataset(path)


def test_files_small_and_large_are_sent_whole(tmp_path: Path) -> None:
    # 5 MiB is above the size read in one piece: that file is mapped.
    files = [
        write_part10(tmp_path / "small.dcm", "1.2.826.0.1.3680043.9.3811.89.1", 700),
        write_part10(tmp_path / "large.dcm", "1.2.826.0.1.3680043.9.3811.89.2", 5 << 20),
    ]
    out = tmp_path / "out"
    out.mkdir()
    with StorageSCP("127.0.0.1", 0, output_dir=out, max_pdu_length=65536) as scp:
        assert store(scp.address, files, timeout=WAIT, max_operations=2) == [0, 0]
    for path, number in zip(files, (1, 2), strict=True):
        assert _dataset(out / f"1.2.826.0.1.3680043.9.3811.89.{number}.dcm") == _dataset(path)


def test_a_file_whose_meta_group_is_cut_off_is_refused_before_associating(tmp_path: Path) -> None:
    whole = _long_meta_file(tmp_path / "whole.dcm", "1.2.826.0.1.3680043.9.3811.90", 9000)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[:6000])  # ends inside the 9000-byte (0002,0102)
    with pytest.raises(DimseError, match="overruns"):
        store(("127.0.0.1", 9), [cut], timeout=WAIT)  # raised before any connection
