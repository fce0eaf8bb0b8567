"""Interoperability with real peers on loopback: DCMTK, pynetdicom and Orthanc, both directions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.app_scu import Association, echo, store
from netdicom2.dimse import VERIFICATION_SOP_CLASS, read_part10
from netdicom2.dulprovider import Connector
from tests.dicomfiles import write_part10
from tests.peers import dcmtk_storescp, orthanc, pynetdicom_scp, require

pytestmark = pytest.mark.interop

BIG = 3 * 1024 * 1024 + 1234  # a multi-megabyte data set, not a multiple of any PDU size


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A ~3 MB Secondary Capture Part 10 file."""
    return write_part10(tmp_path / "big.dcm", "1.2.826.0.1.3680043.2.1125.77.1", BIG)


@pytest.fixture
def scp(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StorageSCP]:
    """netdicom2's StorageSCP on 127.0.0.1, writing data sets to tmp_path/out."""
    out = tmp_path / "out"
    out.mkdir()
    max_pdu = getattr(request, "param", 16384)
    with StorageSCP("127.0.0.1", 0, output_dir=out, max_pdu_length=max_pdu) as server:
        yield server


def _stored_dataset(path: Path) -> bytes:
    """The data set bytes of a Part 10 file (after the File Meta group)."""
    data = path.read_bytes()
    return data[read_part10(data).dataset_offset :]


def _window_granted(address: tuple[str, int], connect: Connector, called_ae: str) -> int:
    """How many outstanding operations the peer grants a requestor proposing 8 (PS3.7 D.3.3.3)."""
    contexts = [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])]
    with Association(
        address, contexts, connect=connect, called_ae=called_ae, max_operations=8
    ) as assoc:
        return assoc.window


def test_dcmtk_echoscu_against_netdicom2_scp(scp: StorageSCP) -> None:
    echoscu = require("echoscu")
    host, port = scp.address
    result = subprocess.run(
        [echoscu, "-aec", "ANY-SCP", host, str(port)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert scp.stats.echoes == 1


@pytest.mark.parametrize("scp", [4096, 0], indirect=True, ids=["scp-max-pdu-4096", "scp-max-pdu-0"])
@pytest.mark.parametrize("scu_pdu", [4096, 131072])
def test_dcmtk_storescu_sends_a_multi_megabyte_file_to_netdicom2_scp(
    scp: StorageSCP, big_file: Path, scu_pdu: int
) -> None:
    storescu = require("storescu")
    host, port = scp.address
    result = subprocess.run(
        [storescu, "-aec", "ANY-SCP", "-pdu", str(scu_pdu), host, str(port), str(big_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert scp.stats.stores == 1
    assert scp.output_dir is not None
    (written,) = scp.output_dir.iterdir()
    assert _stored_dataset(written) == _stored_dataset(big_file)


def test_pynetdicom_scu_echo_and_store_against_netdicom2_scp(
    scp: StorageSCP, big_file: Path
) -> None:
    host, port = scp.address
    script = textwrap.dedent(
        """
        import sys
        from pydicom import dcmread
        from pynetdicom import AE
        from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(Verification)
        ae.add_requested_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate(sys.argv[1], int(sys.argv[2]), ae_title="ANY-SCP")
        assert assoc.is_established, "not established"
        echo = assoc.send_c_echo()
        store = assoc.send_c_store(dcmread(sys.argv[3]))
        assoc.release()
        print(f"{echo.Status:04X} {store.Status:04X}")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, host, str(port), str(big_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0000", "0000"]
    assert scp.stats.echoes == 1 and scp.stats.stores == 1


def test_netdicom2_echo_and_store_against_dcmtk_storescp(tmp_path: Path, big_file: Path) -> None:
    with dcmtk_storescp(tmp_path) as server:
        address = ("127.0.0.1", server.port)
        assert echo(address, connect=server.connect, called_ae="STORESCP") == 0
        statuses = store(address, [big_file], connect=server.connect, called_ae="STORESCP")
        assert statuses == [0]
        # storescp grants no Asynchronous Operations Window: store() stays synchronous.
        assert _window_granted(address, server.connect, "STORESCP") == 1
        assert store(address, [big_file] * 2, connect=server.connect, max_operations=8) == [0, 0]
        for max_pdu in (4096, 0):  # what storescp may send us back: at most 4096, or unlimited
            assert echo(address, connect=server.connect, max_pdu_length=max_pdu) == 0


def test_netdicom2_echo_and_store_against_pynetdicom_scp(tmp_path: Path, big_file: Path) -> None:
    with pynetdicom_scp(tmp_path) as server:
        address = ("127.0.0.1", server.port)
        assert echo(address, connect=server.connect, called_ae="PYNETDICOM") == 0
        assert store(address, [big_file], connect=server.connect) == [0]
        assert _window_granted(address, server.connect, "PYNETDICOM") == 1
        assert store(address, [big_file] * 2, connect=server.connect, max_operations=8) == [0, 0]


def test_netdicom2_echo_and_store_against_orthanc(tmp_path: Path, big_file: Path) -> None:
    with orthanc(tmp_path) as server:
        address = ("127.0.0.1", server.port)
        assert echo(address, connect=server.connect, called_ae="ORTHANC") == 0
        assert store(address, [big_file], connect=server.connect, called_ae="ORTHANC") == [0]
    stored = [
        p
        for p in (tmp_path / "orthanc-db").rglob("*")
        if p.is_file() and p.stat().st_size > BIG // 2
    ]
    assert stored, "Orthanc did not keep the data set"


def test_netdicom2_echo_cli_reports_failure_with_non_zero_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "netdicom2", "echo", "127.0.0.1", "9", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "nothing listens on 127.0.0.1:9" in result.stderr  # one line (issue 19)
