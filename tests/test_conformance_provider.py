"""Target ``provider``: every Table 9-10 cell against the threaded DULServiceProvider.

The scripted peer speaks over real loopback sockets and the script's user steps call the
provider's API; ARTIM is 0.3 s in the Evt18 cells and 10 s elsewhere. Cells are independent
(own sockets, own provider), so ``pytest -n auto`` runs them in parallel.
"""

from __future__ import annotations

import logging

import pytest
from test_conformance_local import IDS, check

from netdicom2.conformance.matrix import Target
from netdicom2.conformance.table import CellSpec, cells

CELLS = cells()
PROVIDER = Target("provider", "provider")


@pytest.fixture(autouse=True)
def _quiet_provider(caplog: pytest.LogCaptureFixture) -> None:
    """Lost transports are expected here; the provider logs them as warnings."""
    caplog.set_level(logging.ERROR, logger="netdicom2")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_cell(spec: CellSpec) -> None:
    check(PROVIDER, spec)
