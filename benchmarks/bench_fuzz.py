"""Fuzzing benchmarks: no false alarms on our own stack, and cases/s against live peers.

    python benchmarks/bench_fuzz.py --no-false-alarms [--seeds 10]
    python benchmarks/bench_fuzz.py --throughput [--budget 20] [--before REV]

``--no-false-alarms`` runs many campaigns (different seeds) against our core, our provider and
our StorageSCP as a black-box peer, and prints the cases run and the findings (expected: 0).
``--throughput`` runs ``netdicom2 fuzz`` for ``--budget`` seconds against DCMTK ``storescp``
(ACSE timeout 1 s) and pynetdicom's AE (acse_timeout 1 s), side by side: the revision
``--before`` (exported from git into a temporary folder) and this tree, with --jobs 1 and 4.
Everything runs in a private network namespace (harness.private_loopback).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, Server, free_port, print_table, private_loopback, python_env, running

PYNETDICOM_SCP = """
import logging, sys
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
ae = AE(ae_title="PYNETDICOM")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.acse_timeout = 1
ae.network_timeout = 5
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True)
"""


def no_false_alarms(seeds: int) -> None:
    """Campaigns over many seeds against our own stack: cases run, findings (expected 0)."""
    sys.path.insert(0, str(ROOT))
    from netdicom2.app_scp import StorageSCP
    from netdicom2.fuzz.campaign import run_campaign
    from netdicom2.fuzz.nettargets import ProviderTarget, RemoteTarget
    from netdicom2.fuzz.targets import LocalTarget

    rows = []
    totals = {"local": [0, 0, 0], "provider": [0, 0, 0], "our SCP (black box)": [0, 0, 0]}
    for seed in range(seeds):
        stats = run_campaign(LocalTarget(), max_examples=2000, seed=seed)
        _add(totals["local"], stats)
        provider = ProviderTarget(artim=0.2)
        try:
            stats = run_campaign(provider, max_examples=200, seed=seed)
        finally:
            provider.close()
        _add(totals["provider"], stats)
        with (
            tempfile.TemporaryDirectory() as out,
            StorageSCP("127.0.0.1", 0, artim_timeout=0.5, output_dir=Path(out)) as scp,
        ):
            target = RemoteTarget(scp.address, artim=0.5)
            stats = run_campaign(target, budget=5.0, seed=seed, shrink_budget=0)
        _add(totals["our SCP (black box)"], stats)
    for name, (cases, findings, notes) in totals.items():
        rows.append([name, str(seeds), str(cases), str(findings), str(notes)])
    print_table(
        "No false alarms: campaigns against our own stack",
        ["target", "seeds", "cases", "findings", "[interp] notes"],
        rows,
    )


def _add(total: list[int], stats: object) -> None:
    """Accumulate cases, findings and notes of one campaign."""
    summary = stats.summary()  # type: ignore[attr-defined]
    total[0] += summary["examples"]
    total[1] += len(summary["findings"])
    total[2] += sum(summary["interpretations"].values())


def _fuzz(tree: Path, port: int, budget: float, jobs: int | None) -> dict[str, object]:
    """One ``netdicom2 fuzz`` run from ``tree`` against 127.0.0.1:port; its JSON summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        argv = [sys.executable, "-m", "netdicom2.cli", "fuzz", "--target", f"127.0.0.1:{port}"]
        argv += ["--artim", "1", "--budget", f"{budget:g}s", "--seed", "7", "--database", "none"]
        argv += ["--plain", "--json", str(out), "--corpus", str(Path(tmp) / "corpus")]
        if jobs is not None:
            argv += ["--jobs", str(jobs)]
        env = python_env()
        env["PYTHONPATH"] = str(tree)
        subprocess.run(argv, env=env, cwd=tmp, capture_output=True, timeout=budget + 120)
        result: dict[str, object] = json.loads(out.read_text())
        return result


def throughput(budget: float, before: str) -> None:
    """Cases/s and findings against DCMTK storescp and pynetdicom: before and after."""
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        runs: list[tuple[str, Path, int | None]] = [
            (f"before ({before})", Path(old), None),
            ("after, --jobs 1", ROOT, 1),
            ("after, --jobs 4", ROOT, 4),
        ]
        rows = []
        for peer in ("dcmtk", "pynetdicom"):
            for label, tree, jobs in runs:
                port = free_port()
                if peer == "dcmtk":
                    argv = ["/usr/bin/storescp", "--acse-timeout", "1", "-ts", "5", str(port)]
                    server = Server("storescp", argv, port)
                else:
                    argv = [sys.executable, "-c", PYNETDICOM_SCP, str(port)]
                    server = Server("pynetdicom", argv, port, env=python_env())
                with running(server):
                    summary = _fuzz(tree, port, budget, jobs)
                findings = summary.get("findings") or []
                assert isinstance(findings, list)
                setup = summary.get("setup_failed") or {}
                assert isinstance(setup, dict)
                rows.append(
                    [
                        peer,
                        label,
                        str(summary.get("examples")),
                        str(summary.get("seconds")),
                        str(summary.get("examples_per_second")),
                        str(len(findings)),
                        str(summary.get("failing_cases", sum(f["count"] for f in findings))),
                        str(sum(setup.values()) if setup else "-"),
                        _timed(findings),
                    ]
                )
    print_table(
        f"netdicom2 fuzz for {budget:g} s against live peers (1 s ACSE timer); AFLNet: 34 exec/s",
        HEADERS,
        rows,
    )


HEADERS = ["peer", "run", "cases", "s", "cases/s", "findings", "failing cases", "setup failed"]
HEADERS += ["ARTIM findings"]


def _timed(findings: list[dict[str, object]]) -> str:
    """The timing and hang findings (their causes and counts): what --jobs must not add."""
    timed = [f for f in findings if str(f.get("verdict")) in ("timing", "hang")]
    return ", ".join(f"{str(f['signature']).split(' | ')[-1]} x{f['count']}" for f in timed) or "-"


def main(argv: list[str]) -> int:
    """Parse the options and run the chosen benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-false-alarms", action="store_true")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--before", default="74ca291", help="git revision to compare with")
    args = parser.parse_args(argv)
    if args.no_false_alarms:
        no_false_alarms(args.seeds)
    if args.throughput:
        throughput(args.budget, args.before)
    return 0


if __name__ == "__main__":
    private_loopback(sys.argv)
    raise SystemExit(main(sys.argv[1:]))
