"""`netdicom2 conformance`: grid, reports, exit status, and no dependency beyond the stdlib."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netdicom2 import actions
from netdicom2.cli import main
from netdicom2.conformance.matrix import Target, run_matrix
from netdicom2.conformance.report import print_report
from netdicom2.fsm import Action, State

HARNESS = Path(__file__).resolve().parents[1] / "conformance"


def test_local_matrix_writes_json_junit_markdown(tmp_path: Path) -> None:
    out = {k: tmp_path / f"report.{k}" for k in ("json", "xml", "md")}
    argv = ["conformance", "--target", "local", "--json", str(out["json"])]
    argv += ["--junit", str(out["xml"]), "--markdown", str(out["md"])]
    assert main(argv) == 0
    report = json.loads(out["json"].read_text())
    assert report["header"]["target"] == "local"
    assert report["header"]["counts"] == {
        "pass": 123,
        "fail": 0,
        "inconclusive": 0,
        "na": 0,
        "blank": 124,
    }
    assert len(report["cells"]) == 247
    first = report["cells"][0]
    assert first["id"] == "Sta1-Evt1-AE-1" and first["expected"]["next_state"] == ["Sta4"]
    assert "UserSend(" in first["script"]
    suite = ET.parse(out["xml"]).getroot()
    assert len(suite.findall("testcase")) == 247 and suite.get("failures") == "0"
    markdown = out["md"].read_text()
    assert "| Sta13 |" in markdown and "123 pass" in markdown


def test_a_failing_cell_gives_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(actions.ACTIONS, Action.AA_6, lambda ctx: actions.Outcome((), State.Sta1))
    assert main(["conformance", "--target", "local", "--cell", "Sta13-Evt3", "-v"]) == 1
    out = capsys.readouterr().out
    assert "FAIL Sta13-Evt3-AA-6" in out and "Script(cell='Sta13-Evt3'" in out


def test_bad_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--target", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nowhere'" in err


class _Tty(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_plain_text_when_rich_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run_matrix(Target("local", "local"), only=["Sta6-Evt10", "Sta1-Evt2"])
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    stream = _Tty()
    print_report(report, stream)
    text = stream.getvalue()
    assert "Sta6" in text and "1 pass" in text and "1 blank" in text


def test_rich_grid_on_a_terminal() -> None:
    pytest.importorskip("rich")
    report = run_matrix(Target("local", "local"), only=["Sta6-Evt10"])
    stream = _Tty()
    print_report(report, stream)
    assert "Table 9-10" in stream.getvalue() and "✓" in stream.getvalue()


def _module_level_imports(path: Path) -> set[str]:
    """Top-level packages imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.partition(".")[0])
    return found


def test_the_harness_needs_only_the_standard_library() -> None:
    # `pip install . && netdicom2 conformance --target local` on a fresh machine.
    allowed = set(sys.stdlib_module_names) | {"netdicom2"}
    paths = sorted(HARNESS.glob("*.py"))
    assert paths
    for path in paths:
        assert _module_level_imports(path) <= allowed, path.name


def test_command_runs_without_third_party_packages() -> None:
    blocked = ["rich", "hypothesis", "pytest", "pynetdicom", "pydicom", "scapy"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from netdicom2.cli import main\n"
        "sys.exit(main(['conformance', '--target', 'local']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "123 pass, 0 fail" in done.stdout
