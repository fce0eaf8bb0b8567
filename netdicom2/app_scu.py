"""`netdicom2 echo` and `netdicom2 store`: requestors built on DULServiceProvider.

`Association` is the small service-user layer they share: associate, send a DIMSE message
(command, then data set, fragmented to the peer's maximum PDU length), wait for a response
command, release. Every wait is bounded by `timeout` (an ACSE/DIMSE timeout, PS3.8 §9.1.4
Note 2: not ARTIM); on expiry the association is aborted (A-ABORT, Evt15 → AA-1).
`store` can keep several C-STOREs outstanding when the acceptor grants an Asynchronous
Operations Window (PS3.7 D.3.3.3): each data set is sent without waiting for the previous
response, which saves a round trip per data set.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from netdicom2.acse import (
    AcceptedContext,
    accepted_contexts,
    build_rq,
    check_window,
    window_granted,
)
from netdicom2.cli import MAX_LENGTH, bounded_int, seconds
from netdicom2.dimse import (
    VERIFICATION_SOP_CLASS,
    CommandFragments,
    CommandSet,
    DimseError,
    FileMeta,
    c_echo_rq,
    c_store_rq,
    decode_command,
    encode_command,
    read_part10,
)
from netdicom2.dulprovider import Connector, DULServiceProvider
from netdicom2.exceptions import NetDicomError, TimeoutError
from netdicom2.framing import fragment
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateAcPDU,
    AAssociateRjPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

__all__ = ["Association", "AssociationError", "add_subcommands", "echo", "store"]


class AssociationError(NetDicomError):
    """The association was rejected, aborted, or the peer did not answer in time."""


class Association:
    """A requestor association over DULServiceProvider (context manager: releases on exit).

    `max_operations` other than 1 proposes that many outstanding requests (sub-item 53H,
    PS3.7 D.3.3.3); `window` is what the acceptor granted: 1 when its AC has no 53H.
    """

    def __init__(
        self,
        address: tuple[str, int],
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        called_ae: str = "ANY-SCP",
        calling_ae: str = "NETDICOM2",
        max_pdu_length: int = 16384,
        timeout: float = 30.0,
        connect: Connector | None = None,
        max_operations: int = 1,
    ) -> None:
        # 0 (unlimited) would let responses pile up unread: our window is always bounded.
        check_window("max_operations", max_operations, minimum=1)
        self.timeout = timeout
        self.max_operations = max_operations
        self.window = 1
        self.rq = build_rq(
            called_ae,
            calling_ae,
            contexts,
            max_pdu_length=max_pdu_length,
            max_operations=max_operations,
        )
        # One user thread alternates send() and receive(): it runs the provider's loop itself,
        # saving a thread start and the hand-offs (DULServiceProvider, threaded=False).
        self.dul = DULServiceProvider(
            address=address, connect=connect, name="scu-dul", threaded=False
        )
        self.ac: AAssociateAcPDU | None = None
        self.contexts: list[AcceptedContext] = []
        self._message_id = 0

    def __enter__(self) -> Association:
        self.associate()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()

    def associate(self) -> AAssociateAcPDU:
        """A-ASSOCIATE request; returns the AC or raises AssociationError (RJ, abort, time)."""
        self.dul.send(self.rq)
        answer = self._wait()
        if isinstance(answer, AAssociateAcPDU):
            self.ac = answer
            self.contexts = accepted_contexts(self.rq, answer)
            self.window = window_granted(answer, self.max_operations)
            return answer
        self.dul.kill()
        if isinstance(answer, AAssociateRjPDU):
            raise AssociationError(
                f"association rejected: result {answer.result}, source {answer.source}, "
                f"reason {answer.reason_diag} (PS3.8 Table 9-21)"
            )
        raise AssociationError(f"association not established: {answer!r}")

    def context_for(self, abstract_syntax: str, transfer_syntax: str | None = None) -> int:
        """The ID of an accepted context for this abstract (and transfer) syntax."""
        for context in self.contexts:
            if context.abstract_syntax == abstract_syntax and (
                transfer_syntax is None or context.transfer_syntax == transfer_syntax
            ):
                return context.context_id
        raise AssociationError(f"no accepted presentation context for {abstract_syntax}")

    def send_message(
        self, context_id: int, command: CommandSet, dataset: bytes | memoryview | None = None
    ) -> None:
        """Command fragments, then data-set fragments, within the peer's maximum (Annex E)."""
        peer_max = self.dul.connection.peer_max_pdu_length or 0
        data = encode_command(command)
        for pdu in fragment(context_id, data, is_command=True, max_pdu_length=peer_max):
            self.dul.send(pdu)
        if dataset is not None:
            for pdu in fragment(context_id, dataset, is_command=False, max_pdu_length=peer_max):
                self.dul.send(pdu)

    def receive_command(self) -> CommandSet:
        """Wait for a whole response command set (data sets of responses are not expected)."""
        fragments = CommandFragments()
        while True:
            pdu = self._wait()
            if not isinstance(pdu, PDataTfPDU):
                raise AssociationError(f"association ended while waiting for a response: {pdu!r}")
            for item in pdu.data_value_items:
                if item.is_command:
                    try:
                        data = fragments.add(item.fragment, item.is_last)
                    except DimseError as exc:
                        raise AssociationError(f"response {exc}") from None
                    if data is not None:
                        return decode_command(data)

    def next_message_id(self) -> int:
        """Message IDs 1, 2, 3, ... (PS3.7 §9.3: unique among outstanding requests)."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def release(self) -> None:
        """A-RELEASE request; waits for the confirmation, then stops the provider."""
        try:
            self.dul.send(AReleaseRqPDU())
            while not isinstance(self._wait(), AReleaseRpPDU):
                pass  # PS3.8 AR-6: P-DATA may still arrive after our A-RELEASE-RQ
        finally:
            self.dul.kill()

    def abort(self) -> None:
        """A-ABORT request (Evt15 → AA-1) if the association is still up; stop the provider."""
        self.dul.kill()

    def _wait(self) -> PDU:
        """The next indication within the timeout; an abort or timeout raises."""
        try:
            pdu = self.dul.receive(self.timeout)
        except TimeoutError:
            self.dul.kill()
            raise AssociationError(f"no answer within {self.timeout} s; aborted") from None
        if isinstance(pdu, AAbortPDU):
            self.dul.kill()
            kind = "A-ABORT" if pdu.source == 0 else "A-P-ABORT"
            raise AssociationError(f"{kind}: source {pdu.source}, reason {pdu.reason_diag}")
        return pdu


def echo(address: tuple[str, int], **kwargs: object) -> int:
    """Associate, C-ECHO, release; returns the C-ECHO-RSP status."""
    contexts = [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])]
    with Association(address, contexts, **kwargs) as assoc:  # type: ignore[arg-type]
        assoc.send_message(assoc.context_for(VERIFICATION_SOP_CLASS), c_echo_rq(1))
        status = assoc.receive_command().status
    return -1 if status is None else status


def store(address: tuple[str, int], files: Sequence[Path], **kwargs: object) -> list[int]:
    """Send each Part 10 file with C-STORE in one association; returns the statuses."""
    metas = [_file_meta(path) for path in files]
    proposals: list[tuple[str, list[str]]] = []
    for meta in metas:
        wanted = [meta.transfer_syntax_uid]
        if (meta.sop_class_uid, wanted) not in proposals:
            proposals.append((meta.sop_class_uid, wanted))
    statuses: list[int] = []
    outstanding: deque[int] = deque()  # message IDs sent, oldest first, until reported
    answered: dict[int, int] = {}
    with Association(address, proposals, **kwargs) as assoc:  # type: ignore[arg-type]
        for path, meta in zip(files, metas, strict=True):
            while len(outstanding) - len(answered) >= assoc.window:  # PS3.7 D.3.3.3
                _collect(assoc, outstanding, answered, statuses)
            context_id = assoc.context_for(meta.sop_class_uid, meta.transfer_syntax_uid)
            message_id = assoc.next_message_id()
            command = c_store_rq(message_id, meta.sop_class_uid, meta.sop_instance_uid)
            with _contents(path) as data:
                assoc.send_message(context_id, command, data[meta.dataset_offset :])
            outstanding.append(message_id)
        while outstanding:
            _collect(assoc, outstanding, answered, statuses)
    return statuses


def _collect(
    assoc: Association, outstanding: deque[int], answered: dict[int, int], statuses: list[int]
) -> None:
    """Receive one C-STORE-RSP; append the statuses of the oldest requests now answered.

    Responses are matched by Message ID Being Responded To (PS3.7 §9.3.1.2), so a peer may
    answer outstanding requests in any order; the statuses keep the order of the files.
    """
    response = assoc.receive_command()
    responded = response.message_id_being_responded_to
    if responded not in outstanding or responded in answered:
        raise AssociationError(f"C-STORE-RSP for message {responded}, which is not outstanding")
    answered[responded] = -1 if response.status is None else response.status
    while outstanding and outstanding[0] in answered:
        statuses.append(answered.pop(outstanding.popleft()))


# Files up to this size are read with one read(): cheaper than the page faults of a mapping.
_READ_WHOLE = 4 << 20
# The File Meta group is read from a head this long, then from longer ones while it goes on.
_HEAD = 4096
_MAX_HEAD = 1 << 20


def _file_meta(path: Path) -> FileMeta:
    """The File Meta group of a Part 10 file (PS3.10 §7.1), read from the head of the file."""
    size = _HEAD
    with path.open("rb") as handle:
        while True:
            head = handle.read(size)
            at_end = len(head) < size
            try:
                meta = read_part10(head)
            except DimseError:
                if at_end or size >= _MAX_HEAD:
                    raise
            else:
                # Complete when an element of another group follows it (or the file ends).
                if at_end or meta.dataset_offset + 8 <= len(head):
                    return meta
                if size >= _MAX_HEAD:
                    raise DimseError(f"file meta group longer than {_MAX_HEAD} bytes")
            size *= 16
            handle.seek(0)


@contextlib.contextmanager
def _contents(path: Path) -> Iterator[memoryview]:
    """The file's bytes: read when small, mapped when large (never held twice)."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size <= _READ_WHOLE:
            yield memoryview(handle.read())
            return
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, or one that cannot be mapped
            yield memoryview(handle.read())
            return
    view = memoryview(mapped)
    try:
        yield view
    finally:
        view.release()
        with contextlib.suppress(BufferError):  # a fragment still referenced: unmapped when freed
            mapped.close()


def _address(host: str, port: int) -> tuple[str, int]:
    """(host, port) for the provider."""
    return (host, port)


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `netdicom2 echo` and `netdicom2 store`."""
    for name, help_text in (
        ("echo", "C-ECHO a DICOM peer (Verification SCU)"),
        ("store", "C-STORE Part 10 files to a DICOM peer (Storage SCU)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("host")
        p.add_argument("port", type=bounded_int(1, 0xFFFF))
        if name == "store":
            p.add_argument("files", nargs="+", type=Path, metavar="FILE")
        p.add_argument("--called-ae", default="ANY-SCP", help="called AE title")
        p.add_argument("--calling-ae", default="NETDICOM2", help="calling AE title")
        p.add_argument(
            "--max-pdu",
            type=bounded_int(0, MAX_LENGTH),
            default=16384,
            help="maximum PDU length we receive (0: unlimited)",
        )
        p.add_argument(
            "--timeout", type=seconds(), default=30.0, help="seconds to wait for answers"
        )
        if name == "store":
            p.add_argument(
                "--max-operations",
                type=bounded_int(1, 0xFFFF),
                default=1,
                help="C-STOREs outstanding at once if the acceptor agrees (PS3.7 D.3.3.3)",
            )
        p.set_defaults(handler=_run_echo if name == "echo" else _run_store)


def _kwargs(args: argparse.Namespace) -> dict[str, object]:
    """Association keyword arguments from the command line."""
    kwargs: dict[str, object] = {
        "called_ae": args.called_ae,
        "calling_ae": args.calling_ae,
        "max_pdu_length": args.max_pdu,
        "timeout": args.timeout,
    }
    if getattr(args, "max_operations", 1) != 1:
        kwargs["max_operations"] = args.max_operations
    return kwargs


def _run_echo(args: argparse.Namespace) -> int:
    """Exit 0 when the peer answers C-ECHO with status 0000H."""
    started = time.perf_counter()
    try:
        status = echo(_address(args.host, args.port), **_kwargs(args))
    except (AssociationError, OSError) as exc:
        print(f"netdicom2 echo: {exc}", file=sys.stderr)
        return 1
    elapsed = (time.perf_counter() - started) * 1000
    print(f"C-ECHO {args.host}:{args.port}: status 0x{status:04X} ({elapsed:.1f} ms)")
    return 0 if status == 0 else 1


def _run_store(args: argparse.Namespace) -> int:
    """Exit 0 when every file was stored with status 0000H."""
    try:
        statuses = store(_address(args.host, args.port), args.files, **_kwargs(args))
    except (AssociationError, DimseError, OSError) as exc:
        print(f"netdicom2 store: {exc}", file=sys.stderr)
        return 1
    for path, status in zip(args.files, statuses, strict=True):
        print(f"C-STORE {path}: status 0x{status:04X}")
    return 0 if all(s == 0 for s in statuses) else 1
