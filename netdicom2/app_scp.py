"""`netdicom2 scp`: a Verification and Storage SCP, every association in one DULServer loop.

Each accepted TCP connection gets its own PS3.8 state machine and a service user (`_Session`)
that negotiates, answers C-ECHO and C-STORE and the release from within the indication, in the
loop thread: no thread per connection. Data sets stream to `output_dir` as Part 10 files,
fragment by fragment, under a temporary name renamed into place only when complete
(`app_files`), or are counted and discarded: the SCP never holds a whole data set in memory.

C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C), each failure with an Error Comment:
0000H stored; A700H the data set is over `max_dataset_size`, or the data sets being written
all together are over `max_in_progress` (answered at once, the rest is discarded); A701H
another association is storing the same SOP Instance UID right now (never two writers on one
file: retry later); A702H the file could not be written (disk full, I/O error); 0122H the
presentation context is not for a Storage SOP class (e.g. Verification) or not for the
request's Affected SOP Class; C000H data-set fragments on another presentation context than
their C-STORE-RQ (PS3.8 §8.1). A second store of a UID already stored replaces the file
atomically.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netdicom2.acse import AcceptedContext, check_window, negotiate
from netdicom2.app_files import (
    MAX_IN_PROGRESS,
    OutputDir,
    PartialFile,
)
from netdicom2.dimse import (
    COMMAND_FIELDS,
    NO_DATA_SET,
    CommandFragments,
    CommandSet,
    DimseError,
    c_echo_rsp,
    c_store_rsp,
    decode_command,
    encode_command,
    is_storage_class,
)
from netdicom2.dulserver import DEFAULT_MAX_BUFFERED, ERROR, IDLE, Channel, DULServer
from netdicom2.framing import DEFAULT_MAX_ASSOCIATE_LENGTH
from netdicom2.items import PresentationDataValueItem
from netdicom2.pdu import (
    PDU,
    AAbortPDU,
    AAssociateRjPDU,
    AAssociateRqPDU,
    AReleaseRpPDU,
    AReleaseRqPDU,
    PDataTfPDU,
)

__all__ = ["StorageSCP", "add_subcommand"]

log = logging.getLogger("netdicom2.scp")

# PS3.7 Annex C and PS3.4 Table B.2-1: statuses the example SCP answers with.
SUCCESS = 0x0000
UNRECOGNIZED_OPERATION = 0x0211  # PS3.7 C: Refused, Unrecognized operation
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C: Refused, SOP Class not supported
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2-1: Refused, Out of Resources (over max_dataset_size)
INSTANCE_BUSY = 0xA701  # A7xx as well: the instance is being written by another association
CANNOT_WRITE = 0xA702  # A7xx as well: the file system refused the file (full disk, I/O error)
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2-1: Error, Cannot understand
# The default bound on one data set (--max-dataset-size): 4 GiB, the largest a defined-length
# data set can announce (PS3.5 §7.1: 32-bit lengths); larger ones are refused with A700H.
MAX_DATASET_SIZE = 1 << 32
# One peer address may hold this many of the associations (default 500) at once: a single
# client cannot lock every other one out (RJ 2/3/2 beyond it, PS3.8 Table 9-21).
MAX_PER_ADDRESS = 128
# PS3.7 §9.3: the command fields answered, read once.
_C_ECHO_RQ = COMMAND_FIELDS["C-ECHO-RQ"]
_C_STORE_RQ = COMMAND_FIELDS["C-STORE-RQ"]


@dataclass
class SCPStats:
    """Counters a test or benchmark can read while the SCP runs."""

    connections: int = 0
    associations: int = 0
    rejected_over_limit: int = 0  # RJ 2/3/2: max_associations reached
    rejected_per_address: int = 0  # RJ 2/3/2: the peer's address holds max_per_address
    stores: int = 0  # C-STOREs answered 0000H
    store_failures: int = 0  # C-STOREs answered with a failure status
    echoes: int = 0
    bytes_received: int = 0
    active: int = 0
    # How associations ended, as the service user saw it (PS3.8 §7.2-§7.4).
    released: int = 0
    aborted: int = 0  # A-ABORT indication (the peer's user abort, source 0)
    provider_aborted: int = 0  # A-P-ABORT indication (source 2, or the transport was lost)
    idle_aborted: int = 0  # no PDU within idle_timeout: we aborted (PS3.8 §9.1.4 Note 2)
    evicted: int = 0  # dropped before an A-ASSOCIATE-RQ to make room (max_pending)
    shed: int = 0  # aborted for holding the most of the max_buffered budget
    accept_errors: int = 0  # accept() failed for lack of resources
    errors: int = 0  # the service user failed (a bug, or e.g. a full disk)
    unclean: int = 0  # the provider was not back in Sta1 when its service user ended
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class StorageSCP(DULServer):
    """A listening socket whose connections are all served by one DULServer loop (acceptor).

    Limits: `max_associations` established at once, more are answered A-ASSOCIATE-RJ
    (transient, service-provider presentation, local limit exceeded: 2/3/2, PS3.8 Table 9-21);
    `max_pending` connections still waiting for their A-ASSOCIATE-RQ (Sta2, bounded by ARTIM),
    beyond which the oldest is dropped; `idle_timeout` seconds without a PDU in an association
    before it is aborted (PS3.8 §9.1.4 Note 2, not ARTIM); `send_timeout` seconds a peer may
    leave our output unread. Each connection costs one file descriptor (its socket) and no
    thread: the service user answers from within the indication, in the loop thread.
    `max_operations` bounds the Asynchronous Operations Window granted to a requestor that
    proposes one (PS3.7 D.3.3.3; 0, the default, grants what it proposes): requests are
    performed in the order received and each is answered when complete, so pipelined requests
    wait in the transport, bounded by TCP flow control. `max_dataset_size` bounds one data set
    in bytes (A700H above it), `max_in_progress` the bytes of all data sets being written into
    `output_dir` at once (A700H for the store that would pass it). Temporary files left by a
    killed process are swept when the SCP is created. `max_per_address` (default 128, a
    quarter of `max_associations`' default; 0: no cap) bounds the associations of one peer
    address, `max_buffered` the bytes buffered over all connections and `max_associate_length`
    the PDU-length of an A-ASSOCIATE-RQ (DULServer).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11112,
        *,
        ae_title: str | None = None,
        artim_timeout: float = 30.0,
        max_pdu_length: int = 16384,
        output_dir: Path | None = None,
        max_associations: int = 500,
        abstract_syntaxes: list[str] | None = None,
        max_pending: int = 1000,
        idle_timeout: float | None = 60.0,
        send_timeout: float = 30.0,
        max_operations: int = 0,
        max_dataset_size: int = MAX_DATASET_SIZE,
        max_in_progress: int = MAX_IN_PROGRESS,
        max_per_address: int = MAX_PER_ADDRESS,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
        on_failure: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Bind host:port (127.0.0.1 by default) and prepare; start() serves."""
        check_window("max_operations", max_operations)
        if max_associations < 1:
            raise ValueError(f"max_associations must be at least 1, not {max_associations}")
        if max_dataset_size < 0:
            raise ValueError(f"max_dataset_size must be at least 0, not {max_dataset_size}")
        files = None
        if output_dir is not None:
            files = OutputDir(output_dir, max_in_progress)
            for leftover in files.sweep():
                log.info("removed %s, left by a process that ended mid-store", leftover.name)
        super().__init__(
            socket.create_server((host, port), backlog=1024),
            artim_timeout=artim_timeout,
            max_pdu_length=max_pdu_length,
            send_timeout=send_timeout,
            idle_timeout=idle_timeout,
            max_pending=max_pending,
            max_per_address=max_per_address,
            max_buffered=max_buffered,
            max_associate_length=max_associate_length,
            on_failure=on_failure,
            name="scp",
        )
        self.ae_title = ae_title
        self.output_dir = output_dir
        self.files = files
        self.max_dataset_size = max_dataset_size
        self.abstract_syntaxes = abstract_syntaxes
        self.max_associations = max_associations
        self.max_operations = max_operations
        self.stats = SCPStats()
        self._admitted = 0  # associations holding a slot (taken at AE-6, loop thread only)

    def start(self) -> StorageSCP:  # type: ignore[override]
        """Serve in a background thread; returns self."""
        super().start()
        return self

    # ------------------------------------------------------------------ DULServer hooks

    def new_handler(self, channel: Channel) -> _Session:
        """The service user of a connection whose first indication came."""
        return _Session(self, channel)

    def accepted(self, channel: Channel) -> None:
        """Count the connection (PS3.8 §9.1.2: Evt5)."""
        with self.stats.lock:
            self.stats.connections += 1

    def admit(self, channel: Channel, rq: AAssociateRqPDU) -> AAssociateRjPDU | None:
        """PS3.8 §7.1.2.6 / Table 9-21: over the cap, RJ transient, local limit exceeded (AE-6)."""
        if self._admitted < self.max_associations:
            self._admitted += 1
            return None
        with self.stats.lock:
            self.stats.rejected_over_limit += 1
        return AAssociateRjPDU(result=2, source=3, reason_diag=2)

    def accept_failed(self, exc: OSError) -> None:
        """Count and log a failed accept(); the listener backs off (PS3.8 §9.1.4 Note 1)."""
        with self.stats.lock:
            self.stats.accept_errors += 1
        log.warning("accept failed: %s", exc)

    def evicted(self, channel: Channel) -> None:
        """Count a connection dropped in Sta2 to make room (max_pending)."""
        with self.stats.lock:
            self.stats.evicted += 1

    def address_refused(self, channel: Channel) -> None:
        """Count an RJ 2/3/2 for an address at max_per_address (PS3.8 Table 9-21)."""
        with self.stats.lock:
            self.stats.rejected_per_address += 1

    def shedding(self, channel: Channel) -> None:
        """Count a connection aborted for holding the most of the max_buffered budget."""
        with self.stats.lock:
            self.stats.shed += 1

    def count_ending(self, session: _Session, outcome: str) -> None:
        """Release the slot and count how the association ended (SCPStats)."""
        if session.admitted:
            self._admitted -= 1
        with self.stats.lock:
            stats = self.stats
            if session.established:
                stats.active -= 1
            if outcome == IDLE:
                stats.idle_aborted += 1

            elif outcome == ERROR:
                stats.errors += 1
            elif session.abort is not None:
                if session.abort.source == 0:
                    stats.aborted += 1
                else:
                    stats.provider_aborted += 1
            elif session.released:
                stats.released += 1

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Session:
    """Per-association service-user state: negotiated contexts and the message being received."""

    def __init__(self, scp: StorageSCP, channel: Channel) -> None:
        self.scp = scp
        self.channel = channel
        self.peer = _peer_name(channel)
        self.contexts: dict[int, AcceptedContext] = {}
        self.command = CommandFragments()
        self.pending: CommandSet | None = None  # the request whose data set is arriving
        self.pending_context = 0
        self.partial: PartialFile | None = None
        self.status = SUCCESS  # the answer to the pending request, once its data set is in
        self.comment = ""
        self.received = 0  # data-set bytes of the pending request
        self.answered = False  # answered before its last fragment (over max_dataset_size)
        self.stores = 0
        self.admitted = False  # the indication came: _admit took a slot at AE-6
        self.established = False
        self.released = False
        self.abort: AAbortPDU | None = None

    def indication(self, pdu: PDU) -> None:
        """React to one indication of the provider (in the loop thread: never blocks)."""
        if isinstance(pdu, PDataTfPDU):
            for item in pdu.data_value_items:
                self._pdv(item)
        elif isinstance(pdu, AAssociateRqPDU):
            self._associate(pdu)
        elif isinstance(pdu, AReleaseRqPDU):
            self.released = True
            self.channel.send(AReleaseRpPDU())  # PS3.8 §7.2: release is always affirmative
        elif isinstance(pdu, AAbortPDU):
            self.abort = pdu  # A-ABORT / A-P-ABORT: nothing to answer, the provider ends it

    def _associate(self, rq: AAssociateRqPDU) -> None:
        """PS3.8 §7.1: answer the A-ASSOCIATE-RQ with an AC (accepted contexts) or an RJ."""
        self.admitted = True
        answer, accepted = negotiate(
            rq,
            abstract_syntaxes=self.scp.abstract_syntaxes,
            max_pdu_length=self.scp.max_pdu_length,
            ae_title=self.scp.ae_title,
            max_operations_performed=self.scp.max_operations,
        )
        self.contexts = {context.context_id: context for context in accepted}
        self.channel.send(answer)  # raises if the association ended meanwhile (Sta13: AA-8)
        calling, called = rq.calling_ae_title.strip(), rq.called_ae_title.strip()
        if isinstance(answer, AAssociateRjPDU):
            log.info(
                "%s: association %s -> %s rejected (result %d, source %d, reason %d)",
                self.peer,
                calling,
                called,
                answer.result,
                answer.source,
                answer.reason_diag,
            )
            return
        self.established = True
        with self.scp.stats.lock:
            self.scp.stats.associations += 1
            self.scp.stats.active += 1
        log.info(
            "%s: association %s -> %s accepted (%d of %d presentation contexts)",
            self.peer,
            calling,
            called,
            len(accepted),
            len(rq.presentation_context_items),
        )

    def _pdv(self, item: PresentationDataValueItem) -> None:
        """Collect command fragments; stream data-set fragments (PS3.8 Annex E)."""
        if item.context_id not in self.contexts:
            log.warning("P-DATA on presentation context %d that was not accepted", item.context_id)
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        if item.is_command:
            if self.pending is not None:
                # PS3.8 Annex E.2 [interp], as framing.Reassembler: a command fragment while the
                # data set of the previous command is expected is a protocol error.
                log.warning("command fragment while a data set is expected")
                self.channel.send(AAbortPDU(source=0, reason_diag=0))
                return
            try:
                data = self.command.add(item.fragment, item.is_last)
            except DimseError as exc:  # past MAX_COMMAND_LENGTH
                log.warning("%s", exc)
                self.channel.send(AAbortPDU(source=0, reason_diag=0))
                return
            if data is not None:
                self._command_complete(item.context_id, data)
            return
        if self.pending is None:
            log.warning("data set fragment without a command")
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        self._data_fragment(item)

    def _data_fragment(self, item: PresentationDataValueItem) -> None:
        """Write (or count and discard) one data-set fragment; answer after the last one."""
        size = len(item.fragment)
        self.received += size
        with self.scp.stats.lock:
            self.scp.stats.bytes_received += size
        if self.status == SUCCESS:
            if item.context_id != self.pending_context:
                # PS3.8 §8.1 / Annex E: every fragment of a message (command and data set,
                # PS3.7 §6.3) uses one presentation context; the transfer syntax of this data
                # set is unknown. PS3.4 Table B.2-1: Error, Cannot understand (C000H).
                self._fail(
                    CANNOT_UNDERSTAND,
                    f"data set on context {item.context_id}, request on {self.pending_context}",
                )
            elif self.received > self.scp.max_dataset_size:
                # PS3.4 Table B.2-1: Refused, Out of Resources (A7xxH); answered at once so that
                # a data set never marked last (PS3.8 Annex E.2) costs no disk and gets a status.
                self._fail(OUT_OF_RESOURCES, f"data set over {self.scp.max_dataset_size} bytes")
                self._answer_early()
            elif self.partial is not None:
                assert self.scp.files is not None
                try:
                    written = self.scp.files.write(self.partial, item.fragment)
                except OSError as exc:
                    self._fail(CANNOT_WRITE, f"cannot write: {exc.strerror}")
                else:
                    if not written:
                        # The bound on bytes being received into the folder, all associations
                        # together: PS3.4 Table B.2-1, Refused, Out of Resources (A7xxH).
                        limit = self.scp.files.max_in_progress
                        self._fail(OUT_OF_RESOURCES, f"over {limit} bytes being received")
                        self._answer_early()
        if item.is_last:
            self._store_complete()

    def _fail(self, status: int, comment: str) -> None:
        """The pending request fails: drop its file, answer `status` after its data set."""
        self.status, self.comment = status, comment
        self._drop_partial()

    def _drop_partial(self) -> None:
        """Remove the temporary file of the pending store, if any."""
        partial, self.partial = self.partial, None
        if partial is not None:
            partial.discard()
            assert self.scp.files is not None
            self.scp.files.release(partial)

    def _command_complete(self, context_id: int, data: bytes | memoryview) -> None:
        """A whole command set arrived: answer C-ECHO, prepare a C-STORE, refuse the rest."""
        try:
            command = decode_command(data)
        except DimseError as exc:
            log.warning("undecodable command set: %s", exc)
            self.channel.send(AAbortPDU(source=0, reason_diag=0))
            return
        if command.command_field == _C_ECHO_RQ and not command.has_data_set:
            with self.scp.stats.lock:
                self.scp.stats.echoes += 1
            self._respond(context_id, c_echo_rsp(command))
            return
        if not command.has_data_set:
            self._respond(context_id, _unrecognized(command))
            return
        # A data set follows (PS3.7 Table E.1-1): the answer waits for its last fragment.
        self.pending, self.pending_context = command, context_id
        self.status, self.comment, self.received, self.answered = SUCCESS, "", 0, False
        if command.command_field != _C_STORE_RQ:
            self.status = UNRECOGNIZED_OPERATION
            return
        context = self.contexts[context_id]
        sop_class = command.get_uid(0x0002)
        if not is_storage_class(context.abstract_syntax) or sop_class != context.abstract_syntax:
            # PS3.7 Annex C: Refused, SOP Class not supported (0122H): the context's abstract
            # syntax is not a Storage SOP class (e.g. Verification), or the request names
            # another class than the context it came on (PS3.8 §7.1.1.13).
            self.status = SOP_CLASS_NOT_SUPPORTED
            self.comment = f"no storage of {sop_class or '(none)'} on context {context_id}"
            return
        files = self.scp.files
        if files is None:
            return
        instance = command.get_uid(0x1000)
        if files.busy(instance):
            # Never two writers on one name: PS3.4 Table B.2-1, Refused, Out of Resources.
            self.status = INSTANCE_BUSY
            self.comment = "this SOP instance is being stored by another association"
            return
        try:
            self.partial = files.claim(instance, sop_class, context.transfer_syntax)
        except OSError as exc:
            self.status, self.comment = CANNOT_WRITE, f"cannot write: {exc.strerror}"

    def _store_complete(self) -> None:
        """The last data-set fragment arrived: rename the file into place, answer C-STORE-RSP."""
        command = self.pending
        assert command is not None
        partial, self.partial = self.partial, None
        if partial is not None and self.status == SUCCESS:
            assert self.scp.files is not None
            try:
                partial.commit()
            except OSError as exc:
                partial.discard()
                self.status, self.comment = CANNOT_WRITE, f"cannot write: {exc.strerror}"
            finally:
                self.scp.files.release(partial)
        if command.command_field == _C_STORE_RQ:
            self.stores += 1
            with self.scp.stats.lock:
                if self.status == SUCCESS:
                    self.scp.stats.stores += 1
                else:
                    self.scp.stats.store_failures += 1
            log.info(
                "%s: C-STORE %s, %d bytes: status %04X%s",
                self.peer,
                command.get_uid(0x1000) or "(no instance UID)",
                self.received,
                self.status,
                f" ({self.comment})" if self.comment else "",
            )
        if not self.answered:
            self._answer()
        self.pending = None

    def _answer_early(self) -> None:
        """Answer a refused store before its last fragment; the rest is discarded."""
        assert self.pending is not None
        log.info(
            "%s: C-STORE %s refused at %d bytes: status %04X (%s)",
            self.peer,
            self.pending.get_uid(0x1000) or "(no instance UID)",
            self.received,
            self.status,
            self.comment,
        )
        self._answer()

    def _answer(self) -> None:
        """Send the response to the pending request, once (PS3.7 §9.3.1.2)."""
        command = self.pending
        assert command is not None
        self.answered = True

        if command.command_field == _C_STORE_RQ:
            response = c_store_rsp(command, self.status, self.comment)
        else:
            response = _unrecognized(command)
        self._respond(self.pending_context, response)

    def _respond(self, context_id: int, command: CommandSet) -> None:
        """Send a response command set as one last command fragment (PS3.8 Annex E.2: 03H)."""
        pdv = PresentationDataValueItem(context_id, 0x03, encode_command(command))
        self.channel.send(PDataTfPDU([pdv]))

    def closed(self, outcome: str) -> None:
        """The association is over: remove a half-written file, count how it ended."""
        self._drop_partial()
        self.scp.count_ending(self, outcome)
        if self.established:
            if outcome:
                how = outcome
            elif self.abort is not None:
                how = "aborted" if self.abort.source == 0 else "provider-aborted"
            else:
                how = "released" if self.released else "ended"
            log.info("%s: association %s after %d stores", self.peer, how, self.stores)


def _unrecognized(command: CommandSet) -> CommandSet:
    """PS3.7 Annex C: Refused, Unrecognized operation (0211H) for a command we do not perform."""
    return CommandSet(
        {
            0x0002: command.get_uid(0x0002),
            0x0100: (command.command_field | 0x8000) & 0xFFFF,
            0x0120: command.message_id,
            0x0800: NO_DATA_SET,
            0x0900: UNRECOGNIZED_OPERATION,
        }
    )


def _peer_name(channel: Channel) -> str:
    """host:port of the requestor, for log lines."""
    try:
        host, port = channel.sock.getpeername()[:2] if channel.sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `netdicom2 scp` (its options and runner are in app_scp_cli)."""
    from netdicom2.app_scp_cli import add_scp

    add_scp(sub)
