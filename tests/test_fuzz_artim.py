"""ARTIM timing (PS3.8 §9.1.5; Table 9-10 Evt18 in Sta2/Sta13 → AA-2), fake and wall clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdicom2.fuzz.timing import PLACES, fake_clock, wall_clock

artims = st.floats(0.001, 600.0, allow_nan=False)
fractions = st.floats(0.0, 3.0, allow_nan=False)


@given(st.sampled_from(PLACES), artims, fractions)
def test_fake_clock_drops_exactly_at_the_deadline_and_never_before(
    place: str, artim: float, fraction: float
) -> None:
    outcome = fake_clock(place, artim, artim * fraction)
    assert outcome.early_probe_effects == 0  # nothing happens before the deadline
    if fraction < 1.0:
        assert outcome.dropped_after is None  # the peer acted in time: never dropped
    else:
        assert outcome.dropped_after is not None
        assert outcome.dropped_after == pytest.approx(artim, rel=1e-12, abs=1e-9)


# Wall clock: our provider's measured error must be within -10 ms / +300 ms on this shared
# machine (the provider blocks in selectors until the deadline; scheduling adds latency).
EARLY, LATE = 0.01, 0.3


@pytest.mark.realtime
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("artim", [0.15, 0.4])
def test_wall_clock_silent_peer_is_dropped_at_artim(place: str, artim: float) -> None:
    outcome = wall_clock(place, artim, None)
    assert outcome.error is not None, "the provider never dropped the silent peer"
    assert -EARLY <= outcome.error <= LATE, f"dropped {outcome.error:+.4f} s off ARTIM"


@pytest.mark.realtime
@pytest.mark.parametrize("place", PLACES)
def test_wall_clock_peer_acting_in_time_is_not_dropped(place: str) -> None:
    outcome = wall_clock(place, 0.4, 0.1)
    assert outcome.dropped_after is None
