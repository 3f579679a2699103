"""Signalling over WebTorrent WebSocket trackers (wire notes §3.2).

A :class:`TrackerConnection` is one WebSocket to one tracker for one local peer id, shared by
every room of that identity on that tracker (trackers key a socket by its peer id, so two
local identities cannot share one). A :class:`TorrentSignaller` is one room's presence on
its trackers:

* every announce carries 3 fresh offers (non-trickle SDP, sealed with the room key), each
  answerable for :data:`OFFER_GRACE` seconds (at most :data:`MAX_OFFERS` outstanding).
  Trystero instead re-sends the same pooled offers in every announce until one is
  answered, so one offer reaches several peers, all of them answer, only the first answer
  is used and the others wait 23 s for a connection that never comes — in a swarm of 20
  that blocked a sixth of the pairs. A fresh offer goes to one peer only;
* it announces at once, after 0.233 s, 0.533 s and 1.333 s, then every tracker interval
  (clamped to 10–120 s), and again at once after a tracker reconnects. While the tracker
  reports more peers in the swarm than the room has, the gaps after the burst are
  :data:`CATCH_UP_DELAYS` (2, 2, 4, 4, 8 s, each at most the interval) before the
  interval applies; they start over once the room has caught up. Trystero waits a whole
  interval, which in a big swarm leaves the last pairs unconnected for 10 s or more;
* relayed offers are answered over the tracker they came from — unless we already hold a
  live connection to that peer (the room is then bound onto it), are already answering it,
  or have offers out and the smaller id (the collision rule: the larger id answers). A
  connection the peer has given up does not count (``SharedLinks.bound_to_live_link``):
  the peer answered one of our offers (it answers only while it holds no connection to
  us), or the link has been silent while the peer still announces, or it has been idle and
  the peer does not answer a ping there (``SharedLinks.still_used``: a Trystero peer with
  the smaller id that gave its link up answers none of our offers). The old link is closed
  first, then the new connection replaces it;
* an offer ignored under the collision rule makes us announce again at once (at most every
  :data:`NUDGE_INTERVAL` seconds per tracker), so that the tracker hands our offers to the
  peer we ignored, which answers them as the larger id. Trystero waits for its next
  announce instead: a newcomer with the larger id waits up to a whole tracker interval
  (10–120 s). The extra announce is an ordinary one, so this stays wire-compatible;
* an answer is applied only to one of our outstanding offers, which it then consumes; so
  an answer of ours can go unused (the offer reached several peers), and a connection we
  answered that has not opened after :data:`ANSWER_STALE` seconds gives way to a newer
  offer from the same peer;

A *passive* room starts dormant (Trystero's torrent ``topicState.isActive = false``): it
makes no offers and announces as a seeder, ``left:0`` with no offers, at once and then every
max(tracker interval, :data:`DORMANT_ANNOUNCE_INTERVAL`). A relayed offer (trackers relay
offers only from rooms that announce them, and carry no ``passive`` flag) wakes it
(:class:`~peermesh._signalling.PassiveRoom`): it answers, and announces with offers and the
warm-up burst like an active room. When it goes dormant again its outstanding offers are
dropped and the ``left:0`` announces resume.

Undecryptable offers or answers are reported as join errors (a password mismatch, as in
Trystero); they, and decrypted offers or answers that carry no usable SDP, are logged at DEBUG
and counted (``undecryptable_signals``, ``unusable_signals``). Malformed tracker messages are
dropped, logged at DEBUG and counted (``TrackerConnection.malformed_messages``); a tracker
``failure reason`` is logged and the rest of that message ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._limits import log_once
from .._link import PeerLink
from .._wire.sealing import seal, unseal
from .._wire.topics import gen_id, info_hash, is_peer_id
from .._wire.tracker import (
    RelayedAnswer,
    RelayedOffer,
    TrackerMessage,
    TrackerOffer,
    clamp_interval_ms,
    encode_announce,
    encode_answer,
    encode_passive_announce,
    parse_tracker_message,
)
from ..errors import ProtocolError, RelayProtocolError, SealError
from . import RelayHealth, RelayState, passive_room, register_relay
from .websocket import ReconnectingWebSocket, SocketState

if TYPE_CHECKING:
    from .._room import Room

__all__ = ["DEFAULT_TRACKER_URLS", "TorrentSignaller", "TrackerConnection"]

logger = logging.getLogger(__name__)

#: Trystero 0.25.4's tracker list; the first three are used by default.
DEFAULT_TRACKER_URLS: tuple[str, ...] = (
    "wss://open.ftorrent.com",
    "wss://tracker.webtorrent.dev",
    "wss://tracker.openwebtorrent.com",
    "wss://tracker.btorrent.xyz",
    "wss://tracker.files.fm:7073/announce",
)
DEFAULT_REDUNDANCY = 3

OFFERS_PER_ANNOUNCE = 3
#: How long the offers of one announce can be answered: a round trip through the tracker,
#: plus the answerer's ICE gathering, which in a swarm joining at once waits for a busy CPU.
#: An answer that comes later is wasted, and the tracker (ours, which routes offers away
#: from peers it saw answer each other) then keeps the pair apart for a while. With 5 s
#: and 12 offers, 2 of 3 meshes of 50 peers were still 2-4 links short after 90 s.
OFFER_GRACE = 10.0
#: Outstanding offers at most; beyond, the oldest is withdrawn. Warm-up, catch-up and
#: collision-rule announces make 3 each, so this covers the announces of about 8 s.
MAX_OFFERS = 8 * OFFERS_PER_ANNOUNCE
WARMUP_DELAYS = (0.0, 0.233, 0.533, 1.333)
#: Gaps between announces after the burst while the swarm has peers the room lacks.
CATCH_UP_DELAYS = (2.0, 2.0, 4.0, 4.0, 8.0)
#: A dormant passive room announces ``left:0`` every max(tracker interval, this) seconds
#: (Trystero's ``dormantAnnounceMs``). Module-level so that tests can shorten it.
DORMANT_ANNOUNCE_INTERVAL = 120.0
#: Links made from our offers that got an answer and are still connecting, remembered (to
#: keep a passive room awake) up to this many.
MAX_CONNECTING = 64
DEDUPE_WINDOW = 4.0
MAX_DEDUPE_ENTRIES = 4096
#: Offers from other peers we answer at once; more are dropped until some finish.
MAX_CONCURRENT_ANSWERS = 16
#: Answered connections that have not opened yet; more offers are dropped meanwhile.
MAX_PENDING_ANSWERS = 32
#: An answered connection not open after this long gives way to a newer offer from its peer.
ANSWER_STALE = 3.0
#: Least time between two announces made because we ignored an offer (collision rule).
NUDGE_INTERVAL = 0.5


class TrackerConnection:
    """One tracker socket for one local peer id, routing messages to rooms by info_hash."""

    def __init__(self, url: str, self_id: str, on_empty: Callable[[TrackerConnection], None]):
        self.url = url
        self.self_id = self_id
        self.malformed_messages = 0
        self._logged: set[str] = set()  # kinds of dropped input already logged
        self.rooms: dict[str, TorrentSignaller] = {}
        self._on_empty = on_empty
        self.socket = ReconnectingWebSocket(url, on_open=self._opened, on_message=self._received)
        register_relay(self)

    def health(self) -> RelayHealth:
        socket = self.socket
        return RelayHealth(
            url=self.url,
            state=_SOCKET_STATES[socket.state],
            last_error=socket.last_error,
            messages_sent=socket.messages_sent,
            messages_received=socket.messages_received,
            messages_dropped=self.malformed_messages,
        )

    def subscribe(self, signaller: TorrentSignaller) -> None:
        self.rooms[signaller.info_hash] = signaller
        if self.socket.is_open:
            signaller.tracker_opened(self)

    async def unsubscribe(self, signaller: TorrentSignaller) -> None:
        if self.rooms.get(signaller.info_hash) is signaller:
            del self.rooms[signaller.info_hash]
        if not self.rooms:
            self._on_empty(self)
            await self.socket.close()

    async def send(self, text: str) -> bool:
        return await self.socket.send(text)

    def _opened(self) -> None:
        for signaller in list(self.rooms.values()):
            signaller.tracker_opened(self)

    def _received(self, text: str) -> None:
        try:
            message = parse_tracker_message(text)
        except RelayProtocolError as exc:
            self.malformed_messages += 1
            log_once(
                logger,
                self._logged,
                "message",
                "%s: dropped a malformed tracker message: %s",
                self.url,
                exc,
            )
            return
        if message.failure is not None:
            # As Trystero: a failure is logged and the rest of the message is ignored.
            logger.warning("%s: tracker failure: %s", self.url, message.failure)
            return
        if message.warning is not None:
            logger.info("%s: tracker warning: %s", self.url, message.warning)
        signaller = self.rooms.get(message.info_hash or "")
        if signaller is None:
            if message.offer is not None or message.answer is not None:
                logger.debug("%s: signal for an info_hash we are not in", self.url)
            return
        signaller.handle(self, message)


_SOCKET_STATES = {
    SocketState.CONNECTING: RelayState.CONNECTING,
    SocketState.OPEN: RelayState.OPEN,
    SocketState.BACKING_OFF: RelayState.BACKING_OFF,
    SocketState.CLOSED: RelayState.CLOSED,
}

_connections: dict[tuple[str, str], TrackerConnection] = {}


def tracker_connection(url: str, self_id: str) -> TrackerConnection:
    """The shared connection to ``url`` for ``self_id`` (created on first use)."""
    key = (url, self_id)
    conn = _connections.get(key)
    if conn is None:
        conn = _connections[key] = TrackerConnection(url, self_id, _forget_connection)
    return conn


def _forget_connection(conn: TrackerConnection) -> None:
    key = (conn.url, conn.self_id)
    if _connections.get(key) is conn:
        del _connections[key]


@dataclass(eq=False)
class _Offer:
    offer_id: str
    link: PeerLink
    sealed_sdp: str
    created: float


class TorrentSignaller:
    """One room's signalling on a set of WebTorrent trackers. See the module docstring."""

    def __init__(self, room: Room, urls: list[str]) -> None:
        self.room = room
        self.urls = urls
        self.info_hash = info_hash(room.app_id, room.room_id)
        self._connections: list[TrackerConnection] = []
        self._loops: dict[TrackerConnection, asyncio.Task[None]] = {}
        self._intervals: dict[str, float] = {}
        self._swarm_sizes: dict[str, int] = {}
        self._offers: dict[str, _Offer] = {}
        self._offer_lock = asyncio.Lock()
        self._answering: dict[str, PeerLink] = {}
        self._connecting: set[PeerLink] = set()
        self._seen: dict[tuple[str, str, str], float] = {}
        self._last_nudge: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Relayed offers/answers whose SDP could not be decrypted with the room key.
        self.undecryptable_signals = 0
        #: Relayed offers/answers that decrypted but carried no usable SDP.
        self.unusable_signals = 0
        #: Answers to offers already withdrawn or expired (dropped).
        self.stale_answers = 0

    async def start(self) -> None:
        if self.room.is_passive:
            passive_room(self.room)  # follows the room's peers from now on
        for url in self.urls:
            conn = tracker_connection(url, self.room.self_id)
            self._connections.append(conn)
            conn.subscribe(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.room.is_passive:
            passive_room(self.room).close()
        for task in [*self._loops.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops.values(), *self._tasks, return_exceptions=True)
        for conn in self._connections:
            await conn.unsubscribe(self)
        for offer in self._offers.values():
            offer.link.close("room left")
        self._offers.clear()
        for link in self._answering.values():
            if not link.is_open:
                link.close("room left")
        self._answering.clear()
        self._connecting.clear()

    def peer_lost(self, peer_id: str) -> None:
        """Nothing to do: a torrent room keeps announcing at its interval, as Trystero."""

    # -- announcing -------------------------------------------------------------------------

    def tracker_opened(self, conn: TrackerConnection) -> None:
        if self._closed:
            return
        previous = self._loops.pop(conn, None)
        if previous is not None:
            previous.cancel()
        loop = self._dormant_loop(conn) if self.room.dormant else self._announce_loop(conn)
        self._loops[conn] = asyncio.ensure_future(loop)

    async def _dormant_loop(self, conn: TrackerConnection) -> None:
        announce = encode_passive_announce(self.info_hash, self.room.self_id)
        while True:
            await conn.send(announce)
            interval = self._intervals.get(conn.url, DORMANT_ANNOUNCE_INTERVAL)
            await asyncio.sleep(max(interval, DORMANT_ANNOUNCE_INTERVAL))

    # -- passive rooms ------------------------------------------------------------------------

    def wake(self) -> None:
        """Announce with offers, starting with the warm-up burst, on every open tracker."""
        if self._closed:
            return
        for conn in self._connections:
            if conn.socket.is_open:
                self.tracker_opened(conn)

    def sleep(self) -> None:
        """Drop outstanding offers and go back to ``left:0`` announces."""
        if self._closed:
            return
        for conn in self._connections:
            loop = self._loops.pop(conn, None)
            if loop is not None:
                loop.cancel()
            if conn.socket.is_open:
                self.tracker_opened(conn)
        for offer in self._offers.values():
            offer.link.close("passive room went dormant")
        self._offers.clear()

    def has_active_work(self) -> bool:
        self._connecting = {k for k in self._connecting if not k.is_open and not k.is_closed}
        if self._connecting:
            return True
        return any(not k.is_open and not k.is_closed for k in self._answering.values())

    async def _announce_loop(self, conn: TrackerConnection) -> None:
        for delay in WARMUP_DELAYS:
            await asyncio.sleep(delay)
            await self._announce(conn)
        catch_up = iter(CATCH_UP_DELAYS)
        while True:
            interval = self._intervals.get(conn.url, 10.0)
            if self._lacks_peers(conn):
                delay = min(next(catch_up, interval), interval)
            else:
                catch_up = iter(CATCH_UP_DELAYS)
                delay = interval
            await asyncio.sleep(delay)
            await self._announce(conn)

    def _lacks_peers(self, conn: TrackerConnection) -> bool:
        """Whether ``conn``'s tracker last reported more other peers than we have."""
        size = self._swarm_sizes.get(conn.url)
        return size is not None and size - 1 > len(self.room.get_peers())

    async def _announce(self, conn: TrackerConnection) -> None:
        try:
            offers = await self._current_offers()
        except Exception:
            logger.exception("%r: could not create offers", self.room)
            return
        await conn.send(
            encode_announce(
                self.info_hash,
                self.room.self_id,
                [TrackerOffer(o.offer_id, o.sealed_sdp) for o in offers],
                numwant=OFFERS_PER_ANNOUNCE,
            )
        )

    async def _current_offers(self) -> list[_Offer]:
        """Fresh offers for one announce (none while dormant or closed)."""
        async with self._offer_lock:
            fresh: list[_Offer] = []
            while len(fresh) < OFFERS_PER_ANNOUNCE and not self._closed and not self.room.dormant:
                link = self._new_link(initiator=True)
                try:
                    sdp = await link.create_offer()
                except BaseException:
                    link.close("offer not made")
                    raise
                offer = _Offer(gen_id(20), link, seal(self.room.seal_key, sdp), time.monotonic())
                self._offers[offer.offer_id] = offer
                fresh.append(offer)
            while len(self._offers) > MAX_OFFERS:
                oldest = next(iter(self._offers))
                self._offers.pop(oldest).link.close("offer withdrawn")
            if fresh:
                loop = asyncio.get_running_loop()
                loop.call_later(OFFER_GRACE + 0.01, self._expire_offers)
            return fresh

    def _expire_offers(self) -> None:
        """Withdraw offers older than :data:`OFFER_GRACE` that nobody answered."""
        now = time.monotonic()
        for offer_id, offer in list(self._offers.items()):
            if now - offer.created >= OFFER_GRACE or offer.link.is_closed:
                del self._offers[offer_id]
                offer.link.close("offer expired")

    def _new_link(self, *, initiator: bool, remote_id: str | None = None) -> PeerLink:
        room = self.room
        return room._shared.new_link(
            room,
            initiator=initiator,
            configuration=room.configuration,
            ice_addresses=room.ice_addresses,
            remote_id=remote_id,
        )

    # -- incoming signals ---------------------------------------------------------------------

    def handle(self, conn: TrackerConnection, message: TrackerMessage) -> None:
        if self._closed:
            return
        if message.interval is not None:
            self._intervals[conn.url] = clamp_interval_ms(message.interval) / 1000
        if message.complete is not None and message.incomplete is not None:
            self._swarm_sizes[conn.url] = message.complete + message.incomplete
        signal = message.offer or message.answer
        if signal is None:
            return
        if signal.peer_id == self.room.self_id or not is_peer_id(signal.peer_id):
            return
        if self._seen_recently(type(signal).__name__, signal.offer_id, signal.peer_id):
            return
        if isinstance(signal, RelayedOffer):
            if self.room.dormant:
                passive_room(self.room).wake()
                if self.room.dormant:
                    return
            if len(self._tasks) >= MAX_CONCURRENT_ANSWERS:
                logger.debug("%r: too many offers in flight; dropped one", self.room)
                return
            # As Trystero's hasOutgoingOffer hint: whether we had offers out when it came.
            self._spawn(self._answer(conn, signal, has_offers=bool(self._offers)))
        elif not self.room.dormant:
            self._spawn(self._accept(signal))

    def _seen_recently(self, kind: str, offer_id: str, peer_id: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > MAX_DEDUPE_ENTRIES:
            self._seen = {k: t for k, t in self._seen.items() if now - t < DEDUPE_WINDOW}
        key = (kind, offer_id, peer_id)
        seen = self._seen.get(key)
        self._seen[key] = now
        return seen is not None and now - seen < DEDUPE_WINDOW

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bound_elsewhere(self, peer_id: str, *, gives_up: bool) -> bool:
        """If a live connection to ``peer_id`` that the peer still uses exists, bind the
        room to it and say so (see ``SharedLinks.bound_to_live_link``)."""
        return self.room._shared.bound_to_live_link(self.room, peer_id, gives_up=gives_up)

    async def _answer(
        self, conn: TrackerConnection, offer: RelayedOffer, *, has_offers: bool
    ) -> None:
        room = self.room
        peer_id = offer.peer_id
        # Trackers hand every peer's offers to peers it is connected to as well: an offer
        # alone does not mean the peer gave its connection up. A Trystero peer with the
        # smaller id that gave it up answers none of our offers (the collision rule), so
        # an idle link it still offers over is checked with a ping.
        if self._bound_elsewhere(peer_id, gives_up=False):
            live = room._shared.live_link(peer_id)
            if live is None or await room._shared.still_used(live):
                return
        answering = self._answering.get(peer_id)
        if answering is not None and not answering.is_closed and not answering.is_open:
            if time.monotonic() - answering.created_at < ANSWER_STALE:
                return
            # Our answer went unused: the offer was answered by someone else first (every
            # announce re-sends the same offers to new peers), or the answer was lost.
            # Answer this newer offer instead of waiting for the connect timeout.
            logger.debug("%r: replacing an unused answer to %s", room, peer_id)
            answering.close("answer not taken")
        self._answering = {p: k for p, k in self._answering.items() if not k.is_closed}
        if sum(not k.is_open for k in self._answering.values()) >= MAX_PENDING_ANSWERS:
            logger.debug("%r: too many unanswered connections; dropped an offer", room)
            return
        if has_offers and room.self_id < peer_id:
            logger.debug("%r: ignoring offer from %s (collision rule)", room, peer_id)
            self._nudge(conn)
            return
        try:
            sdp = unseal(room.seal_key, offer.sdp)
        except SealError as exc:
            self.undecryptable_signals += 1
            logger.debug("%r: undecryptable offer from %s: %s", room, peer_id, exc)
            room._join_error("incorrect room password when decrypting offer", peer_id)
            return
        await room._shared.given_up_closed(peer_id)
        link = self._new_link(initiator=False, remote_id=peer_id)
        self._answering[peer_id] = link
        try:
            answer = await link.accept_offer(sdp)
        except ProtocolError as exc:
            self.unusable_signals += 1
            logger.debug("%r: unusable offer from %s: %s", room, peer_id, exc)
            link.close("unusable offer")
            return
        await conn.send(
            encode_answer(
                self.info_hash,
                room.self_id,
                to_peer_id=peer_id,
                offer_id=offer.offer_id,
                sdp=seal(room.seal_key, answer),
            )
        )

    def _nudge(self, conn: TrackerConnection) -> None:
        """Announce on ``conn`` now, unless we did so for this reason very recently."""
        now = time.monotonic()
        if now - self._last_nudge.get(conn.url, -NUDGE_INTERVAL) < NUDGE_INTERVAL:
            return
        self._last_nudge[conn.url] = now
        self._spawn(self._announce(conn))

    async def _accept(self, answer: RelayedAnswer) -> None:
        offer = self._offers.pop(answer.offer_id, None)
        if offer is None:
            # Withdrawn or expired (see OFFER_GRACE): the pair stays apart until chance
            # brings another offer across, so that must stay rare.
            self.stale_answers += 1
            logger.debug("%r: answer from %s to an offer no longer held", self.room, answer.peer_id)
            return
        room = self.room
        peer_id = answer.peer_id
        try:
            sdp = unseal(room.seal_key, answer.sdp)
        except SealError as exc:
            self.undecryptable_signals += 1
            logger.debug("%r: undecryptable answer from %s: %s", room, peer_id, exc)
            offer.link.close("answer sealed with another key")
            room._join_error("incorrect room password when decrypting answer", peer_id)
            return
        # An answer means the peer holds no connection to us (Trystero answers only then):
        # a live one it has given up.
        if self._bound_elsewhere(peer_id, gives_up=True):
            offer.link.close("already connected")
            return
        offer.link.remote_id = peer_id
        self._connecting = {k for k in self._connecting if not k.is_open and not k.is_closed}
        if len(self._connecting) < MAX_CONNECTING:
            self._connecting.add(offer.link)
        await room._shared.given_up_closed(peer_id)
        try:
            await offer.link.accept_answer(sdp)
        except ProtocolError as exc:
            self.unusable_signals += 1
            logger.debug("%r: unusable answer from %s: %s", room, peer_id, exc)
            offer.link.close("unusable answer")
