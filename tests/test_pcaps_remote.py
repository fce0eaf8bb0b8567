"""`replay --against HOST:PORT`: recorded requestors against live acceptors, compared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.pcaps.compare import NORMALISED
from netdicom2.pcaps.corpus import corpus_entries
from netdicom2.pcaps.flows import DicomConnection, load_capture
from netdicom2.pcaps.replay_remote import replay_remote
from tests.peers import NetnsServer, dcmtk_storescp, orthanc, pynetdicom_scp

BY_NAME = {Path(e["file"]).stem: e for e in corpus_entries()}


def _connection(name: str) -> DicomConnection:
    """The recorded connection of a corpus capture."""
    entry = BY_NAME[name]
    return load_capture(entry["path"], [entry["port"]]).connections[0]


@pytest.fixture(scope="module")
def scp() -> Iterator[StorageSCP]:
    """netdicom2's StorageSCP configured as in the corpus (AE title NETDICOM2, ARTIM 1 s)."""
    with StorageSCP("127.0.0.1", 0, ae_title="NETDICOM2", artim_timeout=1.0) as server:
        yield server


NETDICOM2_SERVED = [name for name, e in BY_NAME.items() if e["server"] == "netdicom2"]


@pytest.mark.parametrize("name", NETDICOM2_SERVED)
def test_captures_of_netdicom2_scp_replay_against_a_fresh_one(scp: StorageSCP, name: str) -> None:
    result = replay_remote(_connection(name), scp.address, step_timeout=3.0)
    assert result.ok and result.differences == [], result.differences


def test_same_peer_build_replays_without_difference(scp: StorageSCP) -> None:
    result = replay_remote(_connection("storescu_netdicom2_scp_store"), scp.address)
    assert result.ok and result.differences == [], result.differences
    assert result.sent == 4  # RQ, C-STORE-RQ command, data set, RELEASE-RQ


def test_other_build_differs_only_in_normalised_fields() -> None:
    # Recorded against Orthanc; netdicom2 answers with another implementation class UID and
    # version name (normalised) and the same statuses.
    with StorageSCP("127.0.0.1", 0) as lenient:
        result = replay_remote(_connection("netdicom2_store_orthanc"), lenient.address)
    assert result.differences == [], result.differences


def test_a_different_answer_is_a_difference(scp: StorageSCP) -> None:
    # Recorded: Orthanc rejects called AE "WRONG" (RJ 1/1/7); netdicom2 also rejects it, but
    # a netdicom2 SCP without the AE title check accepts: the result must be reported.
    with StorageSCP("127.0.0.1", 0) as lenient:
        result = replay_remote(_connection("orthanc_echoscu_wrong_called_ae"), lenient.address)
    assert not result.ok
    assert result.differences[0].what == "PDU type"
    strict = replay_remote(_connection("orthanc_echoscu_wrong_called_ae"), scp.address)
    assert strict.ok, strict.differences


def test_malformed_request_reaction_is_compared(scp: StorageSCP) -> None:
    result = replay_remote(_connection("ugly_huge_pdu_length_netdicom2"), scp.address)
    assert result.ok, result.differences
    assert result.received[-1].startswith("A-ABORT source 2")


def test_refused_connection_is_reported() -> None:
    result = replay_remote(
        _connection("dcmtk_echoscu_storescp_echo"), ("127.0.0.1", 9), step_timeout=2.0
    )
    assert not result.ok and not result.differences and result.verdict == "UNREACHABLE"
    assert result.unreachable == "nothing listens on 127.0.0.1:9 (connection refused)"


def test_normalisation_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "pcaps.md").read_text()
    for key in NORMALISED:
        assert f"`{key}`" in doc


PEERS: list[tuple[str, Callable[[Path], AbstractContextManager[NetnsServer]], list[str]]] = [
    (
        "dcmtk",
        dcmtk_storescp,
        [
            "dcmtk_echoscu_storescp_echo",
            "dcmtk_storescu_storescp_pdu16k",
            "ugly_unknown_pdu_type_sta6",
            "ugly_truncated_rq",
        ],
    ),
    (
        "orthanc",
        orthanc,
        ["orthanc_echoscu_echo", "orthanc_storescu_store", "netdicom2_store_orthanc"],
    ),
    ("pynetdicom", pynetdicom_scp, ["pynetdicom_scp_echoscu_echo", "netdicom2_echo_pynetdicom"]),
]


@pytest.mark.interop
@pytest.mark.parametrize(("peer", "factory", "names"), PEERS, ids=[p[0] for p in PEERS])
def test_corpus_against_the_live_peer_it_was_recorded_with(
    tmp_path: Path, peer: str, factory: Callable[[Path], Any], names: list[str]
) -> None:
    with factory(tmp_path) as server:
        for name in names:
            address = ("127.0.0.1", server.port)
            result = replay_remote(_connection(name), address, connect=server.connect)
            unexcused = [d.as_dict() for d in result.differences if not d.excused_by]
            assert unexcused == [], (name, result.received)
