"""DIMSE command sets (PS3.7 §6.3.1, §9.3.5): decoded in order, any layout; joined, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdicom2.dimse import (
    MAX_COMMAND_LENGTH,
    NO_DATA_SET,
    VERIFICATION_SOP_CLASS,
    CommandFragments,
    DimseError,
    c_echo_rq,
    decode_command,
    encode_command,
)

US = st.integers(min_value=0, max_value=0xFFFF)


@given(US)
def test_the_usual_c_echo_rq_decodes_to_its_elements_in_order(message_id: int) -> None:
    command = decode_command(encode_command(c_echo_rq(message_id)))
    assert list(command.elements.items()) == [
        (0x0000, 56),
        (0x0002, VERIFICATION_SOP_CLASS),
        (0x0100, 0x0030),
        (0x0110, message_id),
        (0x0800, NO_DATA_SET),
    ]


@given(US)
def test_a_c_echo_rq_in_another_layout_decodes_the_same_way(message_id: int) -> None:
    # No group length, the UID padded with a space: not the usual bytes, the same elements.
    uid = VERIFICATION_SOP_CLASS.encode() + b" "
    data = (
        b"\x00\x00\x02\x00" + len(uid).to_bytes(4, "little") + uid
        + b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x00"
        + b"\x00\x00\x10\x01\x02\x00\x00\x00" + message_id.to_bytes(2, "little")
        + b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"
    )  # fmt: skip
    assert decode_command(memoryview(data)) == c_echo_rq(message_id)


def test_command_fragments_join_only_when_there_are_several() -> None:
    fragments = CommandFragments()
    whole = memoryview(b"one fragment")
    assert fragments.add(whole, last=True) is whole  # no join, no copy
    assert fragments.add(b"ab", last=False) is None
    assert fragments.add(b"cd", last=False) is None
    assert fragments.add(b"ef", last=True) == b"abcdef"
    assert fragments.add(b"next", last=True) == b"next"  # nothing left of the previous one


def test_command_fragments_refuse_a_command_set_past_the_limit_and_start_afresh() -> None:
    fragments = CommandFragments()
    assert fragments.add(b"\0" * MAX_COMMAND_LENGTH, last=False) is None  # exactly the limit
    with pytest.raises(DimseError, match=f"longer than {MAX_COMMAND_LENGTH} bytes"):
        fragments.add(b"\0", last=False)
    assert fragments.add(b"fresh", last=True) == b"fresh"
