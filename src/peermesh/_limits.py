"""How much remote peers may make this process hold: :class:`Limits` and :class:`MemoryBudget`.

Pure (no I/O, no asyncio; :class:`RateLimit` is given the time). The rooms are the
drivers: they charge what they hold for a peer (partial messages, messages held for an
action nobody listens to yet, requests, decoded values while they are being decoded) and
release it when they let go.

The budget is shared fairly. A charge is refused when it would take the peer past its own
cap (:attr:`Limits.peer_memory`): the caller drops what it was about to hold. When it would
take the *process* past :attr:`Limits.memory_budget`, the peer holding the most, which then
holds more than its fair share (the budget divided among the peers holding anything), is
disconnected by every room with a logged reason. So a flooding peer is cut off and honest
peers keep working.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from .errors import UsageError

__all__ = ["DEFAULT_LIMITS", "Limits", "MemoryBudget", "RateLimit", "budget_for", "log_once"]

_MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Every cap on what peers can make a room hold or do, in one value.

    Pass it to any ``join_room`` as ``limits=Limits(...)``; fields not given keep their
    defaults. Rooms joined with the same :attr:`memory_budget` and :attr:`peer_memory` in one
    process share one budget. Raises :class:`UsageError` for a field that is not a positive
    ``int``, or a ``peer_memory`` above ``memory_budget``.
    """

    memory_budget: int = 256 * _MiB
    """Bytes all peers together may make this process hold (reassembly, held messages,
    decoding). A peer holding more than its fair share when it runs out is disconnected."""
    peer_memory: int = 128 * _MiB
    """Bytes one peer may make this process hold, across every room; beyond it, what that
    peer sends is dropped (and counted) instead of held."""
    max_message_size: int = 64 * _MiB
    """Payload bytes of one action message."""
    max_partial_messages: int = 64
    """Messages one peer may have in progress at once in a room."""
    max_metadata_size: int = 64 * 1024
    """Bytes of one message's metadata JSON (Trystero sends it in one chunk)."""
    max_unclaimed_messages: int = 256
    """Messages a room keeps for actions nobody listens to yet (they also count toward the
    sender's :attr:`peer_memory`); the oldest is dropped first."""
    max_media_metadata: int = 256 * 1024
    """Decoded-size estimate of one ``@_stream``/``@_track`` announcement or handshake
    message (``@_hsdata``); larger ones are dropped."""
    max_running_requests: int = 64
    """Request handlers running at once in a room; more requests wait."""
    max_running_requests_per_peer: int = 16
    """Request handlers running at once in a room for one peer; more of its requests wait."""
    max_waiting_requests: int = 256
    """Requests waiting in a room for a handler or a free slot; beyond it the peer with the
    most waiting is refused one (see :mod:`peermesh._requests`)."""
    max_control_rate: int = 50
    """Control messages per second one peer may make a room act on — pings,
    renegotiation signals, stream and track announcements — with bursts of twice that;
    the excess is dropped, counted and logged once per peer."""
    max_malformed_inputs: int = 100
    """Malformed inputs (chunks, messages, media signals, requests) a peer may send before
    it is disconnected; each is dropped and counted, the first of each kind logged."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UsageError(f"Limits.{field.name} must be a positive int, got {value!r}")
        if self.peer_memory > self.memory_budget:
            raise UsageError("Limits.peer_memory must not exceed Limits.memory_budget")


DEFAULT_LIMITS: Final = Limits()

#: ``evict(peer_id, reason)``: disconnect ``peer_id`` from this holder. It must release what
#: it holds for the peer before returning (it is called from inside :meth:`MemoryBudget.charge`,
#: possibly while that very peer's input is being handled); the disconnection itself may be
#: deferred.
Evict = Callable[[str, str], None]


class MemoryBudget:
    """Bytes held on behalf of remote peers, per peer id and in total.

    Each holder (a room) charges and releases its own bytes: a peer's figure is the sum over
    its holders, and a holder must release exactly what it charged. Holders that can
    disconnect peers register an :data:`Evict` callback with :meth:`add_holder`.
    """

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self._held: dict[str, int] = {}
        self._used = 0
        self._holders: list[Callable[[], Evict | None]] = []
        #: Charges refused, and peers evicted, since creation (diagnostics and tests).
        self.refused = 0
        self.evicted = 0

    def held(self, peer_id: str | None = None) -> int:
        """Bytes held for ``peer_id``, or for every peer (``None``)."""
        return self._used if peer_id is None else self._held.get(peer_id, 0)

    def fits(self, peer_id: str, nbytes: int) -> bool:
        """Whether ``nbytes`` more for ``peer_id`` fit both caps right now (no charge)."""
        return (
            self._held.get(peer_id, 0) + nbytes <= self.per_peer
            and self._used + nbytes <= self.total
        )

    def charge(self, peer_id: str, nbytes: int) -> bool:
        """Hold ``nbytes`` more for ``peer_id``; ``False`` (nothing charged) if that breaks a
        cap. When only the process total is in the way, the peer holding the most (counting
        ``peer_id`` with the ``nbytes`` it asks for) is evicted through every holder: if that
        is another peer, the charge then fits; if it is ``peer_id``, it is refused."""
        if nbytes <= 0:
            return True
        held = self._held.get(peer_id, 0)
        if held + nbytes > self.per_peer:
            self.refused += 1
            return False
        if self._used + nbytes > self.total:
            # Holdings sum past the total, so the largest holds more than its fair share (the
            # total divided among the peers holding anything).
            largest = self._largest(peer_id, held + nbytes)
            self.evict(largest, "it holds more than its fair share of the memory budget")
            if largest == peer_id or self._used + nbytes > self.total:
                self.refused += 1
                return False
            held = self._held.get(peer_id, 0)
        self._held[peer_id] = held + nbytes
        self._used += nbytes
        return True

    def release(self, peer_id: str, nbytes: int) -> None:
        """Give back ``nbytes`` charged for ``peer_id``. Never raises."""
        if nbytes <= 0:
            return
        held = self._held.get(peer_id, 0)
        nbytes = min(nbytes, held)
        self._used -= nbytes
        if held - nbytes:
            self._held[peer_id] = held - nbytes
        else:
            self._held.pop(peer_id, None)

    def _largest(self, peer_id: str, size: int) -> str:
        largest = peer_id
        for other, held in self._held.items():
            if held > size:
                largest, size = other, held
        return largest

    def add_holder(self, evict: Evict) -> None:
        """Call ``evict`` to disconnect a peer. A bound method is held weakly: a holder that
        is dropped without :meth:`remove_holder` is forgotten, not kept alive."""
        weak = inspect.ismethod(evict)
        self._holders.append(weakref.WeakMethod(evict) if weak else _Strong(evict))

    def remove_holder(self, evict: Evict) -> None:
        self._holders = [ref for ref in self._holders if ref() not in (None, evict)]

    def evict(self, peer_id: str, reason: str) -> None:
        """Have every holder disconnect ``peer_id`` (each releases what it held for it)."""
        self.evicted += 1
        for ref in list(self._holders):
            evict = ref()
            if evict is not None:
                evict(peer_id, reason)


class _Strong:
    """A strong reference with :class:`weakref.WeakMethod`'s call-to-dereference shape."""

    __slots__ = ("target",)

    def __init__(self, target: Evict) -> None:
        self.target = target

    def __call__(self) -> Evict:
        return self.target


class RateLimit:
    """A token bucket: :meth:`allow` ``rate`` times per second on average, ``burst`` times
    in a row. Pure: the caller passes the time (any monotonic clock, in seconds)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float) -> bool:
        """Whether one more event is allowed at ``now`` (and count it if so)."""
        elapsed = max(0.0, now - self._last)  # a clock that goes back refills nothing
        tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = max(now, self._last)
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True


_budgets: dict[tuple[int, int], MemoryBudget] = {}


def budget_for(limits: Limits) -> MemoryBudget:
    """The process's budget for rooms joined with ``limits`` (one per distinct pair of
    :attr:`Limits.memory_budget` and :attr:`Limits.peer_memory`)."""
    key = (limits.memory_budget, limits.peer_memory)
    budget = _budgets.get(key)
    if budget is None:
        budget = _budgets[key] = MemoryBudget(*key)
    return budget


def log_once(log: logging.Logger, logged: set[str], kind: str, message: str, *args: object) -> None:
    """Log a dropped input: the first of its ``kind`` (tracked in ``logged``, one set per peer
    or per relay connection) as a warning, the others at debug, so that whoever sends the
    input cannot flood the log."""
    level = logging.DEBUG if kind in logged else logging.WARNING
    logged.add(kind)
    log.log(level, message, *args)
