"""Shared test configuration: Hypothesis profiles, the external captures folder, leak checks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.shared import EXTERNAL_CAPTURES, require_shared

# Profiles (ARCHITECTURE.md §5): "ci" is bounded and derandomized, "dev" is quick for local
# runs, "long" is for fuzzing campaigns (HYPOTHESIS_PROFILE=long pytest ...).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

#: Public captures and seed streams, kept beside the repository (../shared/external-captures).
EXTERNAL = EXTERNAL_CAPTURES


@pytest.fixture
def external() -> Path:
    """The external captures folder; skips the test when it is not there (tests/shared.py)."""
    return require_shared(EXTERNAL)


def open_fds() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """The test ends with the file descriptors and threads it started with."""
    fds, threads = open_fds(), threading.active_count()
    yield
    assert threading.active_count() == threads, threading.enumerate()
    assert open_fds() == fds
