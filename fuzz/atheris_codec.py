"""The codec property as a coverage-guided fuzz target (atheris, or any libFuzzer-style driver).

    python -m netdicom2.fuzz.atheris_codec [libFuzzer options] [corpus dir]

Hypothesis' ``fuzz_one_input`` turns the fuzzer's bytes into the same structured inputs the
property tests draw (labelled PDUs, mutations, raw bytes) and raises on a violation of
``fuzz.properties.check_codec`` / ``check_framing``. atheris is optional: without it this module
still exposes ``fuzz_one_input`` for other drivers and for the tests.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from netdicom2.fuzz.properties import make_codec_property

__all__ = ["TEST", "fuzz_one_input", "main"]

#: The property; no example database inside a coverage-guided fuzzer (Hypothesis' advice).
TEST = make_codec_property(database=None)


def fuzz_one_input(data: bytes) -> None:
    """One fuzzer input through the codec property; raises on a violation."""
    TEST.hypothesis.fuzz_one_input(data)  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """Run under atheris (libFuzzer options on the command line)."""
    try:
        atheris: Any = importlib.import_module("atheris")
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    atheris.Setup(list(argv or sys.argv), fuzz_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":  # pragma: no cover - driver
    sys.exit(main())
