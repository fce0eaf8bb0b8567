"""Where the captures are: the committed corpus and the shared public captures.

The committed corpus is ``pcaps/corpus/*.pcap`` indexed by ``pcaps/corpus.json`` (written by
``pcaps.record_corpus``). The public captures are used by path, never copied into the
repository: ``../shared/external-captures/pcaps`` next to the repository; tests skip them with
a reason when that folder is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CORPUS_INDEX", "EXTERNAL", "EXTERNAL_DIR", "ExternalCapture", "corpus_entries"]

HERE = Path(__file__).resolve().parent
CORPUS_INDEX = HERE / "corpus.json"
EXTERNAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "external-captures" / "pcaps"


@dataclass(frozen=True)
class ExternalCapture:
    """A public capture and what the analysis must find in it (see its MANIFEST.md)."""

    name: str
    pdus: int
    findings: list[str] = field(default_factory=list)


#: The public captures of ../shared/external-captures/pcaps and their expected findings.
EXTERNAL: list[ExternalCapture] = [
    ExternalCapture("profuzzbench_dicom_echo.pcap", 6),
    ExternalCapture("profuzzbench_dicom_find.pcap", 7),
    # Pipelined P-DATA before the AC (Evt9/Sta5 blank), then FIN while awaiting A-RELEASE-RP.
    ExternalCapture("profuzzbench_dicom_get.pcap", 6, ["requestor Evt9/Sta5", "requestor Sta7"]),
    ExternalCapture("profuzzbench_dicom_store.pcap", 7, ["requestor Evt9/Sta5"]),
    ExternalCapture("tapirx_dicom_arq_1_find_testclient.pcap", 1),
    ExternalCapture("tapirx_dicom_arq_2_get_testclient.pcap", 1),
    ExternalCapture("tapirx_dicom_arq_3_find_bogus_local.pcap", 1),
    ExternalCapture("tapirx_dicom_arq_4_get_bogus_local.pcap", 1),
    # The requestor drops the connection in Sta6: no A-RELEASE, no A-ABORT.
    ExternalCapture("tapirxl_ct_to_pacs_scenario.pcap", 5, ["requestor Sta6"]),
    ExternalCapture("tapirxl_synthetic_philips_demo.pcap", 5, ["requestor Sta6"]),
]


def corpus_entries() -> list[dict[str, Any]]:
    """The committed captures with their recorded scenario and expected analysis."""
    if not CORPUS_INDEX.exists():
        return []
    data: dict[str, Any] = json.loads(CORPUS_INDEX.read_text())
    entries: list[dict[str, Any]] = data["captures"]
    for entry in entries:
        entry["path"] = HERE / entry["file"]
    return entries
