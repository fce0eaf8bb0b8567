"""Admission: what a listener keeps and sheds when crowded (PS3.8 §9.1.4 Note 1)."""

from __future__ import annotations

import pytest

from netdicom2.admission import Admission

MIB = 1 << 20


def make(**kwargs: int) -> Admission[str]:
    """An Admission with small bounds."""
    bounds = {"max_pending": 3, "max_per_address": 2, "max_buffered": MIB} | kwargs
    return Admission(**bounds)


def test_the_oldest_silent_connection_is_evicted_before_any_sender() -> None:
    admission = make()
    for key in "abc":
        admission.waiting(key)
    admission.sending("a")  # the oldest is sending its request: kept
    assert admission.to_evict() == ("b", True)
    admission.waiting("d")
    assert admission.to_evict() == ("c", True)
    admission.waiting("e")
    assert admission.to_evict() == ("d", True)
    admission.unpend("e")
    assert admission.to_evict() is None  # room again
    admission.waiting("f")
    admission.sending("f")
    admission.waiting("g")
    assert admission.to_evict() == ("g", True)
    admission.sending("h")  # never waiting: ignored
    assert admission.to_evict() is None
    admission.waiting("i")
    admission.sending("i")
    assert admission.to_evict() == ("a", False)  # none silent: the oldest sender


def test_a_crowd_from_one_address_is_evicted_before_a_lone_client() -> None:
    admission = make(max_pending=4)
    admission.waiting("lone", "10.0.0.9")  # the oldest, but alone on its address
    for key in "abc":
        admission.waiting(key, "10.0.0.1")
    assert admission.to_evict() == ("a", True)
    admission.waiting("d", "10.0.0.1")
    assert admission.to_evict() == ("b", True)
    admission.unpend("c")
    admission.unpend("d")
    admission.waiting("e", "10.0.0.2")
    admission.waiting("f", "10.0.0.3")
    admission.waiting("g", "10.0.0.3")
    assert admission.to_evict() == ("f", True)  # 10.0.0.3 has two
    admission.waiting("h", "10.0.0.4")
    assert admission.to_evict() == ("lone", True)  # all alone now: the oldest goes
    assert set(admission.pending) == {"e", "g", "h"}


def test_associations_per_address_are_capped_and_given_back() -> None:
    admission = make()
    assert not admission.address_full("10.0.0.1")
    admission.take_address("10.0.0.1")
    admission.take_address("10.0.0.1")
    assert admission.address_full("10.0.0.1") and not admission.address_full("10.0.0.2")
    admission.give_address("10.0.0.1")
    assert not admission.address_full("10.0.0.1")
    admission.give_address("10.0.0.1")
    assert admission.per_address == {}
    assert not make(max_per_address=0).address_full("x")  # 0: no cap


def test_the_budget_names_the_largest_holder() -> None:
    admission = make()
    assert not admission.hold("a", 300_000)
    assert not admission.hold("b", 600_000)
    assert admission.hold("c", 200_000)  # 1,100,000 > 1 MiB
    assert admission.largest() == "b"
    admission.release("b")
    assert admission.buffered == 500_000 and admission.largest() == "a"
    admission.hold("a", 0)
    admission.release("c")
    assert admission.buffered == 0 and admission.largest() is None and admission.held == {}


@pytest.mark.parametrize(
    ("name", "value"), [("max_pending", 0), ("max_per_address", -1), ("max_buffered", 1000)]
)
def test_bounds_are_validated(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=name):
        make(**{name: value})
