"""Record the regression corpus: real peers on loopback, through the recording proxy.

    python -m netdicom2.pcaps.record_corpus [--only NAME ...] [--out DIR]

The script re-executes itself under ``unshare -n`` with only the loopback interface up, so the
servers it starts (DCMTK storescp, Orthanc, a pynetdicom SCP, netdicom2's SCP) can bind no
reachable interface. Each scenario relays one client's connection through
``pcaps.recorder.RecordingProxy`` to one server and writes ``pcaps/corpus/<name>.pcap``; the
file ``pcaps/corpus.json`` then records who spoke to whom, the versions, and what the analysis
found (``pcaps/MANIFEST.md`` is generated from it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdicom2.conformance.tools import system_binary
from netdicom2.pcaps import corpus_clients
from netdicom2.pcaps.part10 import secondary_capture
from netdicom2.pcaps.recorder import RecordingProxy

__all__ = ["SCENARIOS", "Scenario", "main"]

HERE = Path(__file__).resolve().parent
_NETNS_FLAG = "NETDICOM2_CORPUS_NETNS"
_PROXY_PORT = 40000

PYNETDICOM_SCP = r"""
import sys
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification, SecondaryCaptureImageStorage
mode = sys.argv[2]
ae = AE(ae_title="PYNETDICOM")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.add_supported_context(SecondaryCaptureImageStorage, scu_role=True, scp_role=True)
def on_echo(event):
    if mode == "abort":
        event.assoc.abort()
    return 0x0000
handlers = [
    (evt.EVT_C_ECHO, on_echo),
    (evt.EVT_C_STORE, lambda event: 0x0000),
    (evt.EVT_USER_ID, lambda event: (True, b"corpus-server-token")),
    (evt.EVT_SOP_EXTENDED, lambda event: {u: b"\x01\x00" for u in event.app_info}),
    (evt.EVT_SOP_COMMON, lambda event: {}),
    (evt.EVT_ASYNC_OPS, lambda event: (1, 1)),
]
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True, evt_handlers=handlers)
"""

PYNETDICOM_SCU = r"""
import sys
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from pynetdicom.presentation import AllStoragePresentationContexts
mode, port, called = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ae = AE(ae_title="PYNETDICOM-SCU")
if mode == "many":
    for cx in AllStoragePresentationContexts[:127]:
        ae.add_requested_context(cx.abstract_syntax)
ae.add_requested_context(Verification)
assoc = ae.associate("127.0.0.1", port, ae_title=called)
if assoc.is_established:
    if mode == "abort":
        assoc.abort()
    else:
        assoc.send_c_echo()
        assoc.release()
"""


@dataclass
class Scenario:
    """One capture: which server, which client, and what the analysis must find."""

    name: str
    server: str
    client: str
    description: str
    run: Callable[[tuple[str, int], Path], None]
    server_options: tuple[str, ...] = ()
    expect_invalid: int = 0
    expect_findings: list[str] = field(default_factory=list)


def _tool(*argv: str) -> Callable[[tuple[str, int], Path], None]:
    """A client program; "{host}", "{port}", "{file}" (32x32) and "{big}" (64x64) substituted."""

    def run(address: tuple[str, int], tmp: Path) -> None:
        files = {"file": str(tmp / "sc.dcm"), "big": str(tmp / "sc64.dcm")}
        args = [a.format(host=address[0], port=address[1], **files) for a in argv]
        args[0] = system_binary(args[0]) or args[0]  # DCMTK's, not pynetdicom's same-named script
        subprocess.run(args, capture_output=True, timeout=60, check=False)

    return run


def _raw(
    func: Callable[[tuple[str, int], str], None], called: str
) -> Callable[[tuple[str, int], Path], None]:
    """A scripted client of ``pcaps.corpus_clients``."""
    return lambda address, _tmp: func(address, called)


_PY = sys.executable
_ND2 = [_PY, "-m", "netdicom2"]
SCENARIOS: list[Scenario] = [
    Scenario(
        "dcmtk_echoscu_storescp_echo",
        "storescp",
        "echoscu",
        "C-ECHO and release",
        _tool("echoscu", "-aec", "STORESCP", "{host}", "{port}"),
    ),
    Scenario(
        "dcmtk_storescu_storescp_pdu16k",
        "storescp",
        "storescu",
        "C-STORE of a 32x32 SC image, max PDU 16384 both ways; storescu's default proposal "
        "(every storage SOP class)",
        _tool("storescu", "-aec", "STORESCP", "{host}", "{port}", "{file}"),
    ),
    Scenario(
        "dcmtk_storescu_storescp_pdu4k",
        "storescp",
        "storescu",
        "C-STORE of a 64x64 image, max PDU 4096 both ways: the data set spans 2 P-DATA-TF",
        _tool("storescu", "-R", "-aec", "STORESCP", "-pdu", "4096", "{host}", "{port}", "{big}"),
        server_options=("-pdu", "4096"),
    ),
    Scenario(
        "dcmtk_storescu_storescp_pdu128k",
        "storescp",
        "storescu",
        "C-STORE of a 64x64 image, max PDU 131072 both ways",
        _tool("storescu", "-R", "-aec", "STORESCP", "-pdu", "131072", "{host}", "{port}", "{big}"),
        server_options=("-pdu", "131072"),
    ),
    Scenario(
        "dcmtk_echoscu_storescp_refused",
        "storescp --refuse",
        "echoscu",
        "storescp refuses every association: A-ASSOCIATE-RJ",
        _tool("echoscu", "-aec", "STORESCP", "{host}", "{port}"),
        server_options=("--refuse",),
    ),
    Scenario(
        "dcmtk_echoscu_abort_requestor",
        "storescp",
        "echoscu --abort",
        "C-ECHO, then the requestor aborts (A-ABORT source 0)",
        _tool("echoscu", "--abort", "-aec", "STORESCP", "{host}", "{port}"),
    ),
    Scenario(
        "dcmtk_storescu_abort_acceptor",
        "storescp --abort-after",
        "storescu",
        "the acceptor aborts after receiving the C-STORE-RQ",
        _tool("storescu", "-R", "-aec", "STORESCP", "{host}", "{port}", "{file}"),
        server_options=("--abort-after",),
    ),
    Scenario(
        "orthanc_echoscu_echo",
        "orthanc",
        "echoscu",
        "C-ECHO to Orthanc",
        _tool("echoscu", "-aec", "ORTHANC", "{host}", "{port}"),
    ),
    Scenario(
        "orthanc_storescu_store",
        "orthanc",
        "storescu",
        "C-STORE to Orthanc",
        _tool("storescu", "-R", "-aec", "ORTHANC", "{host}", "{port}", "{file}"),
    ),
    Scenario(
        "orthanc_echoscu_wrong_called_ae",
        "orthanc (check called AE)",
        "echoscu",
        "called AE title WRONG: Orthanc rejects the association",
        _tool("echoscu", "-aec", "WRONG", "{host}", "{port}"),
    ),
    Scenario(
        "pynetdicom_scp_echoscu_echo",
        "pynetdicom",
        "echoscu",
        "C-ECHO to pynetdicom",
        _tool("echoscu", "-aec", "PYNETDICOM", "{host}", "{port}"),
    ),
    Scenario(
        "pynetdicom_scp_abort_on_echo",
        "pynetdicom (abort)",
        "echoscu",
        "pynetdicom's service user aborts while answering C-ECHO",
        _tool("echoscu", "-aec", "PYNETDICOM", "{host}", "{port}"),
    ),
    Scenario(
        "pynetdicom_scu_128_contexts",
        "storescp",
        "pynetdicom",
        "128 presentation contexts proposed; C-ECHO; release",
        _tool(_PY, "-c", PYNETDICOM_SCU, "many", "{port}", "STORESCP"),
    ),
    Scenario(
        "pynetdicom_scu_abort",
        "storescp",
        "pynetdicom",
        "associate, then A-ABORT",
        _tool(_PY, "-c", PYNETDICOM_SCU, "abort", "{port}", "STORESCP"),
    ),
    Scenario(
        "netdicom2_echo_storescp",
        "storescp",
        "netdicom2 echo",
        "netdicom2 C-ECHO to DCMTK",
        _tool(*_ND2, "echo", "{host}", "{port}", "--called-ae", "STORESCP"),
    ),
    Scenario(
        "netdicom2_echo_pynetdicom",
        "pynetdicom",
        "netdicom2 echo",
        "netdicom2 C-ECHO to pynetdicom",
        _tool(*_ND2, "echo", "{host}", "{port}", "--called-ae", "PYNETDICOM"),
    ),
    Scenario(
        "netdicom2_store_orthanc",
        "orthanc",
        "netdicom2 store",
        "netdicom2 C-STORE to Orthanc",
        _tool(*_ND2, "store", "{host}", "{port}", "{file}", "--called-ae", "ORTHANC"),
    ),
    Scenario(
        "storescu_netdicom2_scp_store",
        "netdicom2",
        "storescu",
        "DCMTK C-STORE to netdicom2",
        _tool("storescu", "-R", "-aec", "NETDICOM2", "{host}", "{port}", "{file}"),
    ),
    Scenario(
        "netdicom2_scp_wrong_called_ae",
        "netdicom2",
        "echoscu",
        "called AE title WRONG: netdicom2's SCP rejects (RJ 1/1/7)",
        _tool("echoscu", "-aec", "WRONG", "{host}", "{port}"),
    ),
    Scenario(
        "all_user_info_sub_items",
        "pynetdicom",
        "scripted (netdicom2 codec)",
        "sub-items 51H-58H in the RQ; C-ECHO; release",
        _raw(corpus_clients.all_sub_items_session, "PYNETDICOM"),
    ),
    Scenario(
        "ugly_unknown_pdu_type_sta6",
        "storescp",
        "scripted",
        "PDU type 09H on an established association",
        _raw(corpus_clients.garbage_after_association, "STORESCP"),
        expect_invalid=1,
        expect_findings=["requestor §9.3", "acceptor Evt19/Sta6 AA-8"],
    ),
    Scenario(
        "ugly_unknown_pdu_type_sta2",
        "netdicom2",
        "scripted",
        "PDU type 09H before any A-ASSOCIATE-RQ",
        _raw(corpus_clients.garbage_before_association, "NETDICOM2"),
        expect_invalid=1,
        expect_findings=["requestor §9.3"],
    ),
    Scenario(
        "ugly_huge_pdu_length_dcmtk",
        "storescp",
        "scripted",
        "P-DATA-TF header declaring 4294967280 bytes",
        _raw(corpus_clients.huge_length_after_association, "STORESCP"),
        expect_findings=["requestor Annex D.1", "acceptor Evt19/Sta6 AA-8"],
    ),
    Scenario(
        "ugly_huge_pdu_length_netdicom2",
        "netdicom2",
        "scripted",
        "P-DATA-TF header declaring 4294967280 bytes",
        _raw(corpus_clients.huge_length_after_association, "NETDICOM2"),
        expect_findings=["requestor Annex D.1"],
    ),
    Scenario(
        "ugly_truncated_rq",
        "storescp",
        "scripted",
        "half an A-ASSOCIATE-RQ, then the client closes",
        _raw(corpus_clients.truncated_request, "STORESCP"),
        expect_findings=["requestor §9.3"],
    ),
    Scenario(
        "ugly_silent_connection",
        "netdicom2",
        "scripted",
        "connect and send nothing: netdicom2's ARTIM (1 s) closes",
        _raw(corpus_clients.silent_connection, "NETDICOM2"),
        expect_findings=["requestor Evt2/Sta4 AE-2"],
    ),
]


# ---------------------------------------------------------------------------------- servers


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Bounded wait for a server process to accept connections (not between our threads)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        threading.Event().wait(delay)
        delay = min(delay * 2, 0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


@contextlib.contextmanager
def _server(kind: str, options: tuple[str, ...], tmp: Path) -> Iterator[int]:
    """Start a server in this (private) network namespace; yield its port."""
    if kind.startswith("storescp"):
        port = 11112
        argv = ["storescp", "--ignore", "-aet", "STORESCP", *options, str(port)]
    elif kind.startswith("orthanc"):
        port = 4242
        storage = tmp / f"orthanc-{time.monotonic_ns()}"
        config = {
            "Name": "netdicom2-corpus",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomAet": "ORTHANC",
            "DicomPort": port,
            "HttpServerEnabled": False,
            "RemoteAccessAllowed": False,
            "DicomCheckCalledAet": "check" in kind,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "Plugins": [],
        }
        path = tmp / "orthanc.json"
        path.write_text(json.dumps(config))
        argv = ["Orthanc", str(path)]
    elif kind.startswith("pynetdicom"):
        port = 11113
        argv = [
            sys.executable,
            "-c",
            PYNETDICOM_SCP,
            str(port),
            "abort" if "abort" in kind else "ok",
        ]
    else:
        port = 104
        argv = [*_ND2, "scp", "--port", str(port), "--artim", "1", "--ae-title", "NETDICOM2"]
    log = (tmp / "server.log").open("ab")
    argv[0] = system_binary(argv[0]) or argv[0]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_listening(port, process)
        except RuntimeError as exc:
            log.flush()
            tail = (tmp / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[0]}: {exc}\n{tail}") from None
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _versions() -> dict[str, str]:
    """Versions of the peers taking part."""
    from importlib.metadata import version

    import netdicom2

    def first_line(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (
            (out.stdout or out.stderr).strip().splitlines()[0]
            if (out.stdout or out.stderr)
            else "?"
        )

    return {
        "dcmtk": first_line([system_binary("storescp") or "storescp", "--version"])
        .strip("$ ")
        .replace("dcmtk: ", ""),
        "orthanc": first_line(["Orthanc", "--version"]),
        "pynetdicom": version("pynetdicom"),
        "netdicom2": netdicom2.__version__,
    }


def _analyse(path: Path, server_port: int) -> dict[str, Any]:
    """What the tooling finds in a freshly recorded capture."""
    from netdicom2.pcaps.codec_check import check_codec
    from netdicom2.pcaps.describe import PDU_NAMES
    from netdicom2.pcaps.flows import load_capture
    from netdicom2.pcaps.model import judge

    capture = load_capture(path, [server_port])
    codec = check_codec(capture)
    findings: list[str] = []
    sequence: list[str] = []
    for conn in capture.connections:
        findings += [f"{f.side} {f.cell}" for f in judge(conn).findings]
        for event in conn.timeline():
            arrow = ">" if event.side == "requestor" else "<"
            if event.record is None:
                sequence.append(f"{arrow}{event.kind.upper()}")
            else:
                sequence.append(
                    arrow + PDU_NAMES.get(event.record.pdu_type, f"0x{event.record.pdu_type:02X}")
                )
    return {
        "connections": len(capture.connections),
        "pdus": codec.pdus,
        "invalid": sum(1 for i in codec.issues if i.kind == "invalid"),
        "mismatch": sum(1 for i in codec.issues if i.kind == "mismatch"),
        "incomplete": sum(1 for i in codec.issues if i.kind == "incomplete"),
        "findings": findings,
        "sequence": " ".join(sequence),
    }


def _record(scenario: Scenario, out_dir: Path, tmp: Path) -> dict[str, Any]:
    """Run one scenario through the proxy and describe the result."""
    path = out_dir / f"{scenario.name}.pcap"
    with _server(scenario.server, scenario.server_options, tmp) as port:
        seed = sum(scenario.name.encode())
        proxy = RecordingProxy(("127.0.0.1", _PROXY_PORT), ("127.0.0.1", port), path, seed=seed)
        proxy.start()
        try:
            scenario.run(("127.0.0.1", _PROXY_PORT), tmp)
            proxy.wait_finished(1, timeout=15)
        finally:
            proxy.stop()
    entry: dict[str, Any] = {
        "file": f"corpus/{path.name}",
        "server": scenario.server,
        "client": scenario.client,
        "scenario": scenario.description,
        "port": port,
        "bytes": path.stat().st_size,
        "expect_invalid": scenario.expect_invalid,
        "expect_findings": scenario.expect_findings,
    }
    entry.update(_analyse(path, port))
    return entry


def write_manifest(corpus: dict[str, Any], path: Path) -> None:
    """pcaps/MANIFEST.md from corpus.json."""
    lines = [
        "# The pcaps regression corpus",
        "",
        "Recorded by `python -m netdicom2.pcaps.record_corpus` (do not edit: regenerate).",
        "Every capture is one client's connection relayed through",
        "`netdicom2.pcaps.recorder.RecordingProxy` to one server,",
        "all inside a private network namespace (`unshare -n`, loopback only). The server port",
        "in each file is the real server's; the client address is the client's.",
        "",
        "Regenerate with `python -m netdicom2.pcaps.record_corpus [--only NAME ...]` (root, for",
        "`unshare -n`; needs DCMTK, Orthanc, pynetdicom). `sequence`: `>` requestor to",
        "acceptor, `<` back; FIN/RST are the TCP closes. `findings`: where the analysis",
        "(`pcaps.model`) found a recorded peer leaving PS3.8, as `side cell`; see docs/pcaps.md.",
        "The tests check every capture's codec round trip, these findings, and local replays.",
        "",
        "Peers: " + "; ".join(f"{k} {v}" for k, v in corpus["versions"].items()),
        "",
        "| file | client -> server | scenario | PDUs | sequence | findings |",
        "|---|---|---|---|---|---|",
    ]
    for entry in corpus["captures"]:
        findings = ", ".join(entry["findings"]) or "-"
        lines.append(
            f"| {entry['file']} | {entry['client']} -> {entry['server']} :{entry['port']} | "
            f"{entry['scenario']} | {entry['pdus']} | `{entry['sequence']}` | {findings} |"
        )
    lines += [
        "",
        f"Total: {len(corpus['captures'])} captures, "
        f"{sum(e['bytes'] for e in corpus['captures'])} bytes.",
        "",
    ]
    path.write_text("\n".join(lines))


def _reexec_in_netns(argv: list[str]) -> int:
    """Run this script again alone in a new network namespace with loopback up."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            print(f"record_corpus: {tool} is required", file=sys.stderr)
            return 2
    env = dict(os.environ, **{_NETNS_FLAG: "1"})
    script = 'ip link set lo up && exec "$@"'
    command = [
        "unshare",
        "-n",
        "sh",
        "-c",
        script,
        "sh",
        sys.executable,
        "-m",
        "netdicom2.pcaps.record_corpus",
        *argv,
    ]
    return subprocess.run(command, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Record the corpus (re-executing in a private network namespace first)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to (re)record")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if os.environ.get(_NETNS_FLAG) != "1":
        return _reexec_in_netns(argv)
    corpus_dir = args.out / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    index = args.out / "corpus.json"
    corpus: dict[str, Any] = json.loads(index.read_text()) if index.exists() else {"captures": []}
    corpus["versions"] = _versions()
    entries = {e["file"]: e for e in corpus["captures"]}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        secondary_capture(tmp / "sc.dcm")
        secondary_capture(tmp / "sc64.dcm", "netdicom2-corpus-64", rows=64, columns=64)
        for scenario in SCENARIOS:
            if args.only is not None and scenario.name not in args.only:
                continue
            entry = _record(scenario, corpus_dir, tmp)
            entries[entry["file"]] = entry
            ok = entry["invalid"] == scenario.expect_invalid and entry["mismatch"] == 0
            ok = ok and sorted(entry["findings"]) == sorted(scenario.expect_findings)
            failures += not ok
            print(
                f"{'ok ' if ok else 'UNEXPECTED'} {scenario.name}: {entry['sequence']} "
                f"findings={entry['findings']}",
                flush=True,
            )
    names = [f"corpus/{s.name}.pcap" for s in SCENARIOS]
    corpus["captures"] = [entries[n] for n in names if n in entries]
    index.write_text(json.dumps(corpus, indent=1) + "\n")
    write_manifest(corpus, args.out / "MANIFEST.md")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
