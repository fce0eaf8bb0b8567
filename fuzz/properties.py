"""The codec properties, as plain checks and as Hypothesis tests (also for coverage fuzzers).

``check_codec(data)`` states what the codec owes any byte string (ARCHITECTURE.md §4, PS3.8
§9.3): decode returns a PDU or raises ``PDUDecodeError``, nothing else; what it accepts it
re-encodes byte for byte; framing one chunk and byte at a time agree; and it agrees with the
independent judge (``fuzz.validate``): a PDU the standard requires to be taken as valid is
decoded, one it requires to be Evt19 is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdicom2.exceptions import PDUDecodeError
from netdicom2.framing import PDUFramer
from netdicom2.fuzz.strategies import labelled_pdus, mutated
from netdicom2.fuzz.validate import INVALID, VALID, judge
from netdicom2.pdu import PDU, decode

__all__ = ["check_codec", "check_framing", "codec_inputs", "make_codec_property"]

Decoder = Callable[[bytes], PDU]
_REASONS = frozenset({0, 1, 2, 4, 5, 6})  # PS3.8 Table 9-26, source 2


def check_codec(data: bytes, decoder: Decoder = decode) -> PDU | None:
    """The codec's contract for one byte string; returns the PDU when it is accepted."""
    verdict = judge(data)
    try:
        pdu = decoder(data)
    except PDUDecodeError as error:
        assert error.abort_reason in _REASONS, f"A-ABORT reason {error.abort_reason}"
        assert verdict.level != VALID, f"valid PDU refused: {error} ({verdict.rules})"
        return None
    hard = verdict.level == INVALID and not verdict.interp  # [interp] rules: either reading
    assert not hard, f"invalid PDU accepted: {verdict.rules}"
    assert pdu.encode() == bytes(data), "accepted PDU does not re-encode byte-exactly"
    return pdu


def check_framing(stream: bytes, cuts: list[int] | None = None) -> None:
    """One chunk, byte at a time and ``cuts`` give the same PDUs or the same refusal."""

    def frames(chunks: list[bytes]) -> tuple[list[bytes], str | None]:
        framer = PDUFramer()
        out: list[bytes] = []
        for chunk in chunks:
            try:
                out += [bytes(f) for f in framer.feed(chunk)]
            except PDUDecodeError as error:
                # The PDUs completed before a refused header still count (PS3.8 §9.1.3 order).
                out += [bytes(f) for f in getattr(error, "frames", [])]
                return out, f"{error.field}:{error.abort_reason}"
        return out, None

    whole = frames([stream])
    step = 1 if len(stream) <= 2048 else 97  # byte at a time, bounded in cost
    single = frames([stream[i : i + step] for i in range(0, len(stream), step)])
    assert single == whole, "byte-at-a-time framing differs from one chunk"
    if cuts:
        bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
        pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
        assert frames(pieces) == whole, "segmented framing differs from one chunk"
    if whole[1] is None:
        assert b"".join(whole[0]) == stream[: sum(len(f) for f in whole[0])]


def codec_inputs() -> st.SearchStrategy[bytes]:
    """Byte strings for the codec: labelled PDUs, mutations, and raw bytes."""
    pdus = labelled_pdus().map(lambda pair: pair[1])
    return st.one_of(pdus, pdus.flatmap(mutated).map(lambda p: p[1]), st.binary(max_size=300))


def make_codec_property(decoder: Decoder = decode, **overrides: Any) -> Callable[..., None]:
    """A Hypothesis test of ``check_codec`` + ``check_framing`` (``fuzz_one_input`` ready)."""
    config: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        **overrides,
    }

    @settings(**config)
    @given(codec_inputs(), st.lists(st.integers(1, 400), max_size=4))
    def codec_property(data: bytes, cuts: list[int]) -> None:
        check_codec(data, decoder)
        check_framing(data + data[:7], cuts)

    return codec_property
