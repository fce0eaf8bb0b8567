"""Hypothesis strategies: valid PDUs, labelled malformations, delivery plans, fuzz cases.

Every malformed PDU carries a label naming the malformation ("pdu-length:zero",
"missing:user-information", "pdata:pdv-short", "mutate:bitflip", …) so a campaign can count the
target's reactions per kind. What a receiver must do with the bytes is not decided here but by
``fuzz.validate`` (independently of the label), from the bytes actually sent.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import asdict, dataclass, field
from random import Random
from typing import Any

from hypothesis import strategies as st

from netdicom2.fuzz import pdutree as t
from netdicom2.fuzz.pdutree import Node
from netdicom2.fuzz.seeds import seed_pdus

__all__ = [
    "Case",
    "Delivery",
    "any_pdu",
    "cases",
    "deliveries",
    "echo_command",
    "labelled_pdus",
    "malformed",
    "mutated_batch",
    "setup_rq",
    "valid_ac",
    "valid_pdata",
    "valid_rq",
]

VERIFICATION = b"1.2.840.10008.1.1"
CT_IMAGE = b"1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = b"1.2.840.10008.1.2"
EXPLICIT_LE = b"1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.10.1102.1"
_ABSTRACTS = [VERIFICATION, CT_IMAGE] + [b"1.2.840.10008.5.1.4.1.1." + s for s in (b"4", b"7")]
_TRANSFERS = [IMPLICIT_LE, EXPLICIT_LE, b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.4.50"]

#: Bulk content (many contexts, long fields) comes from a Random seeded by Hypothesis' data, so
#: it replays from the example database like everything else and generation stays fast.
_RANDOMS = st.integers(0, 2**32 - 1).map(Random)


def setup_rq(version: int = 1) -> Node:
    """The A-ASSOCIATE-RQ scenarios use to reach Sta6: Verification (1) and CT (3)."""
    contexts = [t.pc_rq(1, VERIFICATION, [IMPLICIT_LE]), t.pc_rq(3, CT_IMAGE, [EXPLICIT_LE])]
    subs = [t.sub_item(0x51, struct.pack(">I", 16384)), t.sub_item(0x52, IMPLEMENTATION_UID)]
    return t.rq(b"ANY-SCP", b"FUZZ-SCU", contexts, subs, version=version)


def echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set, Implicit VR Little Endian (PS3.7 §9.3.5, Table 9.3-12)."""
    uid = VERIFICATION + b"\x00"  # PS3.5 §9.1: odd-length UID values are NUL padded in data

    def element(elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, elem, len(value)) + value

    body = (
        element(0x0002, uid)
        + element(0x0100, struct.pack("<H", 0x0030))
        + element(0x0110, struct.pack("<H", message_id))
        + element(0x0800, struct.pack("<H", 0x0101))
    )
    return element(0x0000, struct.pack("<I", len(body))) + body


def _user_sub_items(rnd: Random, *, ac: bool = False) -> list[Node]:
    """51H and 52H, then optional sub-items of PS3.7 D.3.3 and unknown ones (any order)."""
    max_length = rnd.choice([16384, 16384, 0, rnd.getrandbits(32)])
    uid = rnd.choice(_ABSTRACTS) if rnd.random() < 0.7 else _random_uid(rnd)
    subs = [t.sub_item(0x51, struct.pack(">I", max_length)), t.sub_item(0x52, uid)]
    sop = rnd.choice(_ABSTRACTS)
    optional = [
        t.sub_item(0x53, struct.pack(">HH", rnd.randrange(10), rnd.randrange(10))),
        t.sub_item(0x55, b"FUZZ_" + str(rnd.randrange(10**11)).encode()),  # 16 characters max
        t.sub_item(0x54, struct.pack(">H", len(sop)) + sop + bytes((rnd.randrange(2), 1))),
        t.sub_item(0x56, struct.pack(">H", len(sop)) + sop + rnd.randbytes(rnd.randrange(9))),
        t.sub_item(rnd.randrange(0x5A, 0x100), rnd.randbytes(rnd.randrange(13))),
    ]
    if not ac:
        svc = b"1.2.840.10008.4.2"
        common = struct.pack(">H", len(sop)) + sop + struct.pack(">H", len(svc)) + svc + bytes(2)
        optional.append(t.sub_item(0x57, common))
        size = rnd.randrange(33) if rnd.random() < 0.9 else rnd.randrange(1000, 60000)
        primary = rnd.randbytes(size)
        identity = bytes((1, 1)) + struct.pack(">H", len(primary)) + primary + bytes(2)
        optional.append(t.sub_item(0x58, identity))
    subs += rnd.sample(optional, rnd.randrange(5))
    if rnd.random() < 0.5:
        rnd.shuffle(subs)  # PS3.8 §9.3.2.3 note: sub-items may come in any order
    return subs


def _random_uid(rnd: Random) -> bytes:
    """A numeric UID (PS3.5 §9.1), sometimes the full 64 characters."""
    if rnd.random() < 0.2:
        return ("1." + "2" * 62).encode()
    parts = [str(rnd.randrange(10 ** rnd.randrange(1, 10))) for _ in range(rnd.randrange(2, 12))]
    return ".".join(["1", *parts])[:64].rstrip(".").encode()


def _random_title(rnd: Random) -> bytes:
    """An AE title of 1-16 ISO 646 G0 characters without backslash (PS3.8 Table 9-11)."""
    alphabet = [c for c in range(0x21, 0x7F) if c != 0x5C]
    return bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 17)))


@st.composite
def valid_rq(draw: st.DrawFn) -> Node:
    """A valid A-ASSOCIATE-RQ: 1-128 contexts, all sub-items, maximum sizes (Table 9-11)."""
    rnd = draw(_RANDOMS)
    count = rnd.randrange(1, 5) if rnd.random() < 0.85 else rnd.randrange(5, 129)
    contexts = []
    for n in range(count):
        abstract = VERIFICATION if n == 0 or rnd.random() < 0.3 else _random_uid(rnd)
        transfer = rnd.sample(_TRANSFERS, rnd.randrange(1, 4))
        contexts.append(t.pc_rq(2 * n + 1, abstract, transfer))
    version = rnd.choice([1, 1, 1, 3, 0xFFFF])  # §9.3.2: only bit 0 is tested
    node = t.rq(
        _random_title(rnd), _random_title(rnd), contexts, _user_sub_items(rnd), version=version
    )
    if rnd.random() < 0.3:  # §9.3.1: unknown items are skipped, reserved bytes not tested
        node.children.insert(1, t.sub_item(rnd.randrange(0x60, 0x100), b"x" * 3))
        node.children[0].reserved = rnd.randrange(256)
    return node


@st.composite
def valid_ac(draw: st.DrawFn) -> Node:
    """A valid A-ASSOCIATE-AC answering ``setup_rq``'s contexts 1 and 3 (Table 9-17)."""
    results = draw(st.lists(st.integers(0, 4), min_size=2, max_size=2))
    contexts = [
        t.pc_ac(1, results[0], IMPLICIT_LE),
        t.pc_ac(3, results[1], None if results[1] and draw(st.booleans()) else EXPLICIT_LE),
    ]
    return t.ac(b"ANY-SCP", b"FUZZ-SCU", contexts, _user_sub_items(draw(_RANDOMS), ac=True))


@st.composite
def valid_pdata(draw: st.DrawFn) -> Node:
    """A P-DATA-TF on context 1: a C-ECHO-RQ or random fragments (Tables 9-22, 9-23, E.2)."""
    if draw(st.booleans()):
        return t.pdata([(1, 0x03, echo_command(draw(st.integers(1, 0xFFFF))))])
    pdvs = draw(
        st.lists(
            st.tuples(
                st.just(1),
                st.one_of(st.integers(0, 3), st.integers(0, 255)),  # bits 2-7 not tested
                st.binary(max_size=64),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return t.pdata(pdvs)


@functools.cache
def any_pdu() -> st.SearchStrategy[Node]:
    """A valid PDU of any of the seven types (Table 9-10 rows Evt3 … Evt16)."""
    return st.one_of(
        valid_rq(),
        valid_ac(),
        st.builds(t.rj, st.integers(1, 2), st.just(1), st.sampled_from([1, 2, 3, 7])),
        valid_pdata(),
        st.just(t.release_rq()),
        st.just(t.release_rp()),
        st.builds(t.abort, st.sampled_from([0, 2]), st.sampled_from([0, 1, 2, 4, 5, 6])),
    )


# ------------------------------------------------------------------------- malformations


def _items(node: Node, depth: int) -> list[tuple[Node, Node]]:
    """(node, parent) pairs at a depth (1 = items / PDV items, 2 = sub-items …)."""
    return [(n, p) for d, n, p in node.walk() if d == depth and p is not None]


def _set_fixed(node: Node, offset: int, value: bytes) -> None:
    """Overwrite bytes of a node's fixed fields."""
    node.fixed = node.fixed[:offset] + value + node.fixed[offset + len(value) :]


def _remove(node: Node, tag: int) -> bool:
    """Remove every direct child with this tag; True if there was one."""
    before = len(node.children)
    node.children = [c for c in node.children if c.tag != tag]
    return len(node.children) != before


_UNKNOWN_PDU_TYPES = st.one_of(st.just(0), st.integers(8, 0xFF))
_BAD_UIDS = st.sampled_from([b"", b"1" * 65, b"1.2.840.abc", b"1.2..3", b" 1.2", b"1.02.3"])
_BAD_TITLES = st.sampled_from([b" " * 16, b"\x00" * 16, "ÄÖÜ-SCP".encode("latin-1"), b"A\\B"])


@st.composite
def malformed(draw: st.DrawFn, node: Node) -> tuple[str, bytes]:
    """One labelled structure-aware malformation of ``node`` (a copy is changed)."""
    node = node.copy()
    ops = ["pdu-length", "truncate", "unknown:pdu-type", "item-length", "code"]
    if node.tag in (1, 2):
        ops += ["missing", "duplicate", "unknown:item-type", "unknown:sub-item-type"]
        ops += ["sub-item-length", "uid", "version:no-bit0"]
        if node.tag == 1:
            ops += ["pcid", "ae-title"]
    if node.tag == 4:
        ops += ["pdata"]
    op = draw(st.sampled_from(ops))
    label = op
    body_size = len(node.body())
    if op == "pdu-length":
        how = draw(st.sampled_from(["zero", "max", "short", "long"]))
        label = f"pdu-length:{how}"
        if how == "zero":
            node.length = 0
        elif how == "max":
            node.length = 0xFFFFFFFF
        else:
            k = draw(st.integers(1, max(1, body_size)))
            node.delta = -k if how == "short" else k
    elif op == "truncate":
        depth = draw(st.integers(0, 3))
        candidates = [n for d, n, _ in node.walk() if d == depth] or [node]
        victim = draw(st.sampled_from(candidates))
        size = len(victim.encode())
        victim.cut = draw(st.integers(0, max(0, size - 1)))
        if victim is node:
            node.length = body_size  # the header still announces the whole PDU
        label = f"truncate:depth{depth if victim is not node else 0}"
    elif op == "unknown:pdu-type":
        node.tag = draw(_UNKNOWN_PDU_TYPES)
    elif op in ("item-length", "sub-item-length"):
        depth = 1 if op == "item-length" else draw(st.integers(2, 3))
        pairs = _items(node, depth)
        if not pairs:
            return draw(malformed(node))
        victim, _ = draw(st.sampled_from(pairs))
        direction = draw(st.sampled_from(["overrun", "underrun"]))
        k = draw(st.integers(1, 300))
        victim.delta = k if direction == "overrun" else -k
        label = f"{op}:{direction}"
    elif op == "code":
        if node.tag in (3, 7):
            node.raw = bytes(
                (0, draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 255)))
            )
            if node.tag == 7:
                node.raw = bytes(2) + node.raw[2:]
            label = "code:out-of-range"
        else:  # RELEASE/associate/P-DATA: non-zero reserved bytes (must not be tested)
            node.reserved = draw(st.integers(1, 255))
            label = "reserved:non-zero"
    elif op == "missing":
        what = draw(
            st.sampled_from(
                [
                    "application-context",
                    "presentation-context",
                    "user-information",
                    "max-length",
                    "implementation-uid",
                ]
            )
        )
        label = f"missing:{what}"
        tags = {
            "application-context": 0x10,
            "presentation-context": 0x20 if node.tag == 1 else 0x21,
            "user-information": 0x50,
        }
        if what in tags:
            _remove(node, tags[what])
        else:
            info = next((c for c in node.children if c.tag == 0x50), None)
            if info is not None:
                _remove(info, 0x51 if what == "max-length" else 0x52)
    elif op == "duplicate":
        level = draw(st.sampled_from([1, 2]))
        pairs = _items(node, level)
        if pairs:
            victim, parent = draw(st.sampled_from(pairs))
            parent.children.insert(parent.children.index(victim), victim.copy())
        label = f"duplicate:{'item' if level == 1 else 'sub-item'}"
    elif op in ("unknown:item-type", "unknown:sub-item-type"):
        depth = 1 if op == "unknown:item-type" else 2
        pairs = _items(node, depth)
        if pairs:
            victim, _ = draw(st.sampled_from(pairs))
            victim.tag = draw(st.sampled_from([0x00, 0x11, 0x22, 0x31, 0x41, 0x5A, 0x7F, 0xFF]))
    elif op == "uid":
        candidates = [n for _, n, _ in node.walk() if n.tag in (0x10, 0x30, 0x40, 0x52)]
        how = draw(st.sampled_from(["empty", "long", "non-numeric"]))
        label = f"uid:{how}"
        value = {"empty": b"", "long": b"1." + b"3" * 70}.get(how) or draw(_BAD_UIDS)
        draw(st.sampled_from(candidates)).raw = value
    elif op == "version:no-bit0":
        _set_fixed(node, 0, struct.pack(">H", draw(st.sampled_from([0, 2, 0xFFFE]))))
    elif op == "pcid":
        pcs = [c for c in node.children if c.tag == 0x20]
        how = draw(st.sampled_from(["even", "zero", "repeated"]))
        label = f"pcid:{how}"
        if how == "repeated":
            node.children.insert(1, pcs[0].copy())
        else:
            _set_fixed(pcs[0], 0, bytes((0 if how == "zero" else 2 * draw(st.integers(1, 127)),)))
    elif op == "ae-title":
        offset = draw(st.sampled_from([4, 20]))
        _set_fixed(node, offset, draw(_BAD_TITLES).ljust(16, b" ")[:16])
        label = f"ae-title:{'called' if offset == 4 else 'calling'}"
    elif op == "pdata":
        how = draw(st.sampled_from(["no-pdv", "pdv-short", "pdv-overrun", "context"]))
        label = f"pdata:{how}"
        if how == "no-pdv":
            node.children = []
        elif how == "pdv-short":
            node.children[0].length = draw(st.integers(0, 1))
        elif how == "pdv-overrun":
            node.children[-1].delta = draw(st.integers(1, 1000))
        else:
            _set_fixed(node.children[0], 0, bytes((draw(st.sampled_from([0, 2, 3, 7, 255])),)))
    return label, node.encode()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    """Byte-level mutation of an encoding: bit flips, byte sets, inserts, deletes, splices."""
    raw = bytearray(data)
    how = draw(st.sampled_from(["bitflip", "byte", "insert", "delete", "splice"]))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if how == "bitflip" and raw:
            raw[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "byte" and raw:
            raw[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif how == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del raw[pos : pos + draw(st.integers(1, 8))]
        elif how == "splice":
            other = draw(st.sampled_from(seed_pdus()))[1]
            cut = draw(st.integers(0, len(other)))
            raw = raw[:pos] + bytearray(other[cut:])
    return f"mutate:{how}", bytes(raw)


_INTERESTING = (0x00, 0x01, 0x02, 0x04, 0x07, 0x7F, 0x80, 0xFF)


def mutated_batch(rnd: Random, pdus: list[bytes], size: int) -> list[bytes]:
    """``size`` fast byte-level mutants of ``pdus`` (flips, bytes, lengths, splices)."""
    pool = seed_pdus()
    out = []
    for _ in range(size):
        raw = bytearray(rnd.choice(pdus))
        for _ in range(rnd.randrange(1, 4)):
            pos = rnd.randrange(len(raw)) if raw else 0
            how = rnd.randrange(6)
            if how == 0 and raw:
                raw[pos] ^= 1 << rnd.randrange(8)
            elif how == 1 and raw:
                raw[pos] = rnd.choice(_INTERESTING)
            elif how == 2:
                raw[pos:pos] = rnd.randbytes(rnd.randrange(1, 9))
            elif how == 3:
                del raw[pos : pos + rnd.randrange(1, 9)]
            elif how == 4 and len(raw) >= 6:
                raw[2:6] = struct.pack(
                    ">I",
                    rnd.choice(
                        [0, 1, len(raw) - 6 + rnd.randrange(-4, 5) & 0xFFFFFFFF, 0xFFFFFFFF]
                    ),
                )
            else:
                other = rnd.choice(pool)[1]
                raw = raw[:pos] + bytearray(other[rnd.randrange(len(other) + 1) :])
        out.append(bytes(raw))
    return out


def labelled_pdus(
    carriers: st.SearchStrategy[Node] | None = None,
) -> st.SearchStrategy[tuple[str, bytes]]:
    """A valid, structurally malformed, seed or mutated PDU, with its label."""
    carriers = carriers if carriers is not None else any_pdu()
    valid = carriers.map(lambda n: (f"valid:{n.tag:02X}", n.encode()))
    broken = carriers.flatmap(malformed)
    seeds = st.sampled_from(seed_pdus()).map(lambda s: (f"seed:{s[0]}", s[1]))
    mutants = st.one_of(carriers.map(Node.encode), seeds.map(lambda s: s[1])).flatmap(mutated)
    return st.one_of(valid, broken, broken, seeds, mutants)


# ------------------------------------------------------------------------- delivery and cases


@dataclass
class Delivery:
    """How the stream reaches the peer: TCP segments, delays before each, an early close."""

    cuts: list[int] = field(default_factory=list)  # segment boundaries (stream offsets)
    delays: list[float] = field(default_factory=list)  # seconds before each segment
    close_at: int | None = None  # stop after this many bytes and close
    close_how: str = "fin"  # "fin" (close) or "rst" (SO_LINGER 0: reset)


@st.composite
def deliveries(draw: st.DrawFn, size: int, max_delay: float = 0.05) -> Delivery:
    """Random segmentation, delays, and sometimes a close or reset at a random offset (§9.1)."""
    if size > 1 and draw(st.integers(0, 9)) == 0 and size <= 64:
        cuts = list(range(1, size))  # byte at a time
    else:
        cuts = sorted(
            draw(st.sets(st.integers(1, max(1, size - 1)), max_size=6)) if size > 1 else []
        )
    segments = len(cuts) + 1
    delays = [0.0] * segments
    if max_delay > 0 and draw(st.booleans()):
        for index in draw(st.sets(st.integers(0, segments - 1), max_size=3)):
            delays[index] = draw(st.floats(0, max_delay, allow_nan=False))
    close_at = None
    close_how = "fin"
    if draw(st.integers(0, 5)) == 0:
        close_at = draw(st.integers(0, size))
        close_how = draw(st.sampled_from(["fin", "rst"]))
    return Delivery(cuts, delays, close_at, close_how)


@dataclass
class Case:
    """One fuzz input: a scenario, the labelled PDUs to send from it, how, and how to end."""

    scenario: str
    pdus: list[tuple[str, bytes]]
    delivery: Delivery = field(default_factory=Delivery)
    end: str = "fin"  # after delivery: "fin" close at once, "quiet" wait then close, "linger"
    pipelined: bool = False  # send the scenario's PDUs and these without waiting for answers

    @property
    def stream(self) -> bytes:
        """The bytes sent after the scenario's setup."""
        return b"".join(data for _, data in self.pdus)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (PDUs in hex) for the corpus."""
        return {
            "scenario": self.scenario,
            "pdus": [[label, data.hex()] for label, data in self.pdus],
            "delivery": asdict(self.delivery),
            "end": self.end,
            "pipelined": self.pipelined,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Case:
        """The case saved by ``to_json``."""
        return cls(
            value["scenario"],
            [(label, bytes.fromhex(data)) for label, data in value["pdus"]],
            Delivery(**value["delivery"]),
            value["end"],
            value["pipelined"],
        )


@functools.cache
def _carriers(scenario: str) -> st.SearchStrategy[Node]:
    """PDUs worth malforming in a start state: RQ in Sta2, P-DATA once associated, …"""
    favourite = {
        "sta2": valid_rq(),
        "sta5": valid_ac(),
        "sta6": valid_pdata(),
        "req-sta6": valid_pdata(),
    }.get(scenario)
    return any_pdu() if favourite is None else st.one_of(favourite, any_pdu())


@functools.cache
def _scenario_pdus(scenario: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """Labelled PDUs for a scenario (built once: strategy construction is not free)."""
    return labelled_pdus(_carriers(scenario))


@st.composite
def cases(
    draw: st.DrawFn,
    scenarios: list[str],
    *,
    max_delay: float = 0.05,
    ends: tuple[str, ...] = ("fin", "fin", "quiet", "linger"),
    pipelinable: frozenset[str] = frozenset(),
) -> Case:
    """A fuzz case for one of ``scenarios``: 0-3 labelled PDUs, a delivery plan, an ending."""
    scenario = draw(st.sampled_from(scenarios))
    pdus = draw(st.lists(_scenario_pdus(scenario), min_size=0, max_size=3))
    size = sum(len(d) for _, d in pdus)
    delivery = draw(deliveries(size, max_delay))
    pipelined = scenario in pipelinable and draw(st.booleans())
    return Case(scenario, pdus, delivery, draw(st.sampled_from(ends)), pipelined)
