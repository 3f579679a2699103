"""Room events as values, and the bounded queue behind every ``async for`` in peermesh.

The callback API (``on_peer_join``, ``Action.on_message``…) and the iterator API
(``room.events()``, ``async for … in action``) see the same events; iterators get them
through a :class:`EventQueue` each, so a consumer that stops reading costs at most its
queue's limit in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "ActionMessage",
    "EventQueue",
    "PeerJoined",
    "PeerLeft",
    "PeerStream",
    "PeerTrack",
    "RoomEvent",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Events an iterator may hold before it drops new ones (and logs that it did).
DEFAULT_QUEUE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """``peer_id`` passed the admission handshake and is now an active peer."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """``peer_id`` left the room, or its connection ended."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class PeerStream:
    """``peer_id`` sent a media stream announced with ``metadata`` (``room.on_peer_stream``).
    ``stream`` is a :class:`peermesh.media.MediaStream` of aiortc remote tracks."""

    stream: Any
    peer_id: str
    metadata: object


@dataclass(frozen=True, slots=True)
class PeerTrack:
    """``peer_id`` sent a track announced on its own with ``metadata``
    (``room.on_peer_track``), as part of ``stream``."""

    track: Any
    stream: Any
    peer_id: str
    metadata: object


#: What ``room.events()`` yields.
RoomEvent = PeerJoined | PeerLeft | PeerStream | PeerTrack


@dataclass(frozen=True, slots=True)
class ActionMessage:
    """One message of an action, as yielded by ``async for … in action``. Unpacks as
    ``data, peer_id, metadata``."""

    data: object
    peer_id: str
    metadata: object

    def __iter__(self) -> Iterator[object]:
        return iter((self.data, self.peer_id, self.metadata))


class EventQueue(Generic[T]):
    """A bounded, closable FIFO with one consumer.

    :meth:`put` never blocks: when ``limit`` items are waiting, the new item is dropped,
    counted in :attr:`dropped` and logged, because the producer (a data channel) cannot be
    paused per consumer. :meth:`close` ends iteration once the queued items are consumed.
    """

    def __init__(self, limit: int = DEFAULT_QUEUE_LIMIT, *, what: str = "events") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.dropped = 0
        self.closed = False
        self._what = what
        self._items: deque[T] = deque()
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item``; False if it was dropped (queue closed or full)."""
        if self.closed:
            return False
        if len(self._items) >= self.limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "a reader of %s is not keeping up: %d dropped (limit %d queued)",
                    self._what,
                    self.dropped,
                    self.limit,
                )
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def close(self) -> None:
        """End the stream: :meth:`get` drains what is queued, then raises
        ``StopAsyncIteration``."""
        self.closed = True
        self._wakeup.set()

    async def get(self) -> T:
        """The next item; raises ``StopAsyncIteration`` once closed and drained."""
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> EventQueue[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()
