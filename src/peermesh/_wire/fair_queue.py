"""A bounded queue shared fairly between peers: the policy behind the scheduling of
incoming requests (:mod:`peermesh._requests`).

Pure and sans-I/O: the caller says which items may be taken now and how busy each peer is,
and carries out what :meth:`FairQueue.push` returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Items waiting, one FIFO per peer, never more than ``limit`` in all.

    Admission (:meth:`push`) when full: the newcomer is refused if its peer already holds
    at least as many items as every other peer; otherwise the newest item of the peer
    holding the most is dropped to make room. So one peer fills the queue only while
    nobody else waits, and a peer holding fewer than ``limit / n`` items (``n`` peers
    holding items) is never refused.

    Service (:meth:`pop`): the peer with the fewest items in service goes first, ties to
    the peer served least recently (round-robin), not the oldest item of all.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Iteration order is the round-robin order: a peer served moves to the end.
        self._queues: dict[str, deque[T]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        for queue in self._queues.values():
            yield from queue

    def push(self, peer: str, item: T) -> T | None:
        """Queue ``item`` for ``peer``. Returns the item left out, if any: ``item`` itself
        (refused), or another peer's newest item (dropped to make room)."""
        dropped: T | None = None
        if self._size >= self.limit:
            biggest = max(self._queues, key=lambda p: len(self._queues[p]), default=None)
            if biggest is None or len(self._queues.get(peer, ())) >= len(self._queues[biggest]):
                return item
            dropped = self._queues[biggest].pop()
            self._discard(biggest)
        self._queues.setdefault(peer, deque()).append(item)
        self._size += 1
        return dropped

    def pop(self, ready: Callable[[T], bool], busy: Mapping[str, int]) -> T | None:
        """Take the oldest item of its peer for which ``ready(item)`` holds, from the peer
        with the fewest ``busy`` (items in service; missing means 0), ties to the peer
        served least recently; ``None`` if no item is ready."""
        best: tuple[int, str, T] | None = None
        for peer, queue in self._queues.items():
            load = busy.get(peer, 0)
            if best is not None and load >= best[0]:
                continue
            item = next((i for i in queue if ready(i)), None)
            if item is not None:
                best = (load, peer, item)
        if best is None:
            return None
        _, peer, item = best
        queue = self._queues.pop(peer)
        queue.remove(item)
        if queue:
            self._queues[peer] = queue  # to the end of the round
        self._size -= 1
        return item

    def remove(self, peer: str, item: T) -> bool:
        """Take ``item`` out of ``peer``'s queue; ``False`` if it is not there."""
        queue = self._queues.get(peer)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._discard(peer)
        return True

    def drop(self, peer: str) -> list[T]:
        """Take out and return all of ``peer``'s items."""
        queue = self._queues.pop(peer, deque())
        self._size -= len(queue)
        return list(queue)

    def clear(self) -> list[T]:
        """Take out and return every item."""
        items = list(self)
        self._queues.clear()
        self._size = 0
        return items

    def _discard(self, peer: str) -> None:
        """One item of ``peer`` was taken out."""
        self._size -= 1
        if not self._queues[peer]:
            del self._queues[peer]
