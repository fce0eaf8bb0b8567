"""`replay --listen`: the recorded acceptor played to the live requestor that made the recording.

Each capture is recorded here first, through `netdicom2 record`'s proxy in front of a netdicom2
StorageSCP, with the real requestor (DCMTK echoscu/storescu, pynetdicom's echoscu); then the
same requestor is spawned against the replayed acceptor and compared with its recording.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main
from netdicom2.pcaps.describe import parse_command
from netdicom2.pcaps.recorder import RecordingProxy
from netdicom2.pcaps.replay_listen import patch_response
from tests.dicomfiles import write_part10
from tests.peers import require

pytestmark = pytest.mark.interop

PYNETDICOM_ECHOSCU = f"{sys.executable} -m pynetdicom echoscu 127.0.0.1 {{port}}"


def dcmtk(tool: str, *args: str) -> str:
    """A DCMTK tool's command line (DCMTK's own binary, not pynetdicom's script)."""
    return " ".join([require(tool), *args])


def record(tmp_path: Path, command: str, name: str = "rec.pcap") -> Path:
    """Run ``command`` ({port} replaced) through a recording proxy to a netdicom2 SCP."""
    out = tmp_path / name
    with (
        StorageSCP("127.0.0.1", 0, max_pdu_length=16384) as scp,
        RecordingProxy(("127.0.0.1", 0), scp.address, out) as proxy,
    ):
        argv = command.replace("{port}", str(proxy.address[1])).split()
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert proxy.wait_finished(1, 10)
    return out


def listen(capture: Path, command: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """`netdicom2 replay CAPTURE --listen 0 --spawn COMMAND`: exit status and the JSON replay."""
    report = tmp_path / "listen.json"
    argv = ["replay", str(capture), "--listen", "0", "--spawn", command, "--json", str(report)]
    status = main([*argv, "-q", "--timeout", "10", *extra])
    (replay,) = json.loads(report.read_text())["captures"][0]["replays"]
    return status, replay


def test_dcmtk_echoscu_replays_against_its_recording(tmp_path: Path) -> None:
    command = dcmtk("echoscu", "-aec", "ANY-SCP", "127.0.0.1", "{port}")
    status, replay = listen(record(tmp_path, command), command, tmp_path)
    assert status == 0 and replay["verdict"] == "OK", replay["differences"]
    assert replay["received"][0].startswith("A-ASSOCIATE-RQ 'ECHOSCU'->'ANY-SCP'")
    assert "requestor exited with status 0" in replay["notes"]


def test_dcmtk_storescu_replays_against_its_recording(tmp_path: Path) -> None:
    part10 = write_part10(tmp_path / "sc.dcm", "1.2.826.0.1.3680043.2.1143.5", 200_000)
    command = dcmtk("storescu", "-aec", "ANY-SCP", "127.0.0.1", "{port}", str(part10))
    status, replay = listen(record(tmp_path, command), command, tmp_path)
    assert status == 0 and replay["verdict"] == "OK", replay["differences"]
    pdata = [r for r in replay["received"] if r.startswith("P-DATA-TF")]
    assert len(pdata) > 200_000 // 16384 and replay["received"][-1] == "A-RELEASE-RQ"
    assert "requestor exited with status 0" in replay["notes"]


def test_smaller_live_max_length_is_a_difference_unless_ignored(tmp_path: Path) -> None:
    part10 = write_part10(tmp_path / "sc.dcm", "1.2.826.0.1.3680043.2.1143.6", 100_000)
    recorded = dcmtk("storescu", "-aec", "ANY-SCP", "127.0.0.1", "{port}", str(part10))
    live = dcmtk("storescu", "-pdu", "4096", "-aec", "ANY-SCP", "127.0.0.1", "{port}", str(part10))
    capture = record(tmp_path, recorded)
    status, replay = listen(capture, live, tmp_path)
    assert status == 1 and [d["what"] for d in replay["differences"]] == ["user information 51H"]
    status, replay = listen(capture, live, tmp_path, "--ignore", "max-length")
    assert status == 0 and replay["differences"][0]["excused_by"] == "--ignore max-length"
    # The recorded 16 KiB answers were cut to the live 4 KiB: storescu accepted them.
    assert "requestor exited with status 0" in replay["notes"]


def test_pynetdicom_echoscu_replays_against_its_recording(tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    status, replay = listen(record(tmp_path, PYNETDICOM_ECHOSCU), PYNETDICOM_ECHOSCU, tmp_path)
    assert status == 0 and replay["verdict"] == "OK", replay["differences"]
    assert "PYNETDICOM" in replay["received"][0] or "ECHOSCU" in replay["received"][0]


def test_another_requestor_differs(tmp_path: Path) -> None:
    capture = record(tmp_path, dcmtk("echoscu", "-aec", "ANY-SCP", "127.0.0.1", "{port}"))
    status, replay = listen(capture, PYNETDICOM_ECHOSCU, tmp_path)
    # Observed: pynetdicom 3.0.4's echoscu proposes other transfer syntaxes for Verification
    # and announces a Maximum Length of 16382 where DCMTK 3.6.7's echoscu announces 16384.
    whats = {d["what"] for d in replay["differences"]}
    assert status == 1 and whats == {"context 1 transfer syntax", "user information 51H"}


def test_no_requestor_is_peer_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = record(tmp_path, dcmtk("echoscu", "-aec", "ANY-SCP", "127.0.0.1", "{port}"))
    status = main(["replay", str(capture), "--listen", "0", "--spawn", "/bin/true", "-q"])
    out = capsys.readouterr().out
    assert status == 3 and "no requestor connected" in out
    assert "the requestor exited with status 0 first" in out


def test_listen_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = record(tmp_path, dcmtk("echoscu", "-aec", "ANY-SCP", "127.0.0.1", "{port}"))
    for extra, named in [
        (["--spawn", "/bin/true"], "--spawn needs --listen"),
        (["--listen", "0", "--spawn", "/no/such/echoscu {port}"], "/no/such/echoscu"),
        (["--listen", "0", "--against", "local"], "exclude each other"),
        (["--listen", "99999"], "99999"),
    ]:
        with pytest.raises(SystemExit) if named == "99999" else contextlib.nullcontext():
            assert main(["replay", str(capture), *extra]) == 2
        assert named in capsys.readouterr().err


def test_patch_response_rewrites_and_recounts() -> None:
    from netdicom2.dimse import c_echo_rq, c_echo_rsp, encode_command

    response = encode_command(c_echo_rsp(c_echo_rq(7)))
    patched = patch_response(response, {0x0120: b"\x09\x00"})
    elements = parse_command(patched)
    assert elements is not None and elements[0x0120] == b"\x09\x00"
    assert int.from_bytes(elements[0x0000], "little") == len(patched) - 12
    assert patch_response(response, {}) == response
