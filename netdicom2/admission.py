"""What a server keeps and what it sheds when peers crowd it, sans I/O (PS3.8 §9.1.4 Note 1).

PS3.8 leaves the acceptor's local resource limits to the implementation; `Admission` holds
those of one listener, for keys the caller chooses (the server's connections):

* connections waiting for their A-ASSOCIATE-RQ (Sta2, bounded in time by ARTIM), silent ones
  and ones already sending their request, each oldest first: over `max_pending`, a silent one
  is evicted before any that is sending: the oldest of the address with the most silent
  connections (so a crowd from one address goes before a lone client from another), and
  among equals the oldest;
* associations per peer address: at `max_per_address` the next request is refused (the
  caller answers A-ASSOCIATE-RJ 2/3/2, local limit exceeded, Table 9-21); 0 means no cap;
* bytes buffered by every connection (PDUs in progress, output waiting): over `max_buffered`
  the caller aborts the largest holders first.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Admission"]

K = TypeVar("K", bound=Hashable)


class Admission(Generic[K]):
    """A listener's bounds: pending order, associations per address, bytes buffered."""

    def __init__(self, *, max_pending: int, max_per_address: int, max_buffered: int) -> None:
        """Bounds as DULServer takes them; ValueError names one out of range."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        if max_per_address < 0:
            raise ValueError(f"max_per_address must be 0 or more, not {max_per_address}")
        if max_buffered < 1 << 20:
            raise ValueError(f"max_buffered must be at least 1 MiB, not {max_buffered}")
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.max_buffered = max_buffered
        self.pending: dict[K, str] = {}  # Sta2, nothing received yet, oldest first: its address
        self._silent: dict[str, dict[K, int]] = {}  # the same by address: arrival numbers
        self._arrivals = 0
        self.receiving: dict[K, None] = {}  # Sta2, its request arriving, by first byte
        self.per_address: dict[str, int] = {}  # associations admitted, by peer address
        self.held: dict[K, int] = {}  # bytes each key buffers (only those holding some)
        self.buffered = 0  # their sum

    # ------------------------------------------------------------------ waiting for the RQ

    def waiting(self, key: K, peer: str = "") -> None:
        """A connection from ``peer`` was accepted: it waits, silent, for its RQ."""
        self.pending[key] = peer
        self._arrivals += 1
        self._silent.setdefault(peer, {})[key] = self._arrivals

    def _unsilence(self, key: K) -> bool:
        """Forget ``key`` among the silent connections; whether it was one."""
        peer = self.pending.pop(key, None)
        if peer is None:
            return False
        of_peer = self._silent[peer]
        del of_peer[key]
        if not of_peer:
            del self._silent[peer]
        return True

    def sending(self, key: K) -> None:
        """Bytes came from a waiting connection: it is no longer silent."""
        if self._unsilence(key):
            self.receiving[key] = None

    def unpend(self, key: K) -> None:
        """A connection no longer waits (its RQ was indicated, or it ended)."""
        if not self._unsilence(key):
            self.receiving.pop(key, None)

    def to_evict(self) -> tuple[K, bool] | None:
        """Before accepting one more: the connection to drop and whether it was silent."""
        if len(self.pending) + len(self.receiving) < self.max_pending:
            return None
        if not self.pending:
            key = next(iter(self.receiving))
            del self.receiving[key]
            return key, False
        # The address with the most silent connections, the oldest first among equals; its
        # oldest silent connection (linear in the addresses, only when full).
        crowd = max(
            self._silent.values(), key=lambda of_peer: (len(of_peer), -next(iter(of_peer.values())))
        )
        key = next(iter(crowd))
        self._unsilence(key)
        return key, True

    # ------------------------------------------------------------------ per address

    def address_full(self, peer: str) -> bool:
        """Whether ``peer`` holds its cap of associations already."""
        limit = self.max_per_address
        return bool(limit) and self.per_address.get(peer, 0) >= limit

    def take_address(self, peer: str) -> None:
        """An association of ``peer`` was admitted."""
        self.per_address[peer] = self.per_address.get(peer, 0) + 1

    def give_address(self, peer: str) -> None:
        """An admitted association of ``peer`` ended."""
        left = self.per_address.get(peer, 0) - 1
        if left > 0:
            self.per_address[peer] = left
        else:
            self.per_address.pop(peer, None)

    # ------------------------------------------------------------------ bytes buffered

    def hold(self, key: K, nbytes: int) -> bool:
        """``key`` now buffers ``nbytes``; True when the sum is over max_buffered."""
        before = self.held.get(key, 0)
        if nbytes != before:
            self.buffered += nbytes - before
            if nbytes:
                self.held[key] = nbytes
            else:
                del self.held[key]
        return self.buffered > self.max_buffered

    def release(self, key: K) -> None:
        """``key`` ended: it buffers nothing any more, and waits for nothing."""
        self.buffered -= self.held.pop(key, 0)
        self.unpend(key)

    def largest(self) -> K | None:
        """The key buffering the most, None when none buffers anything (linear, rare)."""
        if not self.held:
            return None
        return max(self.held, key=self.held.__getitem__)
