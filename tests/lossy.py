"""A lossy, reordering path for tests, inside the process: a wrapper around aioice's
datagram handler drops or delays received DTLS datagrams (the SCTP packets), chosen by a
seeded random generator. (The kernel here has no netem qdisc for ``tc``.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import aioice.ice


@dataclass
class LossStats:
    delivered: int = 0
    dropped: int = 0
    delayed: int = 0


@contextlib.contextmanager
def lossy_path(loss: float, reorder: float = 0.0, *, seed: int = 1) -> Iterator[LossStats]:
    """While active, each received DTLS datagram is dropped with probability ``loss``, or
    else held back 3 ms (so later ones overtake it) with probability ``reorder``."""
    rng = random.Random(seed)
    stats = LossStats()
    protocol = aioice.ice.StunProtocol
    inner = protocol.datagram_received

    def datagram_received(self: aioice.ice.StunProtocol, data: bytes, addr: tuple) -> None:
        if data and 19 < data[0] < 64:
            roll = rng.random()
            if roll < loss:
                stats.dropped += 1
                return
            if roll < loss + reorder:
                stats.delayed += 1
                asyncio.get_running_loop().call_later(0.003, inner, self, data, addr)
                return
            stats.delivered += 1
        inner(self, data, addr)

    protocol.datagram_received = datagram_received  # type: ignore[method-assign]
    try:
        yield stats
    finally:
        protocol.datagram_received = inner  # type: ignore[method-assign]
