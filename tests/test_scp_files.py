"""`scp --output-dir` files tell the truth: a final name only for a whole data set (app_files).

Raw requestors on loopback send C-STORE fragments by hand, so that a test can stop, reset or
kill at any point of a data set (PS3.8 Annex E.2) and then look at the folder.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdicom2.acse import build_rq
from netdicom2.app_files import OutputDir, final_name
from netdicom2.app_scp import (
    CANNOT_UNDERSTAND,
    CANNOT_WRITE,
    INSTANCE_BUSY,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    StorageSCP,
)
from netdicom2.dimse import (
    VERIFICATION_SOP_CLASS,
    CommandSet,
    c_echo_rq,
    c_store_rq,
    decode_command,
    encode_command,
    is_storage_class,
)
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import AAssociateAcPDU, AReleaseRqPDU, PDataTfPDU, decode
from tests.dicomfiles import EXPLICIT_VR_LE, SECONDARY_CAPTURE, secondary_capture
from tests.hostile import read_pdu
from tests.scp_process import start_scp

WAIT = 10.0
ROOT = Path(__file__).resolve().parents[1]
UID = "1.2.826.0.1.3680043.9.3811.20.1"
STORAGE_CONTEXT = 1  # Secondary Capture, Explicit VR LE
ECHO_CONTEXT = 3  # Verification, Implicit VR LE


class RawRequestor:
    """An association driven PDU by PDU from a test (one blocking socket)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        rq = build_rq(
            "ANY-SCP",
            "RAW",
            [
                (SECONDARY_CAPTURE, [EXPLICIT_VR_LE]),
                (VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"]),
            ],
        )
        self.sock.sendall(rq.encode())
        ac = decode(read_pdu(self.sock, WAIT))
        assert isinstance(ac, AAssociateAcPDU), ac

    def send_pdv(self, context_id: int, control: int, data: bytes) -> None:
        """P-DATA-TFs of one PDV each, within the SCP's 16 KiB maximum (PS3.8 Annex D.1);
        only the last carries the control header's "last" bit."""
        chunk = 16000
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
        for index, piece in enumerate(pieces):
            flags = control if index == len(pieces) - 1 else control & ~0x02
            pdv = PresentationDataValueItem(context_id, flags, piece)
            self.sock.sendall(PDataTfPDU([pdv]).encode())

    def store_rq(
        self, uid: str = UID, context_id: int = STORAGE_CONTEXT, message_id: int = 1
    ) -> None:
        """A C-STORE-RQ command (header 03H: command, last)."""
        command = c_store_rq(message_id, SECONDARY_CAPTURE, uid)
        self.send_pdv(context_id, 0x03, encode_command(command))

    def response(self) -> CommandSet:
        """The next P-DATA-TF's command set."""
        pdu = decode(read_pdu(self.sock, WAIT))
        assert isinstance(pdu, PDataTfPDU), pdu
        item = pdu.data_value_items[0]
        assert item.is_command and item.is_last
        return decode_command(bytes(item.fragment))

    def release(self) -> None:
        self.sock.sendall(AReleaseRqPDU().encode())
        assert read_pdu(self.sock, WAIT)[0] == 0x06  # A-RELEASE-RP
        self.sock.close()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0): the SCP sees the transport vanish (Evt17)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _wait_for(predicate: object, timeout: float = WAIT) -> bool:
    """Poll a condition on the file system (no event to wait on), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".netdicom2-*.part"))


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    with StorageSCP("127.0.0.1", 0, output_dir=tmp_path, max_dataset_size=1 << 16) as server:
        yield server


def test_a_whole_store_is_renamed_into_place_and_leaves_no_temporary(
    scp: StorageSCP, tmp_path: Path
) -> None:
    dataset = secondary_capture(UID, 4000)
    client = RawRequestor(scp.address)
    client.store_rq()
    client.send_pdv(STORAGE_CONTEXT, 0x00, dataset[:1000])
    assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
    assert not (tmp_path / f"{UID}.dcm").exists()  # not under its final name before the end
    client.send_pdv(STORAGE_CONTEXT, 0x02, dataset[1000:])
    assert client.response().status == 0x0000
    client.release()
    stored = (tmp_path / f"{UID}.dcm").read_bytes()
    assert stored.endswith(dataset) and stored[128:132] == b"DICM"
    assert _temps(tmp_path) == []


def test_a_reset_in_the_middle_of_a_store_leaves_no_file(scp: StorageSCP, tmp_path: Path) -> None:
    for attempt in range(5):
        uid = f"{UID}.{attempt}"
        client = RawRequestor(scp.address)
        client.store_rq(uid)
        client.send_pdv(STORAGE_CONTEXT, 0x00, secondary_capture(uid, 8000)[:5000])
        assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
        client.reset()
        assert scp.wait_idle(WAIT, connections=attempt + 1)
        assert list(tmp_path.iterdir()) == []  # neither UID.dcm nor its temporary file


def test_shutdown_in_the_middle_of_a_store_removes_the_temporary(tmp_path: Path) -> None:
    scp = StorageSCP("127.0.0.1", 0, output_dir=tmp_path).start()
    client = RawRequestor(scp.address)
    client.store_rq()
    client.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 1000)
    assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
    scp.shutdown()
    client.sock.close()
    assert list(tmp_path.iterdir()) == []


def test_a_second_store_of_an_instance_in_progress_is_refused(
    scp: StorageSCP, tmp_path: Path
) -> None:
    first, second = RawRequestor(scp.address), RawRequestor(scp.address)
    dataset_a, dataset_b = secondary_capture(UID, 4000), secondary_capture(UID, 6000)
    first.store_rq()
    first.send_pdv(STORAGE_CONTEXT, 0x00, dataset_a[:2000])
    assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
    second.store_rq()
    second.send_pdv(STORAGE_CONTEXT, 0x00, dataset_b[:3000])
    second.send_pdv(STORAGE_CONTEXT, 0x02, dataset_b[3000:])
    refused = second.response()
    assert refused.status == INSTANCE_BUSY
    assert "another association" in refused.get_uid(0x0902)  # Error Comment
    first.send_pdv(STORAGE_CONTEXT, 0x02, dataset_a[2000:])
    assert first.response().status == 0x0000
    first.release()
    second.release()
    assert (tmp_path / f"{UID}.dcm").read_bytes().endswith(dataset_a)  # one writer, whole
    # Once the first is done, the same instance may be stored again (replacing it atomically).
    third = RawRequestor(scp.address)
    third.store_rq()
    third.send_pdv(STORAGE_CONTEXT, 0x02, dataset_b)
    assert third.response().status == 0x0000
    third.release()
    assert (tmp_path / f"{UID}.dcm").read_bytes().endswith(dataset_b)
    assert _temps(tmp_path) == []


def test_a_data_set_never_marked_last_is_refused_at_the_size_limit(
    scp: StorageSCP, tmp_path: Path
) -> None:
    client = RawRequestor(scp.address)
    client.store_rq()
    chunk = b"\x55" * 8192
    sent = 0
    answered = False
    # 64 KiB limit: the failure comes while fragments are still arriving, never marked last.
    while sent < 4 << 20 and not answered:
        client.send_pdv(STORAGE_CONTEXT, 0x00, chunk)
        sent += len(chunk)
        answered = bool(select.select([client.sock], [], [], 0.001)[0])
        disk = sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file())
        assert disk <= (1 << 16) + 4096  # the limit and the File Meta header, never more
    assert answered, f"no C-STORE-RSP after {sent} bytes"
    response = client.response()
    assert response.status == OUT_OF_RESOURCES
    assert sent < 1 << 20  # answered soon after the limit, not at the end of the stream
    assert list(tmp_path.iterdir()) == []
    # The rest of the data set is discarded; the association goes on.
    client.send_pdv(STORAGE_CONTEXT, 0x02, chunk)
    client.send_pdv(ECHO_CONTEXT, 0x03, encode_command(c_echo_rq(2)))
    assert client.response().status == 0x0000
    client.release()
    assert scp.stats.store_failures == 1 and scp.stats.stores == 0


def test_a_data_set_on_another_context_than_its_request_is_refused(
    scp: StorageSCP, tmp_path: Path
) -> None:
    client = RawRequestor(scp.address)
    client.store_rq()
    client.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 100)
    client.send_pdv(ECHO_CONTEXT, 0x02, b"\0" * 100)  # PS3.8 §8.1: one context per message
    assert client.response().status == CANNOT_UNDERSTAND
    client.release()
    assert list(tmp_path.iterdir()) == []


def test_a_store_on_the_verification_context_is_refused(scp: StorageSCP, tmp_path: Path) -> None:
    client = RawRequestor(scp.address)
    command = c_store_rq(1, VERIFICATION_SOP_CLASS, UID)
    client.send_pdv(ECHO_CONTEXT, 0x03, encode_command(command))
    client.send_pdv(ECHO_CONTEXT, 0x02, secondary_capture(UID, 100))
    assert client.response().status == SOP_CLASS_NOT_SUPPORTED
    # A Secondary Capture request on the Verification context: refused the same way.
    client.store_rq(context_id=ECHO_CONTEXT, message_id=2)
    client.send_pdv(ECHO_CONTEXT, 0x02, secondary_capture(UID, 100))
    assert client.response().status == SOP_CLASS_NOT_SUPPORTED
    client.release()
    assert list(tmp_path.iterdir()) == []


def test_storage_classes_are_told_from_other_sop_classes() -> None:
    assert is_storage_class(SECONDARY_CAPTURE)
    assert is_storage_class("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assert is_storage_class("1.3.6.1.4.1.9590.100.1.2.1")  # private: taken as storage
    assert not is_storage_class(VERIFICATION_SOP_CLASS)
    assert not is_storage_class("1.2.840.10008.5.1.4.1.2.1.1")  # Patient Root Q/R FIND
    assert not is_storage_class("1.2.840.10008.5.1.4.31")  # Modality Worklist FIND


def test_final_names_cannot_leave_the_folder_or_meet_temporary_names() -> None:
    assert final_name("../../etc/passwd") == ".._.._etc_passwd.dcm"
    assert final_name("..") == "__.dcm"
    assert final_name("") == "unnamed.dcm"
    assert "-" not in final_name(".netdicom2-1-1.part")


def test_the_sweep_removes_only_files_no_live_writer_holds(tmp_path: Path) -> None:
    leftover = tmp_path / ".netdicom2-1-1.part"  # its writer was killed: no lock
    unrelated = tmp_path / "notes.part"
    for path in (leftover, unrelated):
        path.write_bytes(b"x")
    writer = OutputDir(tmp_path)  # a live SCP writing into the same folder
    partial = writer.claim(UID, SECONDARY_CAPTURE, EXPLICIT_VR_LE)
    try:
        assert OutputDir(tmp_path).sweep() == [leftover]
        assert sorted(tmp_path.iterdir()) == sorted([partial.temp, unrelated])
        partial.commit()
    finally:
        writer.release(partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{UID}.dcm", "notes.part"]


def _start_scp(folder: Path) -> tuple[subprocess.Popen[str], int]:
    """`python -m netdicom2 scp --port 0 --output-dir folder`, with the port it printed."""
    proc, (_, port) = start_scp("--output-dir", str(folder))
    return proc, port


def test_kill_9_leaves_no_final_name_and_the_next_start_sweeps(tmp_path: Path) -> None:
    proc, port = _start_scp(tmp_path)
    try:
        client = RawRequestor(("127.0.0.1", port))
        client.store_rq()
        client.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 30000)
        assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=WAIT)
    client.sock.close()
    assert not (tmp_path / f"{UID}.dcm").exists()
    assert len(_temps(tmp_path)) == 1  # the killed process could not clean up
    proc, _ = _start_scp(tmp_path)
    try:
        assert list(tmp_path.iterdir()) == []  # swept before listening
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 143, err
    assert "Traceback" not in err


def test_store_reports_the_refusal_and_its_comment(tmp_path: Path) -> None:
    from netdicom2.app_scu import store
    from tests.dicomfiles import write_part10

    big = write_part10(tmp_path / "big.dcm", UID, 3000)
    out = tmp_path / "out"
    out.mkdir()
    comments: list[str] = []
    with StorageSCP("127.0.0.1", 0, output_dir=out, max_dataset_size=1024) as scp:
        assert store(scp.address, [big], timeout=WAIT, comments=comments) == [OUT_OF_RESOURCES]
    assert comments == ["data set over 1024 bytes"]
    assert list(out.iterdir()) == []


def test_an_instance_uid_too_long_for_a_file_name_is_refused_before_writing(
    scp: StorageSCP, tmp_path: Path
) -> None:
    client = RawRequestor(scp.address)
    client.store_rq("1." * 200)
    client.send_pdv(STORAGE_CONTEXT, 0x02, b"\0" * 100)
    response = client.response()
    assert response.status == CANNOT_WRITE
    assert "too long" in response.get_uid(0x0902)
    client.release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_mid_store_leaves_an_empty_folder(tmp_path: Path, signum: int) -> None:
    proc, port = _start_scp(tmp_path)
    client = RawRequestor(("127.0.0.1", port))
    client.store_rq()
    client.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 30000)
    assert _wait_for(lambda: len(_temps(tmp_path)) == 1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=WAIT)
    client.sock.close()
    assert proc.returncode == 128 + signum, err
    assert list(tmp_path.iterdir()) == []


def test_the_bytes_being_received_by_all_associations_are_bounded(tmp_path: Path) -> None:
    with StorageSCP(
        "127.0.0.1", 0, output_dir=tmp_path, max_dataset_size=1 << 20, max_in_progress=50000
    ) as scp:
        first, second = RawRequestor(scp.address), RawRequestor(scp.address)
        first.store_rq(f"{UID}.1")
        first.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 30000)
        # All 30,000 bytes written (they may arrive in more than one read), not only the file.
        files = scp.files
        assert files is not None
        assert _wait_for(lambda: files.in_progress == 30000 and len(_temps(tmp_path)) == 1)
        second.store_rq(f"{UID}.2")
        second.send_pdv(STORAGE_CONTEXT, 0x00, b"\0" * 30000)  # 60000 in all: refused at once
        assert second.response().status == OUT_OF_RESOURCES
        second.send_pdv(STORAGE_CONTEXT, 0x02, b"\0\0")
        first.send_pdv(STORAGE_CONTEXT, 0x02, b"\0" * 10000)
        assert first.response().status == 0x0000
        # The first file is done: its bytes no longer count, the next store fits.
        second.store_rq(f"{UID}.3", message_id=2)
        second.send_pdv(STORAGE_CONTEXT, 0x02, b"\0" * 40000)
        assert second.response().status == 0x0000
        first.release()
        second.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{UID}.1.dcm", f"{UID}.3.dcm"]
