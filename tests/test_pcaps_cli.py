"""`netdicom2 replay`: exit status, JSON report, timing; endpoint parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main
from netdicom2.pcaps.corpus import corpus_entries
from netdicom2.pcaps.flows import load_capture
from netdicom2.pcaps.replay_local import replay_local
from tests.pcaps_helpers import Conversation, write

BY_NAME = {Path(e["file"]).stem: str(e["path"]) for e in corpus_entries()}


def test_codec_check_passes_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    assert main(["replay", BY_NAME["dcmtk_storescu_storescp_pdu4k"], "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["ok"] and data["captures"][0]["codec"]["exact"] == 8
    out = capsys.readouterr().out
    assert "C-STORE-RSP answers 1 status 0x0000" in out
    assert "8 of 8 PDUs checked, 8 round-trip byte-exactly" in out


def test_codec_check_fails_on_an_invalid_pdu_unless_allowed() -> None:
    path = BY_NAME["ugly_unknown_pdu_type_sta6"]
    assert main(["replay", path, "-q"]) == 1
    assert main(["replay", path, "-q", "--allow-invalid"]) == 0


def test_local_replay_both_roles(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    path = BY_NAME["pynetdicom_scp_abort_on_echo"]
    assert main(["replay", path, "--against", "local", "--json", str(report), "-q"]) == 0
    replays = json.loads(report.read_text())["captures"][0]["replays"]
    assert [r["mode"] for r in replays] == ["local --as scp", "local --as scu"]
    assert all(r["ok"] for r in replays)


def test_remote_replay_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with StorageSCP("127.0.0.1", 0) as scp:
        target = f"127.0.0.1:{scp.address[1]}"
        assert main(["replay", BY_NAME["netdicom2_echo_storescp"], "--against", target]) == 0
        # Recorded: Orthanc rejected the called AE title; this SCP accepts it.
        assert (
            main(["replay", BY_NAME["orthanc_echoscu_wrong_called_ae"], "--against", target]) == 1
        )
    out = capsys.readouterr().out
    assert "! step 1: PDU type: recorded AAssociateRjPDU" in out


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"nope")
    assert main(["replay", str(bad)]) == 2


def test_recorded_timing_keeps_the_spacing(tmp_path: Path) -> None:
    conv = Conversation()
    packets = conv.echo_session()
    for index, packet in enumerate(packets):
        packet.time = 1000.0 + 0.05 * index  # 50 ms apart: RQ (#3) to last FIN (#9) is 0.3 s
    conn = load_capture(write(tmp_path / "slow.pcap", packets)).connections[0]
    fast = replay_local(conn, "scp")
    slow = replay_local(conn, "scp", timing="recorded")
    assert fast.ok and slow.ok
    assert slow.elapsed >= 0.28 and fast.elapsed < 0.2
