"""The `netdicom2` console script: one subcommand per job, each registered by its module."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

from netdicom2 import __version__

__all__ = ["MAX_LENGTH", "bounded_int", "main", "seconds"]

# PS3.8 Annex D.1: a maximum length is 32 bits; 0 means no limit.
MAX_LENGTH = 0xFFFFFFFF

# Subcommand name -> "module:function" that adds it to the parser; imported lazily so that
# `netdicom2 --help` stays fast and the library never needs the harness' optional dependencies.
SUBCOMMANDS: dict[str, str] = {
    "scp": "netdicom2.app_scp:add_subcommand",
    "echo": "netdicom2.app_scu:add_subcommands",
    "conformance": "conformance.cli:add_subcommand",
    "replay": "pcaps.cli:add_replay",
    "record": "pcaps.cli:add_record",
    "fuzz": "fuzz.cli:add_subcommand",
    "report": "reports.cli:add_subcommand",
}

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
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
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(handler=_unavailable(name, exc))
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


def _unavailable(name: str, exc: ImportError) -> Handler:
    """A handler that explains which optional dependency a subcommand needs."""

    def handler(_: argparse.Namespace) -> int:
        print(f"netdicom2 {name}: needs an optional dependency: {exc}", file=sys.stderr)
        return 2

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
