"""Find the real peers' programs (DCMTK, Orthanc, redis-server …) on PATH.

pynetdicom installs console scripts with DCMTK's names (`storescp`, `echoscu`, `storescu` …)
into the virtual environment's `bin`: with the environment activated they shadow DCMTK's. The
harness means DCMTK by those names, so the environment's own directories are skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["system_binary"]


def _inside_environment(directory: str) -> bool:
    """True for a PATH entry that belongs to this Python environment (sys.prefix)."""
    try:
        return Path(directory).resolve().is_relative_to(Path(sys.prefix).resolve())
    except OSError:
        return False


def system_binary(name: str) -> str | None:
    """The path of `name` on PATH outside this Python environment, or None."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    outside = os.pathsep.join(entry for entry in entries if not _inside_environment(entry))
    return shutil.which(name, path=outside)
