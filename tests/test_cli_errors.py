"""One error path for the command line: one line on stderr, the documented exit statuses."""

from __future__ import annotations

import argparse
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netdicom2 import cli


def _run_with(
    handler: Callable[[argparse.Namespace], int],
    monkeypatch: pytest.MonkeyPatch,
    *words: str,
) -> int:
    """Run cli.main with one extra subcommand `job` whose handler is `handler`."""
    real = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("job").set_defaults(handler=handler)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main(["job", *words])


def _raiser(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def handler(_: argparse.Namespace) -> int:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "status", "text"),
    [
        (cli.UsageError("--port 0 is not a port"), 2, "--port 0 is not a port"),
        (cli.JobError("nothing listens on 127.0.0.1:9"), 1, "nothing listens on 127.0.0.1:9"),
        (cli.JobError("peer down", status=4), 4, "peer down"),
        (FileNotFoundError(2, "No such file or directory", "x.pcap"), 1, "x.pcap"),
        (MemoryError(), 1, "MemoryError"),
        (ValueError("a bug"), 1, "internal error ValueError: a bug (run with --debug"),
        (cli.Interrupted(signal.SIGINT), 130, "interrupted (SIGINT)"),
        (cli.Interrupted(signal.SIGTERM), 143, "interrupted (SIGTERM)"),
        (KeyboardInterrupt(), 130, "interrupted (SIGINT)"),
    ],
)
def test_a_failure_is_one_line_with_its_exit_status(
    exc: BaseException,
    status: int,
    text: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _run_with(_raiser(exc), monkeypatch) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("netdicom2 job: ")
    assert text in err and "Traceback" not in err


def test_debug_anywhere_on_the_line_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_with(_raiser(cli.JobError("boom")), monkeypatch, "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("netdicom2 job: boom")


def test_sigterm_during_a_job_raises_interrupted_with_status_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []

    def handler(_: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # let the handler run before returning
        except KeyboardInterrupt as exc:  # a job writes its partial reports here
            assert isinstance(exc, cli.Interrupted)
            seen.append(exc.status)
            raise
        return 0

    before = signal.getsignal(signal.SIGTERM)
    assert _run_with(handler, monkeypatch) == 143
    assert seen == [143]
    assert signal.getsignal(signal.SIGTERM) == before  # restored after the job
    assert "interrupted (SIGTERM)" in capsys.readouterr().err


def test_a_missing_extra_names_the_extra_whatever_the_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = cli.importlib.import_module

    def without_hypothesis(name: str, package: str | None = None) -> Any:
        if name.endswith(
            "netdicom2.fuzz.cli"
        ):  # as if `pip install .` had left out the harness extra
            exc = ModuleNotFoundError("No module named 'hypothesis'")
            exc.name = "hypothesis"
            raise exc
        return real_import(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", without_hypothesis)
    assert cli.main(["fuzz", "--target", "local", "--budget", "5s"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'netdicom2[harness]'" in err and "unrecognized" not in err


def test_unknown_options_of_an_available_command_are_still_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["echo", "127.0.0.1", "104", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:104", ("127.0.0.1", 104)),
        ("pacs.example:11112", ("pacs.example", 11112)),
        ("[::1]:4242", ("::1", 4242)),
    ],
)
def test_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert cli.host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage", "expected HOST:PORT"),
        (":104", "expected HOST:PORT"),
        ("127.0.0.1:99999", "99999"),
        ("127.0.0.1:0", "not in 1..65535"),
        ("127.0.0.1:http", "'http'"),
    ],
)
def test_host_port_refuses_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace(".", r"\.")):
        cli.host_port(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("11112", ("127.0.0.1", 11112)),
        ("0", ("127.0.0.1", 0)),
        ("0.0.0.0:104", ("0.0.0.0", 104)),
        ("[::1]:4242", ("::1", 4242)),
    ],
)
def test_listen_address_defaults_to_loopback(text: str, expected: tuple[str, int]) -> None:
    assert cli.listen_address(text) == expected


@pytest.mark.parametrize("text", ["99999", "host:port", ":104", "-1", "a:70000"])
def test_listen_address_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.listen_address(text)


def test_output_path_is_checked_before_any_work(tmp_path: Path) -> None:
    assert cli.output_path(str(tmp_path / "report.json")) == tmp_path / "report.json"
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        cli.output_path(str(tmp_path / "missing" / "report.json"))
    (tmp_path / "file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a folder"):
        cli.output_path(str(tmp_path / "file" / "report.json"))
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        cli.output_path(str(tmp_path))


@pytest.mark.parametrize("text", ["A" * 17, "", "   ", "BAD\\AE", "TAB\tAE"])
def test_ae_title_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.ae_title(text)


def test_ae_title_accepts_sixteen_characters() -> None:
    assert cli.ae_title("A" * 16) == "A" * 16


def test_connect_error_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError) as refused:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert cli.connect_error(refused.value, "127.0.0.1", port) == (
        f"nothing listens on 127.0.0.1:{port} (connection refused)"
    )
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert cli.connect_error(unknown, "no-such-host.invalid", 104).startswith(
        "cannot resolve host 'no-such-host.invalid'"
    )
