"""``--html`` on conformance, replay and fuzz, ``netdicom2 report``, and the terminal bar."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_reports_html import DATA, ROOT, Elements

from netdicom2.cli import main
from netdicom2.reports.progress import matrix_bar

CORPUS = ROOT / "pcaps" / "corpus"
PEERS = ROOT / "conformance" / "reports"


def test_conformance_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page, data = tmp_path / "m.html", tmp_path / "m.json"
    assert main(["conformance", "--target", "local", "--html", str(page), "--json", str(data)]) == 0
    cells = Elements(page.read_text()).find("td", "c")
    assert len(cells) == 247
    assert sum("v-pass" in c["class"] for c in cells) == 123
    assert "123 pass" in capsys.readouterr().out  # the terminal report is still printed


def test_replay_html_draws_the_capture(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    capture = CORPUS / "dcmtk_echoscu_storescp_echo.pcap"
    assert main(["replay", str(capture), "--against", "local", "--html", str(page), "-q"]) == 0
    parsed = Elements(page.read_text())
    assert len(parsed.find("svg", "ladder")) == 1
    assert len(parsed.find("g", "step")) == 8  # 6 PDUs and 2 FINs


def test_codec_check_html_marks_the_refused_pdu(tmp_path: Path) -> None:
    page = tmp_path / "c.html"
    capture = CORPUS / "ugly_unknown_pdu_type_sta6.pcap"
    assert main(["replay", str(capture), "--html", str(page), "-q"]) == 1
    parsed = Elements(page.read_text())
    assert len(parsed.find("g", "st-invalid")) == 1
    assert "codec invalid" in page.read_text()


def test_fuzz_html_has_a_timeline(tmp_path: Path) -> None:
    page = tmp_path / "f.html"
    argv = ["fuzz", "--target", "local", "--max-examples", "30", "--seed", "1", "--plain"]
    argv += ["--database", "none", "--corpus", str(tmp_path / "corpus"), "--html", str(page)]
    assert main(argv) == 0
    parsed = Elements(page.read_text())
    assert len(parsed.find("svg", "chart")) == 4
    assert len(parsed.find("td", "reached")) > 5


def test_report_compares_several_conformance_reports(tmp_path: Path) -> None:
    page = tmp_path / "cmp.html"
    files = [str(PEERS / f"{n}.json") for n in ("dcmtk-3.6.7-storescp", "orthanc-1.10.1")]
    labels = ["--label", "DCMTK", "--label", "Orthanc"]
    assert main(["report", *files, *labels, "--html", str(page)]) == 0
    assert len(Elements(page.read_text()).find("span", "m")) == 2 * 247
    assert "DCMTK · Orthanc" in page.read_text()
    assert main(["report", *files, "--label", "one", "--html", str(page)]) == 2


@pytest.mark.parametrize(
    ("source", "marker"),
    [
        (PEERS / "pynetdicom-3.0.4-scp.json", ("td", "c")),
        (DATA / "fuzz-pynetdicom.json", ("svg", "chart")),
        (DATA / "replay-pynetdicom.json", ("svg", "ladder")),
    ],
)
def test_report_recognises_each_kind(source: Path, marker: tuple[str, str], tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    assert main(["report", str(source), "--base", str(ROOT), "--html", str(page)]) == 0
    assert Elements(page.read_text()).find(*marker)


def test_report_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert main(["report", str(other), "--html", str(tmp_path / "x.html")]) == 2
    fuzz = str(DATA / "fuzz-pynetdicom.json")
    assert main(["report", fuzz, fuzz, "--html", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Result:
    """What run_matrix passes to its progress callback (only the id is read)."""

    def __init__(self, test_id: str) -> None:
        self.test_id = test_id


def test_matrix_bar_is_silent_off_a_terminal() -> None:
    seen: list[object] = []
    stream = io.StringIO()
    with matrix_bar(None, then=seen.append, stream=stream) as on_cell:
        on_cell(Result("Sta1-Evt1-AE-1"))
    assert len(seen) == 1 and stream.getvalue() == ""


def test_matrix_bar_counts_the_selected_cells_on_a_terminal() -> None:
    seen: list[object] = []
    stream = Terminal()
    with matrix_bar(
        ["Sta6-Evt10", "Sta6-Evt12", "nonsense"], then=seen.append, stream=stream
    ) as on_cell:
        on_cell(Result("Sta6-Evt10-DT-2"))
    assert len(seen) == 1
    assert "Table 9-10" in stream.getvalue() and "/2" in stream.getvalue()


def test_the_user_guide_cell_script_passes(capsys: pytest.CaptureFixture[str]) -> None:
    guide = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/index.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("True\n") and "ExpectClosed(): closed" in out


def test_an_html_path_in_a_missing_folder_is_refused_before_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    report.write_text("{}")
    target = tmp_path / "missing" / "page.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(report), "--html", str(target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "folder" in err and str(target) in err
