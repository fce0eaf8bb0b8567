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
import logging
import mmap
import os
import socket
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
from netdicom2.cli import (
    MAX_LENGTH,
    JobError,
    UsageError,
    ae_title,
    bounded_int,
    connect_error,
    seconds,
)
from netdicom2.dimse import (
    COMMAND_FIELDS,
    ERROR_COMMENT,
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
from netdicom2.exceptions import LocalProtocolError, NetDicomError, TimeoutError
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

__all__ = ["Association", "AssociationError", "ConnectError", "add_subcommands", "echo", "store"]


class AssociationError(NetDicomError):
    """The association was rejected, aborted, or the peer did not answer in time."""


class ConnectError(AssociationError):
    """The TCP connection could not be made (refused, unknown host, unreachable, timed out)."""


# PS3.8 Annex D.1 / E.1: a P-DATA-TF carrying one PDV needs 6 bytes of item header and an even
# fragment of at least 2 bytes; a peer announcing less can receive nothing from us.
MIN_PEER_MAX_LENGTH = 8
# A request (command and data set) must be handed to the peer within `timeout` for each
# SEND_UNIT bytes of its data set or part of them: a predictable bound for a peer that reads a
# few bytes now and then, which the per-PDU "reads nothing for `timeout`" rule never ends.
SEND_UNIT = 64 << 20
_C_ECHO_RSP = COMMAND_FIELDS["C-ECHO-RSP"]
_C_STORE_RSP = COMMAND_FIELDS["C-STORE-RSP"]


class Association:
    """A requestor association over DULServiceProvider (context manager: releases on exit).

    `max_operations` other than 1 proposes that many outstanding requests (sub-item 53H,
    PS3.7 D.3.3.3); `window` is what the acceptor granted: 1 when its AC has no 53H.

    `timeout` bounds each exchange as a whole, not only each PDU: the TCP connect and the
    A-ASSOCIATE answer, the sending of each request (`send_limit`: `timeout` for each 64 MiB
    of its data set or part of them), each response after its request was sent, and the
    A-RELEASE answer (PS3.8 §9.1.4 Note 2: ACSE/DIMSE timers of the user, not ARTIM); a peer
    that reads none of our data for `timeout` is dropped too. `time_limit` bounds everything
    from associate() on.
    Whatever the peer answers that cannot be used (a rejection, an abort, an unusable maximum
    length, a malformed or unexpected response) raises AssociationError after an A-ABORT.
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
        time_limit: float | None = None,
    ) -> None:
        # 0 (unlimited) would let responses pile up unread: our window is always bounded.
        check_window("max_operations", max_operations, minimum=1)
        self.address = address
        self.timeout = timeout
        self.time_limit = time_limit
        self.max_operations = max_operations
        self.window = 1
        self.rq = build_rq(
            called_ae,
            calling_ae,
            contexts,
            max_pdu_length=max_pdu_length,
            max_operations=max_operations,
        )
        self._connect_failure: OSError | None = None
        self._end = float("inf")  # the time_limit, once associate() started
        self._exchange_end = float("inf")  # the current exchange's bound
        # One user thread alternates send() and receive(): it runs the provider's loop itself,
        # saving a thread start and the hand-offs (DULServiceProvider, threaded=False).
        self.dul = DULServiceProvider(
            address=address,
            connect=connect or self._connect,
            name="scu-dul",
            threaded=False,
            send_timeout=timeout,
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

    def _connect(self, address: tuple[str, int]) -> socket.socket:
        """TRANSPORT CONNECT (PS3.8 §9.1.2) within the exchange; remembers why it failed."""
        try:
            return socket.create_connection(address, timeout=max(0.001, self._remaining()))
        except OSError as exc:
            self._connect_failure = exc
            raise

    def _begin(self) -> None:
        """Start an exchange: it must be over within `timeout` (and the time limit)."""
        self._exchange_end = min(self._end, time.monotonic() + self.timeout)

    def _remaining(self) -> float:
        """Seconds left in the current exchange."""
        return self._exchange_end - time.monotonic()

    def associate(self) -> AAssociateAcPDU:
        """A-ASSOCIATE request; returns the AC or raises AssociationError (RJ, abort, time)."""
        if self.time_limit is not None:
            self._end = time.monotonic() + self.time_limit
        self._begin()
        self.dul.send(self.rq)  # the first PDU: nothing is queued ahead of it
        try:
            answer = self._wait("A-ASSOCIATE answer")
        except AssociationError:
            failure = self._connect_failure
            if failure is not None:
                host, port = self.address
                raise ConnectError(connect_error(failure, host, port)) from None
            raise
        if isinstance(answer, AAssociateAcPDU):
            peer_max = answer.max_length or 0
            if 0 < peer_max < MIN_PEER_MAX_LENGTH:
                raise self.unusable(
                    f"the peer's Maximum Length Received is {peer_max}: no PDV fits in it "
                    f"(PS3.8 Annex D.1; at least {MIN_PEER_MAX_LENGTH})"
                )
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
        raise AssociationError(f"association not established: {type(answer).__name__}")

    def context_for(self, abstract_syntax: str, transfer_syntax: str | None = None) -> int:
        """The ID of an accepted context for this abstract (and transfer) syntax."""
        for context in self.contexts:
            if context.abstract_syntax == abstract_syntax and (
                transfer_syntax is None or context.transfer_syntax == transfer_syntax
            ):
                return context.context_id
        raise self.unusable(f"no accepted presentation context for {abstract_syntax}")

    def send_message(
        self, context_id: int, command: CommandSet, dataset: bytes | memoryview | None = None
    ) -> None:
        """Command fragments, then data-set fragments, within the peer's maximum (Annex E).

        All of it must be handed to the peer within `send_limit` (and the time limit): past
        that, A-ABORT (Evt15 → AA-1) and AssociationError.
        """
        peer_max = self.dul.connection.peer_max_pdu_length or 0
        data = encode_command(command)
        size = 0 if dataset is None else len(dataset)
        limit = self.send_limit(size)
        deadline = time.monotonic() + limit
        if deadline > self._end:
            deadline, limit = self._end, self.time_limit or limit
        send = self.dul.send
        try:
            for pdu in fragment(context_id, data, is_command=True, max_pdu_length=peer_max):
                send(pdu, deadline=deadline)
            if dataset is not None:
                for pdu in fragment(context_id, dataset, is_command=False, max_pdu_length=peer_max):
                    send(pdu, deadline=deadline)
        except TimeoutError:
            # The peer takes our bytes too slowly to finish in time: our A-ABORT request
            # (PS3.8 Table 9-10, Sta6 + Evt15 → AA-1; written if the socket takes it), close.
            raise self.unusable(
                f"timed out while the request was sent: the peer did not read it ({size} "
                f"bytes of data set) within {limit:g} s"
            ) from None
        except LocalProtocolError:
            # The association ended while we sent (the peer aborted, or read nothing for
            # `timeout` and the transport was dropped): say how, from its last indication.
            self._begin()
            try:
                self._wait("response")
                how = "the association ended"
            except AssociationError as exc:
                how = str(exc)  # starts with the indication: A-ABORT / A-P-ABORT ...
            raise AssociationError(
                f"{how} while the request was sent (a peer that reads nothing for "
                f"{self.timeout:g} s is dropped)"
            ) from None

    def receive_command(self, expected: int | None = None) -> CommandSet:
        """Wait (within `timeout` in all) for a whole response command set.

        Responses to C-ECHO and C-STORE carry no data set (PS3.7 §9.3.1.2, §9.3.5.2): a
        data-set fragment, a malformed command set or one that is not `expected` (a command
        field) is an answer we cannot use: A-ABORT and AssociationError.
        """
        self._begin()
        fragments = CommandFragments()
        while True:
            pdu = self._wait("response")
            if not isinstance(pdu, PDataTfPDU):
                self.dul.kill()
                raise AssociationError(
                    f"association ended while waiting for a response: {type(pdu).__name__}"
                )
            for item in pdu.data_value_items:
                if not item.is_command:
                    raise self.unusable("the peer sent a data set where a response was due")
                try:
                    data = fragments.add(item.fragment, item.is_last)
                    if data is None:
                        continue
                    response = decode_command(data)
                except DimseError as exc:
                    raise self.unusable(f"response {exc}") from None
                if expected is not None and response.command_field != expected:
                    raise self.unusable(
                        f"response has command field {response.command_field:04X}H, "
                        f"not {expected:04X}H (PS3.7 §9.3)"
                    )
                if response.status is None:
                    raise self.unusable("response has no Status (0000,0900) (PS3.7 §9.3)")
                return response

    def send_limit(self, size: int) -> float:
        """Seconds to send a request with `size` bytes of data set: `timeout` per SEND_UNIT."""
        return self.timeout * max(1, -(-size // SEND_UNIT))

    def next_message_id(self) -> int:
        """Message IDs 1, 2, 3, ... (PS3.7 §9.3: unique among outstanding requests)."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def release(self) -> None:
        """A-RELEASE request; waits (within `timeout`) for the confirmation, then stops."""
        self._begin()
        try:
            self.dul.send(AReleaseRqPDU(), deadline=self._exchange_end)
            while not isinstance(self._wait("A-RELEASE-RP"), AReleaseRpPDU):
                pass  # PS3.8 AR-6: P-DATA may still arrive after our A-RELEASE-RQ
        except TimeoutError:  # from send(): the peer still had not read what came before
            raise AssociationError(
                f"the A-RELEASE-RQ was not sent within {self.timeout:g} s; aborted"
            ) from None
        finally:
            self.dul.kill()

    def abort(self) -> None:
        """A-ABORT request (Evt15 → AA-1) if the association is still up; stop the provider."""
        self.dul.kill()

    def unusable(self, reason: str) -> AssociationError:
        """An answer we cannot use: A-ABORT (Evt15 → AA-1) and the error to raise."""
        self.dul.kill()
        return AssociationError(f"{reason}; aborted")

    def _wait(self, what: str) -> PDU:
        """The next indication within the exchange's time; an abort or the time's end raises."""
        remaining = self._remaining()
        try:
            if remaining <= 0:
                raise TimeoutError(what)
            pdu = self.dul.receive(min(self.timeout, remaining))
        except LocalProtocolError:  # ProviderStoppedError: the loop ended, nothing more comes
            self.dul.kill()
            raise AssociationError(f"association ended while waiting for {what}") from None
        except TimeoutError:
            self.dul.kill()
            limit = self.timeout
            if self._exchange_end == self._end and self.time_limit is not None:
                limit = self.time_limit
            raise AssociationError(f"no {what} within {limit:g} s; aborted") from None
        if isinstance(pdu, AAbortPDU):
            self.dul.kill()
            if self._connect_failure is not None:
                raise AssociationError("connect failed")
            kind = "A-ABORT" if pdu.source == 0 else "A-P-ABORT"
            raise AssociationError(f"{kind}: source {pdu.source}, reason {pdu.reason_diag}")
        return pdu


def echo(address: tuple[str, int], **kwargs: object) -> int:
    """Associate, C-ECHO, release; returns the C-ECHO-RSP status.

    The whole exchange is bounded by `timeout` (`time_limit`, unless given otherwise).
    """
    contexts = [(VERIFICATION_SOP_CLASS, ["1.2.840.10008.1.2"])]
    kwargs.setdefault("time_limit", kwargs.get("timeout", 30.0))
    with Association(address, contexts, **kwargs) as assoc:  # type: ignore[arg-type]
        assoc.send_message(assoc.context_for(VERIFICATION_SOP_CLASS), c_echo_rq(1))
        response = assoc.receive_command(_C_ECHO_RSP)
        if response.message_id_being_responded_to != 1:  # PS3.7 §9.3.5.2
            raise assoc.unusable(
                f"C-ECHO-RSP for message {response.message_id_being_responded_to}, not 1"
            )
    return -1 if response.status is None else response.status


def store(
    address: tuple[str, int],
    files: Sequence[Path],
    *,
    statuses: list[int] | None = None,
    comments: list[str] | None = None,
    **kwargs: object,
) -> list[int]:
    """Send each Part 10 file with C-STORE in one association; returns the statuses.

    `statuses`, when given, receives each status as it is known (what a failure leaves);
    `comments` the Error Comment (0000,0902) of each response ("" when none).
    """
    metas = [_file_meta(path) for path in files]
    proposals: list[tuple[str, list[str]]] = []
    for meta in metas:
        wanted = [meta.transfer_syntax_uid]
        if (meta.sop_class_uid, wanted) not in proposals:
            proposals.append((meta.sop_class_uid, wanted))
    results: list[int] = [] if statuses is None else statuses
    notes: list[str] = [] if comments is None else comments
    outstanding: deque[int] = deque()  # message IDs sent, oldest first, until reported
    answered: dict[int, tuple[int, str]] = {}
    with Association(address, proposals, **kwargs) as assoc:  # type: ignore[arg-type]
        for path, meta in zip(files, metas, strict=True):
            while len(outstanding) - len(answered) >= assoc.window:  # PS3.7 D.3.3.3
                _collect(assoc, outstanding, answered, results, notes)
            context_id = assoc.context_for(meta.sop_class_uid, meta.transfer_syntax_uid)
            message_id = assoc.next_message_id()
            command = c_store_rq(message_id, meta.sop_class_uid, meta.sop_instance_uid)
            with _contents(path) as data:
                assoc.send_message(context_id, command, data[meta.dataset_offset :])
            outstanding.append(message_id)
        while outstanding:
            _collect(assoc, outstanding, answered, results, notes)
    return results


def _collect(
    assoc: Association,
    outstanding: deque[int],
    answered: dict[int, tuple[int, str]],
    statuses: list[int],
    comments: list[str],
) -> None:
    """Receive one C-STORE-RSP; append the statuses of the oldest requests now answered.

    Responses are matched by Message ID Being Responded To (PS3.7 §9.3.1.2), so a peer may
    answer outstanding requests in any order; the statuses keep the order of the files.
    """
    response = assoc.receive_command(_C_STORE_RSP)
    responded = response.message_id_being_responded_to
    if responded not in outstanding or responded in answered:
        raise assoc.unusable(f"C-STORE-RSP for message {responded}, which is not outstanding")
    status = -1 if response.status is None else response.status
    answered[responded] = (status, response.get_uid(ERROR_COMMENT))
    while outstanding and outstanding[0] in answered:
        status, comment = answered.pop(outstanding.popleft())
        statuses.append(status)
        comments.append(comment)


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
        p.add_argument("--called-ae", type=ae_title, default="ANY-SCP", help="called AE title")
        p.add_argument("--calling-ae", type=ae_title, default="NETDICOM2", help="calling AE title")
        p.add_argument(
            "--max-pdu",
            type=bounded_int(0, MAX_LENGTH),
            default=16384,
            help="maximum PDU length we receive (0: unlimited)",
        )
        scope = (
            "the whole echo"
            if name == "echo"
            else "each exchange (associate; sending each request: this many seconds for each "
            "64 MiB of its data set or part of them; each response; release)"
        )
        p.add_argument(
            "--timeout",
            type=seconds(),
            default=30.0,
            help=f"seconds for {scope}, and for a peer that reads nothing",
        )
        if name == "store":
            p.add_argument(
                "--max-operations",
                type=bounded_int(1, 0xFFFF),
                default=1,
                help="C-STOREs outstanding at once if the acceptor agrees (PS3.7 D.3.3.3)",
            )
        p.add_argument(
            "-v", "--verbose", action="count", default=0, help="-v provider log, -vv transitions"
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


def _quiet_logging(verbose: int) -> None:
    """The provider's log only with -v: every failure it sees is our one line on stderr."""
    level = (logging.CRITICAL + 10, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _run_echo(args: argparse.Namespace) -> int:
    """Exit 0 when the peer answers C-ECHO with status 0000H."""
    _quiet_logging(args.verbose)
    started = time.perf_counter()
    try:
        status = echo((args.host, args.port), **_kwargs(args))
    except AssociationError as exc:
        raise JobError(str(exc)) from None
    elapsed = (time.perf_counter() - started) * 1000
    print(f"C-ECHO {args.host}:{args.port}: status 0x{status:04X} ({elapsed:.1f} ms)")
    return 0 if status == 0 else 1


def _check_files(files: Sequence[Path]) -> None:
    """Every FILE is a readable Part 10 file, before any connection (UsageError naming it)."""
    for path in files:
        try:
            _file_meta(path)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        except DimseError as exc:
            raise UsageError(f"{path}: {exc}") from None


def _run_store(args: argparse.Namespace) -> int:
    """Exit 0 when every file was stored with status 0000H."""
    _quiet_logging(args.verbose)
    _check_files(args.files)
    statuses: list[int] = []
    comments: list[str] = []
    failure: str | None = None
    try:
        store(
            (args.host, args.port),
            args.files,
            statuses=statuses,
            comments=comments,
            **_kwargs(args),
        )
    except (AssociationError, DimseError) as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        _print_statuses(args.files, statuses, comments)
        raise
    _print_statuses(args.files, statuses, comments)
    if failure is not None:
        done = f" after {len(statuses)} of {len(args.files)} files" if statuses else ""
        raise JobError(f"{failure}{done}")
    return 0 if all(s == 0 for s in statuses) else 1


def _print_statuses(
    files: Sequence[Path], statuses: Sequence[int], comments: Sequence[str]
) -> None:
    """One line per file answered, with the peer's Error Comment when it gave one."""
    for path, status, comment in zip(files, statuses, comments, strict=False):
        note = f" ({comment})" if comment else ""
        print(f"C-STORE {path}: status 0x{status:04X}{note}", flush=True)
