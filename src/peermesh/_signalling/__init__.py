"""Signalling: how peers of a room find each other before they connect directly.

Every strategy implements the small :class:`Signaller` interface: ``start()`` begins
announcing the room and answering peers, ``close()`` stops it. What they share lives here:
the reconnecting WebSocket (:mod:`.websocket`) with its jittered backoff and health state,
and, for the topic strategies (Nostr, MQTT, ws-relay), the :class:`TopicRelay` interface
that each medium implements so that the leader rule, offers, answers and candidates are
written once (:mod:`.topic`).
"""

from __future__ import annotations

import enum
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ReadyCallbacks",
    "RelayHealth",
    "RelayState",
    "Signaller",
    "TopicHandler",
    "TopicRelay",
    "call_logged",
    "register_relay",
    "relay_health",
]


class Signaller(Protocol):
    """One room's presence on one signalling medium."""

    async def start(self) -> None:
        """Begin announcing; returns promptly even if no relay is reachable yet."""

    async def close(self) -> None:
        """Stop announcing and drop connections that never opened. Idempotent."""

    def peer_lost(self, peer_id: str) -> None:
        """The connection to an active peer of the room ended without it leaving."""


class RelayState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing off"
    RETIRED = "retired"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RelayHealth:
    """A snapshot of one relay connection, for ``peermesh relays`` and diagnostics."""

    url: str
    state: RelayState
    last_error: str | None
    messages_sent: int
    messages_received: int
    messages_dropped: int


#: ``handler(topic, text)``: one signalling message (the JSON text of wire notes §2.2).
TopicHandler = Callable[[str, str], None]


class TopicRelay(Protocol):
    """One connection to one relay, broker or ws-relay server that carries messages by topic.

    Implementations are shared per URL by every room of the process (acquired through their
    module's factory) and keep reconnecting with jittered backoff until released.
    Subscriptions survive reconnects: the relay re-subscribes by itself.
    """

    url: str

    def subscribe(self, topic: str, handler: TopicHandler) -> None:
        """Deliver every message published on ``topic`` to ``handler(topic, text)``.

        Messages this connection published itself may be delivered too; callers ignore
        their own by ``peerId``. Subscribing the same (topic, handler) twice is a no-op.
        """

    def unsubscribe(self, topic: str, handler: TopicHandler) -> None:
        """Stop delivering ``topic`` to ``handler``; the relay drops the subscription when
        no handler is left."""

    async def publish(self, topic: str, text: str) -> bool:
        """Publish ``text`` on ``topic`` if the relay is usable now; return whether it went
        out. Never raises for relay failures (they show in :meth:`health`)."""

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` every time the subscriptions are (re-)established — now, if
        they already are. Returns a function that unregisters it."""

    def health(self) -> RelayHealth: ...

    async def release(self) -> None:
        """Give back one use of the shared connection (each factory call is one use); the
        last release closes it."""


class _HasHealth(Protocol):
    def health(self) -> RelayHealth: ...


_live_relays: weakref.WeakSet[_HasHealth] = weakref.WeakSet()


def register_relay(relay: _HasHealth) -> None:
    """Make a relay connection visible to :func:`relay_health` while it is alive."""
    _live_relays.add(relay)


def relay_health() -> list[RelayHealth]:
    """The health of every relay connection this process holds, sorted by URL."""
    return sorted((relay.health() for relay in list(_live_relays)), key=lambda h: h.url)


def call_logged(url: str, callback: Callable[..., None], *args: str | None) -> None:
    """Call a user or room callback for relay ``url``; an exception is logged, never
    propagated into the relay's connection handling."""
    try:
        callback(*args)
    except Exception:
        logging.getLogger(__name__).exception("%s: callback %r raised", url, callback)


class ReadyCallbacks:
    """The ``on_ready`` registrations of one relay connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None], *, ready_now: bool) -> Callable[[], None]:
        """Register ``callback`` (calling it at once if ``ready_now``); return a function
        that unregisters it."""
        self._callbacks.append(callback)
        if ready_now:
            call_logged(self.url, callback)

        def unregister() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unregister

    def fire(self) -> None:
        """The subscriptions are (re-)established: call every registered callback."""
        for callback in list(self._callbacks):
            call_logged(self.url, callback)

    def clear(self) -> None:
        self._callbacks.clear()
