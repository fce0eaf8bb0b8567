"""PDUs as trees of length-prefixed nodes, so that a fuzzer can break any layer (PS3.8 §9.3).

The codec under test builds correct bytes only; the fuzzer needs PDUs whose length fields lie,
whose items vanish or repeat, whose sub-items overrun their parent. A ``Node`` is one PDU, item,
sub-item or PDV item: type byte, reserved byte, length field (2 bytes, or 4 for PDU headers and
PDV items, PS3.8 §9.3.1 / Table 9-23), fixed fields, then children or a raw value. Lengths are
computed from the real content unless a malformation overrides them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "APPLICATION_CONTEXT",
    "Node",
    "abort",
    "ac",
    "pc_ac",
    "pc_rq",
    "pdata",
    "release_rp",
    "release_rq",
    "rj",
    "rq",
    "sub_item",
    "user_information",
]

#: PS3.7 Annex A.2.1: the DICOM application context name.
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
PDV = -1  # the PDV item has no type byte (PS3.8 Table 9-23)


@dataclass
class Node:
    """One length-prefixed unit: ``tag``, reserved, length, ``fixed`` then children or ``raw``."""

    tag: int
    fixed: bytes = b""
    children: list[Node] = field(default_factory=list)
    raw: bytes = b""
    reserved: int = 0
    wide: bool = False  # 4-byte length field (PDU header, PDV item)
    length: int | None = None  # declared length; None = the true length
    delta: int = 0  # declared = true length + delta, clamped to the field
    cut: int | None = None  # keep only the first ``cut`` bytes of this node's encoding

    def body(self) -> bytes:
        """Fixed fields, then the children's encodings, then the raw value."""
        return self.fixed + b"".join([child.encode() for child in self.children]) + self.raw

    def encode(self) -> bytes:
        """Header with the declared length, then the body; truncated to ``cut`` if set."""
        body = self.body()
        limit = 0xFFFFFFFF if self.wide or self.tag == PDV else 0xFFFF
        declared = self.length if self.length is not None else len(body) + self.delta
        declared = min(max(declared, 0), limit)
        if self.tag == PDV:
            head = struct.pack(">I", declared)
        elif self.wide:
            head = struct.pack(">BBI", self.tag, self.reserved, declared)
        else:
            head = struct.pack(">BBH", self.tag, self.reserved, declared)
        out = head + body
        return out if self.cut is None else out[: self.cut]

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node, Node | None]]:
        """Every node below and including this one: (depth, node, parent)."""
        yield depth, self, None
        for child in self.children:
            for d, node, parent in child.walk(depth + 1):
                yield d, node, parent if parent is not None else self

    def copy(self) -> Node:
        """A deep copy (nodes are mutated by malformations)."""
        return replace(self, children=[child.copy() for child in self.children])


def sub_item(tag: int, value: bytes, reserved: int = 0) -> Node:
    """A leaf item or sub-item: type, reserved, 2-byte length, value (PS3.8 §9.3.1)."""
    return Node(tag, raw=value, reserved=reserved)


def _ae(title: bytes) -> bytes:
    """An AE title field: 16 bytes, space padded (PS3.8 Table 9-11)."""
    return title[:16].ljust(16, b" ")


def pc_rq(context_id: int, abstract: bytes, transfer: Sequence[bytes]) -> Node:
    """Presentation Context item 20H: ID, 3 reserved, 30H, 40H… (PS3.8 Table 9-13)."""
    children = [sub_item(0x30, abstract), *[sub_item(0x40, ts) for ts in transfer]]
    return Node(0x20, fixed=bytes((context_id, 0, 0, 0)), children=children)


def pc_ac(context_id: int, result: int, transfer: bytes | None) -> Node:
    """Presentation Context item 21H: ID, reserved, result, reserved, 40H (Table 9-18)."""
    children = [] if transfer is None else [sub_item(0x40, transfer)]
    return Node(0x21, fixed=bytes((context_id, 0, result, 0)), children=children)


def user_information(sub_items: Sequence[Node]) -> Node:
    """User Information item 50H holding the given sub-items (PS3.8 Table 9-16)."""
    return Node(0x50, children=list(sub_items))


def _associate(
    pdu_type: int,
    called: bytes,
    calling: bytes,
    items: Sequence[Node],
    version: int,
) -> Node:
    """A-ASSOCIATE-RQ/AC: version, reserved, titles, 32 reserved, items (Tables 9-11, 9-17)."""
    fixed = struct.pack(">HH", version, 0) + _ae(called) + _ae(calling) + bytes(32)
    return Node(pdu_type, fixed=fixed, children=list(items), wide=True)


def rq(
    called: bytes,
    calling: bytes,
    contexts: Sequence[Node],
    sub_items: Sequence[Node],
    *,
    version: int = 1,
    application_context: bytes = APPLICATION_CONTEXT,
) -> Node:
    """A-ASSOCIATE-RQ: application context, presentation contexts, user information."""
    items = [sub_item(0x10, application_context), *contexts, user_information(sub_items)]
    return _associate(0x01, called, calling, items, version)


def ac(
    called: bytes,
    calling: bytes,
    contexts: Sequence[Node],
    sub_items: Sequence[Node],
    *,
    version: int = 1,
) -> Node:
    """A-ASSOCIATE-AC, the same layout as the RQ with 21H items (Table 9-17)."""
    items = [sub_item(0x10, APPLICATION_CONTEXT), *contexts, user_information(sub_items)]
    return _associate(0x02, called, calling, items, version)


def rj(result: int = 1, source: int = 1, reason: int = 1) -> Node:
    """A-ASSOCIATE-RJ: reserved, result, source, reason/diag (PS3.8 Table 9-21)."""
    return Node(0x03, raw=bytes((0, result, source, reason)), wide=True)


def pdata(pdvs: Sequence[tuple[int, int, bytes]]) -> Node:
    """P-DATA-TF with PDV items (context ID, message control header, fragment) (9-22, 9-23)."""
    items = [Node(PDV, fixed=bytes((ctx, control)), raw=frag) for ctx, control, frag in pdvs]
    return Node(0x04, children=items, wide=True)


def release_rq() -> Node:
    """A-RELEASE-RQ: 4 reserved bytes (PS3.8 Table 9-24)."""
    return Node(0x05, raw=bytes(4), wide=True)


def release_rp() -> Node:
    """A-RELEASE-RP: 4 reserved bytes (PS3.8 Table 9-25)."""
    return Node(0x06, raw=bytes(4), wide=True)


def abort(source: int = 0, reason: int = 0) -> Node:
    """A-ABORT: 2 reserved, source, reason/diag (PS3.8 Table 9-26)."""
    return Node(0x07, raw=bytes((0, 0, source, reason)), wide=True)
