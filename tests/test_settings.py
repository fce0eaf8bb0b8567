"""Settings no association can use are refused up front, by the library and the command line."""

from __future__ import annotations

import socket

import pytest

from netdicom2.app_scp import StorageSCP
from netdicom2.cli import main as cli_main
from netdicom2.connection import Connection
from netdicom2.dulserver import DULServer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_pdu_length": -1}, "max_pdu_length must be 0..4294967295"),
        ({"max_pdu_length": 1 << 32}, "max_pdu_length must be 0..4294967295"),
        ({"artim_timeout": 0.0}, "artim_timeout must be more than 0"),
        ({"artim_timeout": -5.0}, "artim_timeout must be more than 0"),
        ({"artim_timeout": float("nan")}, "artim_timeout must be more than 0"),
    ],
)
def test_a_connection_refuses_unusable_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Connection(**kwargs)  # type: ignore[arg-type]


def test_the_limits_themselves_are_accepted() -> None:
    assert Connection(max_pdu_length=0).max_pdu_length == 0  # 0: no limit (PS3.8 Annex D.1)
    assert Connection(max_pdu_length=0xFFFFFFFF).max_pdu_length == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_pdu_length": -5}, "max_pdu_length"),
        ({"artim_timeout": 0.0}, "artim_timeout"),
        ({"send_timeout": 0.0}, "timeouts"),
        ({"idle_timeout": -1.0}, "timeouts"),
        ({"max_pending": 0}, "max_pending"),
    ],
)
def test_a_server_refuses_unusable_settings_and_closes_its_listener(
    kwargs: dict[str, float], message: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(ValueError, match=message):
        DULServer(listener, **kwargs)  # type: ignore[arg-type]
    assert listener.fileno() == -1  # closed: nothing is left listening


def test_storage_scp_refuses_zero_associations() -> None:
    with pytest.raises(ValueError, match="max_associations"):
        StorageSCP("127.0.0.1", 0, max_associations=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scp", "--max-pdu", "-5"], "-5 is not in 0..4294967295"),
        (["scp", "--artim", "0"], "0.0 is not more than 0"),
        (["scp", "--send-timeout", "nan"], "not a finite number of seconds: 'nan'"),
        (["scp", "--idle-timeout", "-1"], "-1.0 is not at least 0"),
        (["scp", "--max-pending", "0"], "0 is not in 1.."),
        (["scp", "--max-associations", "0"], "0 is not in 1.."),
        (["scp", "--port", "70000"], "70000 is not in 0..65535"),
        (["echo", "127.0.0.1", "0"], "0 is not in 1..65535"),
        (["echo", "127.0.0.1", "9", "--timeout", "inf"], "not a finite number of seconds: 'inf'"),
        (["store", "127.0.0.1", "9", "f.dcm", "--max-pdu", "x"], "not an integer: 'x'"),
        # The Asynchronous Operations Window is a uint16 (PS3.7 Table D.3-7); store needs 1+.
        (["scp", "--max-operations", "-1"], "-1 is not in 0..65535"),
        (["scp", "--max-operations", "65536"], "65536 is not in 0..65535"),
        (["store", "127.0.0.1", "9", "f.dcm", "--max-operations", "0"], "0 is not in 1..65535"),
    ],
)
def test_the_command_line_refuses_unusable_settings(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2  # a usage error, before any socket is opened
    assert message in capsys.readouterr().err
