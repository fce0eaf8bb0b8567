"""pytest configuration for the conformance harness: the repository root on sys.path.

The interoperability tests start their peers with ``tests/peers.py``; ``tests`` is not a
package, so it is imported as ``tests.peers`` from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
