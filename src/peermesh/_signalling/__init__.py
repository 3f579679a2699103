"""Signalling: how peers of a room find each other before they connect directly.

Every strategy implements the small :class:`Signaller` interface: ``start()`` begins
announcing the room and answering peers, ``close()`` stops it. What they share lives here:
the reconnecting WebSocket (:mod:`.websocket`) with its jittered backoff and health state.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Signaller"]


class Signaller(Protocol):
    """One room's presence on one signalling medium."""

    async def start(self) -> None:
        """Begin announcing; returns promptly even if no relay is reachable yet."""

    async def close(self) -> None:
        """Stop announcing and drop connections that never opened. Idempotent."""
