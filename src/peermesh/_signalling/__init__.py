"""Signalling: how peers of a room find each other before they connect directly.

Every strategy implements the small :class:`Signaller` interface: ``start()`` begins
announcing the room and answering peers, ``close()`` stops it. What they share lives here:
the reconnecting WebSocket (:mod:`.websocket`) with its jittered backoff and health state,
and, for the topic strategies (Nostr, MQTT, ws-relay), the :class:`TopicRelay` interface
that each medium implements so that the leader rule, offers, answers and candidates are
written once (:mod:`.topic`).

Passive rooms (Trystero's ``passive``) are coordinated here too: :class:`PassiveRoom` keeps
one passive room's dormant/awake state for all of its signallers (a room may use several
strategies at once), waking every one of them when any hears a non-passive peer and putting
them back to sleep when the room has no peers and no signalling in progress.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._room import Room

__all__ = [
    "PASSIVE_GRACE",
    "PassiveRoom",
    "ReadyCallbacks",
    "RelayHealth",
    "RelayState",
    "Signaller",
    "TopicHandler",
    "TopicRelay",
    "call_logged",
    "passive_room",
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

    def wake(self) -> None:
        """A passive room woke up (``room.dormant`` is already ``False``): subscribe and
        announce as an active room would, restarting the warm-up burst."""

    def sleep(self) -> None:
        """A passive room went dormant (``room.dormant`` is already ``True``): stop
        announcing and offering; keep listening for a peer that can wake it."""

    def has_active_work(self) -> bool:
        """Whether a connection is being negotiated, which keeps a passive room awake."""


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


logger = logging.getLogger(__name__)

#: Trystero's ``passiveActivationGraceMs``: a passive room that woke up is checked after this
#: many seconds (and again every as long while it stays awake); with no peer and no
#: signalling in progress it goes dormant. Module-level so that tests can shorten it.
PASSIVE_GRACE = 7.533


class PassiveRoom:
    """The dormant/awake state of one passive room, shared by all of its signallers.

    Trystero 0.25.4 semantics (``strategy.mjs``): the room starts dormant; any signaller
    that hears a message able to wake it calls :meth:`wake`, which sends presence=1 on every
    shared connection, wakes every signaller (announce burst, offers) and schedules a check
    after :data:`PASSIVE_GRACE`. :meth:`check` runs then, and at once when a peer of the
    room leaves; with no peer and no negotiation in progress the room goes dormant again
    (presence=0, signallers asleep). While awake and busy the check repeats every
    :data:`PASSIVE_GRACE` seconds (one timer); while dormant nothing runs.
    """

    def __init__(self, room: Room) -> None:
        self.room = room
        self._timer: asyncio.TimerHandle | None = None
        room.on_peer_leave(self._peer_left)

    def _peer_left(self, peer_id: str) -> None:
        self.check()

    def wake(self) -> None:
        """Wake the room if it is dormant (no-op otherwise, or once it has been left)."""
        room = self.room
        if not room.is_passive or not room.dormant or room.closed:
            return
        logger.debug("%r: passive room wakes up", room)
        room._shared.set_dormant(room, False)
        for signaller in room._signallers:
            call_logged(repr(room), signaller.wake)
        self._schedule()

    def check(self) -> None:
        """Put the awake room back to sleep if it has no peer and no signaller is
        negotiating a connection; otherwise check again after :data:`PASSIVE_GRACE`."""
        self._cancel()
        room = self.room
        if not room.is_passive or room.dormant or room.closed:
            return
        if room._members or any(s.has_active_work() for s in room._signallers):
            self._schedule()
            return
        logger.debug("%r: passive room goes dormant", room)
        room._shared.set_dormant(room, True)
        for signaller in room._signallers:
            call_logged(repr(room), signaller.sleep)

    def _schedule(self) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(PASSIVE_GRACE, self.check)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Stop the pending check (the room is being left)."""
        self._cancel()


_passive_rooms: weakref.WeakKeyDictionary[Room, PassiveRoom] = weakref.WeakKeyDictionary()


def passive_room(room: Room) -> PassiveRoom:
    """The :class:`PassiveRoom` of ``room`` (created on first use, dropped with the room)."""
    state = _passive_rooms.get(room)
    if state is None:
        state = _passive_rooms[room] = PassiveRoom(room)
    return state
