"""The `netdicom2` console script: one subcommand per job, each registered by its module."""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

from netdicom2 import __version__

__all__ = [
    "EXIT_FAILURE",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "MAX_LENGTH",
    "Interrupted",
    "JobError",
    "Parser",
    "UsageError",
    "ae_title",
    "bounded_int",
    "connect_error",
    "host_port",
    "listen_address",
    "main",
    "output_path",
    "seconds",
]

# Exit statuses shared by every subcommand (docs/index.md, "Exit statuses").
EXIT_FAILURE = 1  # a runtime failure: the network, a file, a peer that cannot be used
EXIT_USAGE = 2  # a value on the command line that cannot work
EXIT_SIGINT = 130  # 128 + SIGINT: Ctrl-C, after the summary and partial reports
EXIT_SIGTERM = 143  # 128 + SIGTERM


class UsageError(Exception):
    """A command-line value that cannot work: one line on stderr, exit 2."""


class JobError(Exception):
    """An expected runtime failure (network, file, peer): one line on stderr, exit 1."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: jobs catch KeyboardInterrupt, write partial reports and re-raise."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal number)."""
        return 128 + self.signum


# PS3.8 Annex D.1: a maximum length is 32 bits; 0 means no limit.
MAX_LENGTH = 0xFFFFFFFF

# Subcommand name -> "module:function" that adds it to the parser; imported lazily so that
# `netdicom2 --help` stays fast and the library never needs the harness' optional dependencies.
SUBCOMMANDS: dict[str, str] = {
    "scp": "netdicom2.app_scp:add_subcommand",
    "echo": "netdicom2.app_scu:add_subcommands",
    "conformance": "netdicom2.conformance.cli:add_subcommand",
    "replay": "netdicom2.pcaps.cli:add_replay",
    "record": "netdicom2.pcaps.cli:add_record",
    "fuzz": "netdicom2.fuzz.cli:add_subcommand",
    "report": "netdicom2.reports.cli:add_subcommand",
}

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the value (exit 2)."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (PROG --help lists the options)` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand (subparsers are Parsers too)."""
    parser = Parser(
        prog="netdicom2",
        description="DICOM Upper Layer (PS3.8) provider, conformance harness and fault injector.",
    )
    parser.add_argument("--version", action="version", version=f"netdicom2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in SUBCOMMANDS.items():
        module_name, func_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an optional extra is missing: say so instead of hiding it
            p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
            # Whatever options follow, say which extra to install (not "unrecognized arguments").
            p.set_defaults(handler=_unavailable(name, exc), any_arguments=True)
            continue
        getattr(module, func_name)(sub)
    return parser


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], else a usage error naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def seconds(*, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a time in seconds above 0 (or 0 too, when it means "never")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
        if not (value > 0 or (zero and value == 0)):
            bound = "at least 0" if zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{value} is not {bound} (seconds)")
        return value

    return parse


# PS3.8 §9.3.2 / PS3.5 Table 6.2-1 (AE VR): an AE title is 1-16 characters of the default
# repertoire without backslash or control characters; leading and trailing spaces are padding.
AE_TITLE_LENGTH = 16


def ae_title(text: str) -> str:
    """An argparse type: an AE title of 1-16 printable ASCII characters, no backslash."""
    stripped = text.strip(" ")
    if not stripped:
        raise argparse.ArgumentTypeError("an AE title must not be empty or all spaces")
    if len(text) > AE_TITLE_LENGTH:
        raise argparse.ArgumentTypeError(
            f"AE title {text!r} has {len(text)} characters; at most {AE_TITLE_LENGTH} (PS3.5 AE)"
        )
    if any(not (0x20 <= ord(c) < 0x7F) or c == "\\" for c in text):
        raise argparse.ArgumentTypeError(
            f"AE title {text!r} has a character outside printable ASCII or a backslash"
        )
    return text


def _endpoint(text: str, lowest_port: int) -> tuple[str, bool, int]:
    """(host, whether a HOST: was given, port) of [HOST:]PORT, HOST unbracketed ([V6])."""
    host, sep, port_text = text.rpartition(":")
    if sep and not host:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"port {port_text!r} in {text!r} is not a number"
        ) from None
    if not lowest_port <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} in {text!r} is not in {lowest_port}..65535")
    return host, bool(sep), port


def host_port(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT (or [V6]:PORT) to connect to, with a port in 1..65535."""
    if not text.rpartition(":")[0]:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host, _, port = _endpoint(text, 1)
    return host, port


def listen_address(text: str) -> tuple[str, int]:
    """An argparse type: [HOST:]PORT to listen on; HOST 127.0.0.1 by default, PORT 0 any free."""
    host, _, port = _endpoint(text, 0)
    return host or "127.0.0.1", port


def output_path(text: str) -> Path:
    """An argparse type: a file to write, checked before any work (its folder must exist)."""
    path = Path(text)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file to write")
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} does not exist")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} is not writable")
    return path


def connect_error(exc: BaseException, host: str, port: int) -> str:
    """One line for a failed TCP connect, naming the address and what to check."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r} ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {where} (connection refused)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from {where} (connect timed out)"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"{where} is unreachable ({exc.strerror})"
    if isinstance(exc, ConnectionResetError):
        return f"{where} reset the connection at once"
    strerror = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot connect to {where}: {strerror}"


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """SIGINT/SIGTERM handler: unwind the job like Ctrl-C, remembering which signal it was."""
    raise Interrupted(signum)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """While a job runs, SIGINT and SIGTERM raise Interrupted in the main thread."""
    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The optional extra that brings each missing third-party module (pyproject.toml).
EXTRAS = {"scapy": "pcap", "hypothesis": "harness", "rich": "harness"}


def _unavailable(name: str, exc: ImportError) -> Handler:
    """A handler that names the optional extra a subcommand needs."""
    missing = exc.name or str(exc)
    extra = EXTRAS.get(missing.split(".")[0], "all")

    def handler(_: argparse.Namespace) -> int:
        print(
            f"netdicom2 {name}: needs {missing!r}, which is not installed: "
            f"pip install 'netdicom2[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script: expected failures are one line on stderr, never a traceback."""
    parser = build_parser()
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of a failure"
    )
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words  # accepted anywhere on the line, not only before COMMAND
    args, unknown = parser.parse_known_args([w for w in words if w != "--debug"])
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.debug = debug
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    prog = f"netdicom2 {args.command}"
    try:
        with interrupts_raise():
            return handler(args)
    except UsageError as exc:
        return _fail(prog, str(exc), EXIT_USAGE, args.debug)
    except JobError as exc:
        return _fail(prog, str(exc), exc.status, args.debug)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        return _fail(prog, f"interrupted ({signal.Signals(signum).name})", 128 + signum, args.debug)
    except BrokenPipeError:  # `netdicom2 ... | head`: the reader left; nothing more to say
        return EXIT_FAILURE
    except (OSError, MemoryError) as exc:
        text = (
            f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else exc
        )
        return _fail(prog, f"{type(exc).__name__}: {text}", EXIT_FAILURE, args.debug)
    except Exception as exc:  # a bug of ours: still one line, with the way to see more
        return _fail(
            prog,
            f"internal error {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            EXIT_FAILURE,
            args.debug,
        )


def _fail(prog: str, message: str, status: int, debug: bool) -> int:
    """Print one line (and the traceback under --debug); return the exit status."""
    if debug:
        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    # `python -m netdicom2.cli`: run the imported module's main, whose UsageError/JobError
    # are the classes the subcommands raise (this file, run as __main__, is a second copy).
    from netdicom2.cli import main as imported_main

    sys.exit(imported_main())
