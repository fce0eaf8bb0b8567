"""The ../shared folder beside the repository: the PS3.8 oracle CSV and the public captures.

Both are kept out of the repository on purpose (the captures must not be copied in). A test
that needs one of them skips with the reason when it is absent, so a bare clone still runs the
rest; with NETDICOM2_REQUIRE_SHARED=1 (set by .ci/run when ../shared is there) an absent file
fails instead, so the oracle can never drop out of a run unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
STATE_TABLE = SHARED / "spec" / "state_table.csv"  # the Table 9-10 oracle, 247 cells
EXTERNAL_CAPTURES = SHARED / "external-captures"  # public captures and fuzz seeds


def require_shared(path: Path) -> Path:
    """``path`` inside ../shared; skip (fail under NETDICOM2_REQUIRE_SHARED) when absent."""
    if path.exists():
        return path
    message = (
        f"{path} is absent: ../shared (the PS3.8 oracle and the public captures, kept out of "
        "the repository) is not beside this clone"
    )
    if os.environ.get("NETDICOM2_REQUIRE_SHARED"):
        pytest.fail(message)
    pytest.skip(message)
