"""An embedded WebTorrent tracker: the WebSocket signalling mailbox Trystero's torrent
strategy talks to, compatible with real Trystero 0.25 peers and with bittorrent-tracker's
own JavaScript client.

Usage::

    async with await serve_tracker(port=0) as tracker:
        print(tracker.url)            # ws://127.0.0.1:<bound port>
        ...                           # point Trystero's relayConfig.urls at it

or, to run until cancelled::

    tracker = await serve_tracker(port=8000)
    await tracker.serve_forever()

Behaviour (matching bittorrent-tracker 11.2.3's WebSocket server; message shapes live in
:mod:`peermesh._wire.tracker`):

- Each ``announce`` adds or refreshes the peer (``peer_id``) in the swarm (``info_hash``)
  and is answered with ``{"action":"announce","interval":…,"info_hash":…,"complete":…,
  "incomplete":…}``, except announces that carry an ``answer``, which get no reply.
- Each offer in an announce goes to a *different* other peer of the swarm (at most
  ``min(len(offers), numwant)`` peers) as ``{"action":"announce","offer":<as
  received>,"offer_id":…,"peer_id":<sender>,"info_hash":…}``. bittorrent-tracker picks
  them at random; we first pick the peers whose offers we handed to the announcer in the
  last :data:`RECIPROCITY_WINDOW` seconds (most recent first, each once), then random
  ones. A peer that ignored an offer under the collision rule (it has offers out and the
  smaller id) thus gets its own offers to that peer on its next announce, and the pair
  connects without waiting for chance. Peers between which we routed an answer in the
  last :data:`PAIRED_WINDOW` seconds are most likely connected: they get each other's
  offers only when no other peer is left to take them. In a swarm of N peers the offers
  thus go where connections are still missing, instead of mostly to peers that already
  have one. Any client works with either policy.
- An ``answer`` is routed to ``to_peer_id`` in the same swarm as ``{"action":"announce",
  "answer":<as received>,"offer_id":…,"peer_id":<sender>,"info_hash":…}``; answers to
  unknown peers are dropped and counted.
- ``left == 0`` (or ``event:"completed"``) makes the peer a seeder (``complete``),
  anything else a leecher (``incomplete``); ``event:"stopped"`` removes the peer.
- ``scrape`` is answered with ``{"action":"scrape","files":{…},"flags":{…}}``.
- A peer is forgotten when its socket closes, and after ``peer_timeout`` seconds without
  an announce (Trystero sends nothing when it leaves a room but keeps the socket).

Limits: messages above ``max_message_size`` bytes close *that* connection (code 1009); an
announce that would exceed ``max_peers_per_swarm``, ``max_swarms`` or
``max_peers_per_connection`` gets a ``failure reason`` and is not recorded; offers beyond
``max_offers_per_announce`` are ignored; malformed messages get bittorrent-tracker's
``{"failure reason": …}`` reply, are counted and logged at DEBUG. Each connection has a
bounded outgoing queue drained by its own writer task, so a slow reader never stalls
anyone else: when its queue is full, further messages *to it* are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection

from peermesh._wire.tracker import (
    ClientAnnounce,
    ClientScrape,
    encode_announce_response,
    encode_failure,
    encode_relayed_answer,
    encode_relayed_offer,
    encode_scrape_response,
    parse_client_message,
)
from peermesh.errors import RelayProtocolError, UsageError

from ._websocket_server import Client, WebSocketServer

__all__ = ["TrackerServer", "TrackerStats", "serve_tracker"]

_log = logging.getLogger(__name__)

_MAX_SCRAPE = 256
#: How long a peer's offer to another makes that other's offers go back to it first.
RECIPROCITY_WINDOW = 10.0
#: Offerers remembered per peer for that purpose.
MAX_RECIPROCAL = 8
#: How long after an answer between two peers the pair counts as connected.
PAIRED_WINDOW = 30.0
#: Pairs remembered per peer.
MAX_PAIRED = 512
"""Info hashes answered per scrape; a scrape for "all" lists at most this many swarms."""


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """A snapshot of a :class:`TrackerServer`'s state and counters since it started."""

    connections: int
    """Open WebSocket connections."""
    swarms: int
    """Info hashes with at least one peer."""
    peers: int
    """(swarm, peer_id) memberships across all swarms."""
    messages_in: int
    """Messages received, including malformed ones."""
    messages_out: int
    """Messages written to a socket."""
    offers_forwarded: int
    answers_forwarded: int
    answers_unroutable: int
    """Answers whose ``to_peer_id`` was not in the swarm."""
    offers_truncated: int
    """Offers ignored because an announce had more than ``max_offers_per_announce``."""
    dropped_malformed: int
    """Messages that failed validation (answered with a ``failure reason``)."""
    dropped_oversize: int
    """Connections closed because a message exceeded ``max_message_size``."""
    dropped_backpressure: int
    """Outgoing messages dropped because the receiving connection's queue was full."""
    rejected_full: int
    """Announces refused by the swarm, tracker or per-connection limits."""
    peers_expired: int
    """Peers forgotten after ``peer_timeout`` without an announce."""


class _Peer:
    __slots__ = ("complete", "conn", "last_seen", "offered_by", "paired", "peer_id")

    def __init__(self, peer_id: str, conn: _Connection, now: float) -> None:
        self.peer_id = peer_id
        self.conn = conn
        self.complete = False
        self.last_seen = now
        #: Peers whose offers were handed to this one, with when (oldest first, bounded).
        self.offered_by: dict[str, float] = {}
        #: Peers an answer was routed to or from, with when (oldest first, bounded).
        self.paired: dict[str, float] = {}

    def offered(self, peer_id: str, now: float) -> None:
        _remember(self.offered_by, peer_id, now, MAX_RECIPROCAL)

    def is_paired(self, peer_id: str, now: float) -> bool:
        when = self.paired.get(peer_id)
        return when is not None and now - when < PAIRED_WINDOW


def _remember(table: dict[str, float], peer_id: str, now: float, limit: int) -> None:
    """Record ``peer_id`` at ``now`` in an oldest-first table of at most ``limit`` entries."""
    table.pop(peer_id, None)
    table[peer_id] = now
    while len(table) > limit:
        del table[next(iter(table))]


def _offer_targets(swarm: _Swarm, sender: _Peer, wanted: int, now: float) -> list[_Peer]:
    """Up to ``wanted`` distinct peers of ``swarm`` for ``sender``'s offers: the peers that
    recently offered to it (each used once, newest first), then random peers it is not
    paired with, then random paired ones."""
    targets: list[_Peer] = []
    for peer_id, when in reversed(list(sender.offered_by.items())):
        if len(targets) >= wanted:
            break
        del sender.offered_by[peer_id]
        candidate = swarm.peers.get(peer_id)
        if (
            candidate is not None
            and candidate is not sender
            and now - when < RECIPROCITY_WINDOW
            and not sender.is_paired(peer_id, now)
        ):
            targets.append(candidate)
    chosen = {id(t) for t in targets}
    unpaired: list[_Peer] = []
    paired: list[_Peer] = []
    for peer in swarm.peers.values():
        if peer is not sender and id(peer) not in chosen:
            (paired if sender.is_paired(peer.peer_id, now) else unpaired).append(peer)
    for pool in (unpaired, paired):
        if len(targets) < wanted:
            targets += random.sample(pool, min(wanted - len(targets), len(pool)))
    return targets


class _Swarm:
    __slots__ = ("complete", "peers")

    def __init__(self) -> None:
        self.peers: dict[str, _Peer] = {}
        self.complete = 0

    def counts(self) -> tuple[int, int]:
        return self.complete, len(self.peers) - self.complete


class _Connection(Client):
    def __init__(self, ws: ServerConnection) -> None:
        super().__init__(ws)
        self.memberships: set[tuple[str, str]] = set()


class TrackerServer(WebSocketServer[_Connection]):
    """A running WebTorrent tracker. Create it with :func:`serve_tracker`.

    It is an async context manager that closes the server on exit. All state lives in
    memory and is lost on :meth:`close`.
    """

    def __init__(
        self,
        *,
        host: str,
        interval: float,
        max_message_size: int,
        max_peers_per_swarm: int,
        max_offers_per_announce: int,
        max_swarms: int,
        max_peers_per_connection: int,
        peer_timeout: float,
    ) -> None:
        """Internal: use :func:`serve_tracker`, which validates the arguments and starts it."""
        super().__init__(host=host, max_message_size=max_message_size)
        self._interval = interval
        self._max_peers_per_swarm = max_peers_per_swarm
        self._max_offers = max_offers_per_announce
        self._max_swarms = max_swarms
        self._max_peers_per_connection = max_peers_per_connection
        self._peer_timeout = peer_timeout
        self._swarms: dict[str, _Swarm] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._offers_forwarded = 0
        self._answers_forwarded = 0
        self._answers_unroutable = 0
        self._offers_truncated = 0
        self._dropped_malformed = 0
        self._rejected_full = 0
        self._peers_expired = 0

    # ------------------------------------------------------------------ public face

    @property
    def interval(self) -> float:
        """The announce interval, in seconds, advertised to clients."""
        return self._interval

    def stats(self) -> TrackerStats:
        """A consistent snapshot of the counters (cheap: O(number of swarms))."""
        return TrackerStats(
            connections=len(self._connections),
            swarms=len(self._swarms),
            peers=sum(len(swarm.peers) for swarm in self._swarms.values()),
            messages_in=self._messages_in,
            messages_out=self._messages_out,
            offers_forwarded=self._offers_forwarded,
            answers_forwarded=self._answers_forwarded,
            answers_unroutable=self._answers_unroutable,
            offers_truncated=self._offers_truncated,
            dropped_malformed=self._dropped_malformed,
            dropped_oversize=self._dropped_oversize,
            dropped_backpressure=self._dropped_backpressure,
            rejected_full=self._rejected_full,
            peers_expired=self._peers_expired,
        )

    # ------------------------------------------------------------------ lifecycle

    kind = "tracker"

    async def _start(self, port: int) -> None:
        await self._listen(port)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="tracker-peer-sweeper")

    def _new_client(self, ws: ServerConnection) -> _Connection:
        return _Connection(ws)

    async def _on_close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def _on_closed(self) -> None:
        self._swarms.clear()

    async def _sweep_loop(self) -> None:
        period = min(max(self._peer_timeout / 4, 0.05), 30.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            deadline = loop.time() - self._peer_timeout
            for info_hash, swarm in list(self._swarms.items()):
                for peer in [p for p in swarm.peers.values() if p.last_seen < deadline]:
                    self._remove_peer(info_hash, swarm, peer)
                    self._peers_expired += 1
                    _log.debug("peer %r in swarm %r expired", peer.peer_id, info_hash)

    # ------------------------------------------------------------------ message handling

    def _on_message(self, conn: _Connection, message: str | bytes) -> None:
        try:
            request = parse_client_message(
                message, max_offers=self._max_offers, max_size=self._max_message_size
            )
        except RelayProtocolError as exc:
            self._dropped_malformed += 1
            _log.debug("malformed message on %s: %s", conn.ws.id, exc)
            self._send(conn, encode_failure(str(exc)))
            return
        if isinstance(request, ClientScrape):
            self._on_scrape(conn, request)
        else:
            self._on_announce(conn, request)

    def _on_announce(self, conn: _Connection, request: ClientAnnounce) -> None:
        info_hash, peer_id = request.info_hash, request.peer_id
        swarm = self._swarms.get(info_hash)
        if request.event == "stopped":
            if swarm is not None:
                peer = swarm.peers.get(peer_id)
                if peer is not None and peer.conn is conn:
                    self._remove_peer(info_hash, swarm, peer)
            self._reply_announce(conn, info_hash, swarm)
            return

        if swarm is None:
            if len(self._swarms) >= self._max_swarms:
                self._reject(conn, info_hash, "tracker is full (too many swarms)")
                return
            swarm = _Swarm()
        key = (info_hash, peer_id)
        peer = swarm.peers.get(peer_id)
        if peer is None or peer.conn is not conn:
            if peer is None and len(swarm.peers) >= self._max_peers_per_swarm:
                self._reject(conn, info_hash, "swarm is full")
                return
            if len(conn.memberships) >= self._max_peers_per_connection:
                self._reject(conn, info_hash, "too many peers on this connection")
                return
            if peer is None:
                peer = _Peer(peer_id, conn, 0.0)
                swarm.peers[peer_id] = peer
                self._swarms[info_hash] = swarm
            else:  # the same peer_id announced from a new socket: the newest one wins
                peer.conn.memberships.discard(key)
                peer.conn = conn
            conn.memberships.add(key)

        complete = request.event == "completed" or request.left == 0
        if complete != peer.complete:
            swarm.complete += 1 if complete else -1
            peer.complete = complete
        peer.last_seen = asyncio.get_running_loop().time()

        if request.answer is None:  # bittorrent-tracker sends no reply to an answer
            self._reply_announce(conn, info_hash, swarm)

        if request.offers:
            self._offers_truncated += request.offers_truncated
            wanted = len(request.offers)
            if request.numwant is not None:
                wanted = min(wanted, request.numwant)
            now = asyncio.get_running_loop().time()
            for offer, target in zip(
                request.offers, _offer_targets(swarm, peer, wanted, now), strict=False
            ):
                self._send(target.conn, encode_relayed_offer(info_hash, peer_id, offer))
                target.offered(peer_id, now)
                self._offers_forwarded += 1

        if request.answer is not None:
            recipient = swarm.peers.get(request.answer.to_peer_id)
            if recipient is None:
                self._answers_unroutable += 1
                _log.debug("answer from %r to unknown peer %r", peer_id, request.answer.to_peer_id)
            else:
                self._send(
                    recipient.conn, encode_relayed_answer(info_hash, peer_id, request.answer)
                )
                self._answers_forwarded += 1
                now = asyncio.get_running_loop().time()
                _remember(peer.paired, recipient.peer_id, now, MAX_PAIRED)
                _remember(recipient.paired, peer_id, now, MAX_PAIRED)

    def _on_scrape(self, conn: _Connection, request: ClientScrape) -> None:
        hashes = request.info_hashes or tuple(itertools.islice(self._swarms, _MAX_SCRAPE))
        files: dict[str, tuple[int, int]] = {}
        for info_hash in hashes[:_MAX_SCRAPE]:
            swarm = self._swarms.get(info_hash)
            files[info_hash] = swarm.counts() if swarm is not None else (0, 0)
        self._send(conn, encode_scrape_response(files, interval=self._interval))

    def _reply_announce(self, conn: _Connection, info_hash: str, swarm: _Swarm | None) -> None:
        complete, incomplete = swarm.counts() if swarm is not None else (0, 0)
        self._send(
            conn,
            encode_announce_response(
                info_hash, interval=self._interval, complete=complete, incomplete=incomplete
            ),
        )

    def _reject(self, conn: _Connection, info_hash: str, reason: str) -> None:
        self._rejected_full += 1
        _log.debug("announce for %r refused: %s", info_hash, reason)
        self._send(conn, encode_failure(reason, action="announce", info_hash=info_hash))

    def _remove_peer(self, info_hash: str, swarm: _Swarm, peer: _Peer) -> None:
        del swarm.peers[peer.peer_id]
        if peer.complete:
            swarm.complete -= 1
        peer.conn.memberships.discard((info_hash, peer.peer_id))
        if not swarm.peers and self._swarms.get(info_hash) is swarm:
            del self._swarms[info_hash]

    def _forget_connection(self, conn: _Connection) -> None:
        for info_hash, peer_id in list(conn.memberships):
            swarm = self._swarms.get(info_hash)
            peer = swarm.peers.get(peer_id) if swarm is not None else None
            if swarm is not None and peer is not None and peer.conn is conn:
                self._remove_peer(info_hash, swarm, peer)
        conn.memberships.clear()


async def serve_tracker(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    interval: float = 120.0,
    max_message_size: int = 64 * 1024,
    max_peers_per_swarm: int = 1000,
    max_offers_per_announce: int = 10,
    max_swarms: int = 10_000,
    max_peers_per_connection: int = 1000,
    peer_timeout: float | None = None,
) -> TrackerServer:
    """Start a WebTorrent tracker on ``ws://host:port`` and return it, already serving.

    ``port=0`` picks a free port (see :attr:`TrackerServer.port`). ``interval`` is the
    announce interval in seconds advertised to clients, as is (bittorrent-tracker
    advertises its ``interval`` option divided by 5 to WebSocket clients; its default of
    10 min gives 120 s, our default); Trystero clamps it to 10–120 s. ``peer_timeout`` (seconds)
    defaults to ``3 * max(interval, 120)``: Trystero re-announces at least every 120 s and
    bittorrent-tracker's client every ``interval``, so a peer is dropped only after missing
    about three announces.

    Limits: ``max_message_size`` bytes per message (larger ones close that connection with
    code 1009); ``max_peers_per_swarm`` peers per info_hash; ``max_offers_per_announce``
    offers forwarded per announce (the rest are ignored); ``max_swarms`` info_hashes in
    total; ``max_peers_per_connection`` (info_hash, peer_id) registrations held by one
    WebSocket (a Trystero process uses one socket per tracker for all its rooms, with one
    peer_id; a bittorrent-tracker process shares one socket between its clients).

    Raises :class:`~peermesh.errors.UsageError` for non-positive limits or interval, and
    ``OSError`` if the address cannot be bound.
    """
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        raise UsageError(f"interval must be a positive number of seconds, got {interval!r}")
    for name, value in (
        ("max_message_size", max_message_size),
        ("max_peers_per_swarm", max_peers_per_swarm),
        ("max_swarms", max_swarms),
        ("max_peers_per_connection", max_peers_per_connection),
    ):
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(max_offers_per_announce, int) or max_offers_per_announce < 0:
        raise UsageError("max_offers_per_announce must be a non-negative int")
    if peer_timeout is None:
        peer_timeout = 3 * max(float(interval), 120.0)
    if not (math.isfinite(peer_timeout) and peer_timeout > 0):
        raise UsageError(f"peer_timeout must be positive, got {peer_timeout!r}")
    tracker = TrackerServer(
        host=host,
        interval=float(interval),
        max_message_size=max_message_size,
        max_peers_per_swarm=max_peers_per_swarm,
        max_offers_per_announce=max_offers_per_announce,
        max_swarms=max_swarms,
        max_peers_per_connection=max_peers_per_connection,
        peer_timeout=peer_timeout,
    )
    await tracker._start(port)
    return tracker
