"""The signalling shared by every topic strategy (Nostr, MQTT, ws-relay): wire notes §2.

A :class:`TopicSignaller` is one room's presence on a set of :class:`TopicRelay` s. It
subscribes to its *self topic* and the room's *root topic* on every relay, announces
itself on the root topic (at once, then after 0.233, 0.533 and 1.333 s more, then every
``announce_interval``; the burst repeats when a relay reconnects or a connected peer goes
away), and follows the leader rule:

* an announcement from a peer with a larger id gets an offer, sent to that peer's self
  topic on the relay it came from; from a smaller id it gets a *counter-announcement*
  there, so the smaller peer (the leader) makes the offer;
* an offer is answered over the relay it arrived on, unless we are already connected to,
  answering, or (as the leader) offering to that peer;
* answers and trickled candidates are routed by ``offerId``; candidates that arrive early
  are held (bounded) until their connection exists.

A *passive* room (wire notes §2.1, Trystero's ``topic-strategy.mjs`` and
``signal-handler.mjs``) starts dormant: it subscribes only to the root topic, sends nothing,
and ignores every message from a passive peer. A message from a non-passive peer that is not
an answer or a candidate wakes it (:class:`~peermesh._signalling.PassiveRoom`): it then also
subscribes its self topic (and keeps it), announces with the burst, and every announcement,
offer and answer it sends carries ``"passive":true`` (counter-announcements do not, as in
Trystero). It goes dormant again, announcements stopped, when it has no peer and no
negotiation in progress.

Offers are made on demand: aiortc produces a complete (non-trickle) offer in ~2 ms, so the
pool of pre-made offers Trystero keeps would only hold sockets open for nothing. Signals in
progress and connections being set up are capped (:data:`MAX_TASKS`,
:data:`MAX_PENDING_LINKS`), and each relay gets an equal share of both caps: a relay that
floods announcements from made-up peer ids evicts only its own offers and cannot lock out
the peers another relay brings. A signal that finds its relay's share in use is *deferred*
(at most :data:`MAX_DEFERRED`, for :data:`DEFERRED_TTL` seconds) and handled as slots free
up, so a swarm larger than the caps meets at once rather than at the next announcement a
minute later; an offer nobody answered for :data:`EVICT_AFTER` seconds gives its slot to a
deferred signal (a flood's offers to made-up peers never get answered). Our SDP
carries every candidate inline; we never trickle our own. Malformed signals are dropped,
logged at DEBUG and counted; undecryptable offers and answers are join errors, as in
Trystero.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._link import PeerLink
from .._wire.sealing import seal, unseal
from .._wire.signals import (
    OFFER_ID_LENGTH,
    Signal,
    SignalKind,
    encode_announce,
    encode_answer,
    encode_offer,
    parse_signal,
)
from .._wire.topics import gen_id, root_topic, self_topic
from ..errors import ProtocolError, SealError
from . import TopicRelay, passive_room

if TYPE_CHECKING:
    from .._room import Room

__all__ = ["SignalCounters", "TopicSignaller"]

logger = logging.getLogger(__name__)

WARMUP_DELAYS = (0.0, 0.233, 0.533, 1.333)
#: Trystero 0.25.4's steady announce interval for topic strategies.
ANNOUNCE_INTERVAL = 60.0
#: An offer is re-sent over the same relay after this long (Trystero: 0.9 × 5333 ms).
OFFER_RESEND = 4.8
#: An unanswered offer is replaced after this long (Trystero's offerTtl).
OFFER_TTL = 57.333
#: Signals handled at once (each relay gets an equal share).
MAX_TASKS = 32
#: Connections being set up at once (each relay gets an equal share).
MAX_PENDING_LINKS = 32
#: Signals waiting for a free task or connection slot (each relay gets an equal share; the
#: oldest is dropped when full).
MAX_DEFERRED = 256
#: A deferred signal is dropped after this long (the peer's next announcement finds it).
DEFERRED_TTL = 20.0
#: Deferred signals are looked at this often while any wait.
DEFERRED_RETRY = 0.05
#: An offer unanswered this long may be closed to make room for another peer.
EVICT_AFTER = 10.0
MAX_EARLY_KEYS = 64
MAX_EARLY_PER_KEY = 16


@dataclass
class SignalCounters:
    """Signals a room dropped (or, ``deferred``, kept for later), per room and strategy."""

    malformed: int = 0
    undecryptable: int = 0
    unusable: int = 0
    dropped_busy: int = 0
    evicted_offers: int = 0
    deferred: int = 0


@dataclass(eq=False)
class _Offer:
    offer_id: str
    link: PeerLink
    sealed_sdp: str
    created: float
    #: The relay whose announcement led to this offer (it counts against that relay's share).
    relay: TopicRelay
    answered: bool = False
    sent: dict[TopicRelay, float] = field(default_factory=dict)


@dataclass(eq=False)
class _OfferLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(eq=False)
class _Answer:
    offer_id: str | None
    link: PeerLink
    relay: TopicRelay


class TopicSignaller:
    """One room's signalling over topic relays; see the module docstring."""

    def __init__(
        self,
        room: Room,
        relays: list[TopicRelay],
        *,
        announce_interval: float | None = None,
    ) -> None:
        self.room = room
        self.relays = relays
        #: Seconds between announcements after the burst (default :data:`ANNOUNCE_INTERVAL`).
        self.announce_interval = announce_interval or ANNOUNCE_INTERVAL
        self.counters = SignalCounters()
        self.root_topic = root_topic(room.app_id, room.room_id)
        self.self_topic = self_topic(room.app_id, room.room_id, room.self_id)
        self._handlers: dict[TopicRelay, Callable[[str, str], None]] = {}
        self._unready: list[Callable[[], None]] = []
        self._loops: dict[TopicRelay, asyncio.Task[None]] = {}
        self._offers: dict[str, _Offer] = {}
        self._answers: dict[str, _Answer] = {}
        self._early: dict[tuple[str, str | None], list[str]] = {}
        # Per-peer offer locks, kept only while some task uses them (a flood of announcements
        # from random ids must not grow this), and offers being made (counted as pending).
        self._offer_locks: dict[str, _OfferLock] = {}
        self._creating: dict[TopicRelay, int] = dict.fromkeys(relays, 0)
        self._tasks: dict[asyncio.Task[None], TopicRelay] = {}
        self._deferred: dict[TopicRelay, deque[tuple[float, Signal]]] = {r: deque() for r in relays}
        self._retrying: asyncio.Task[None] | None = None
        self._closed = False
        self._self_subscribed = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        passive = self.room.is_passive
        if passive:
            passive_room(self.room)  # follows the room's peers from now on
        for relay in self.relays:
            handler = self._make_handler(relay)
            self._handlers[relay] = handler
            if not passive:
                relay.subscribe(self.self_topic, handler)
            relay.subscribe(self.root_topic, handler)
        self._self_subscribed = not passive
        for relay in self.relays:
            self._unready.append(relay.on_ready(self._make_restart(relay)))
        if passive and not self.room.dormant:
            self.wake()  # another strategy of this room woke it while we were starting

    def _subscribe_self(self) -> None:
        if self._self_subscribed or self._closed:
            return
        self._self_subscribed = True
        for relay, handler in self._handlers.items():
            relay.subscribe(self.self_topic, handler)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.room.is_passive:
            passive_room(self.room).close()
        for unregister in self._unready:
            unregister()
        retrying = [] if self._retrying is None else [self._retrying]
        for task in [*self._loops.values(), *self._tasks, *retrying]:
            task.cancel()
        await asyncio.gather(*self._loops.values(), *self._tasks, *retrying, return_exceptions=True)
        for waiting in self._deferred.values():
            waiting.clear()
        for relay, handler in self._handlers.items():
            if self._self_subscribed:
                relay.unsubscribe(self.self_topic, handler)
            relay.unsubscribe(self.root_topic, handler)
            await relay.release()
        for offer in self._offers.values():
            if not offer.link.is_open:
                offer.link.close("room left")
        for answer in self._answers.values():
            if not answer.link.is_open:
                answer.link.close("room left")
        self._offers.clear()
        self._answers.clear()
        self._early.clear()

    def _make_restart(self, relay: TopicRelay) -> Callable[[], None]:
        def restart() -> None:
            self._restart(relay)

        return restart

    def _make_handler(self, relay: TopicRelay) -> Callable[[str, str], None]:
        def handler(topic: str, text: str) -> None:
            self._received(relay, topic, text)

        return handler

    # -- announcing ---------------------------------------------------------------------------

    def _restart(self, relay: TopicRelay) -> None:
        if self._closed or self.room.dormant:
            return
        previous = self._loops.pop(relay, None)
        if previous is not None:
            previous.cancel()
        self._loops[relay] = asyncio.ensure_future(self._announce_loop(relay))

    def peer_lost(self, peer_id: str) -> None:
        # As Trystero: when a connection drops (not when a peer leaves on purpose), re-run
        # the announce burst so that the peer, if it is still there, is found again at once.
        # A passive room does not: its PassiveRoom checks whether it goes dormant instead.
        if self.room.is_passive:
            return
        for relay in self.relays:
            self._restart(relay)

    # -- passive rooms ------------------------------------------------------------------------

    def wake(self) -> None:
        if self._closed:
            return
        self._subscribe_self()
        for relay in self.relays:
            self._restart(relay)

    def sleep(self) -> None:
        for task in self._loops.values():
            task.cancel()
        self._loops.clear()

    def has_active_work(self) -> bool:
        if any(self._creating.values()) or any(self._deferred.values()):
            return True
        now = time.monotonic()
        for offer in self._offers.values():
            pending = not offer.link.is_open and not offer.link.is_closed
            if pending and (offer.answered or now - offer.created < OFFER_TTL):
                return True
        return any(not a.link.is_open and not a.link.is_closed for a in self._answers.values())

    async def _announce_loop(self, relay: TopicRelay) -> None:
        announce = encode_announce(self.room.self_id, passive=self.room.is_passive)
        for delay in WARMUP_DELAYS:
            await asyncio.sleep(delay)
            await relay.publish(self.root_topic, announce)
        while True:
            await asyncio.sleep(self.announce_interval)
            await relay.publish(self.root_topic, announce)

    # -- incoming signals -----------------------------------------------------------------------

    def _received(self, relay: TopicRelay, topic: str, text: str) -> None:
        if self._closed or topic not in (self.root_topic, self.self_topic):
            return
        try:
            signal = parse_signal(text)
        except ProtocolError as exc:
            self.counters.malformed += 1
            logger.debug("%r: malformed signal on %s: %s", self.room, relay.url, exc)
            return
        if signal.peer_id == self.room.self_id:
            return
        room = self.room
        if room.is_passive:
            if signal.passive:
                return  # passive peers never connect to each other
            if room.dormant:
                if signal.kind in (SignalKind.ANSWER, SignalKind.CANDIDATE):
                    return
                passive_room(room).wake()
                if room.dormant:
                    return  # could not wake (the room is being left)
        if signal.kind is not SignalKind.ANNOUNCE and topic != self.self_topic:
            return  # offers, answers and candidates are addressed to our self topic
        # An offer or announcement addressed to us comes only from a peer that holds no
        # connection to us: Trystero's signal handler and ours send none to a connected peer.
        gives_up = topic == self.self_topic and signal.kind in (
            SignalKind.OFFER,
            SignalKind.ANNOUNCE,
        )
        if self._bound_to_live_link(signal, gives_up=gives_up):
            return
        if self._free_tasks(relay) > 0:
            self._handle(relay, signal)
        else:
            self._defer(relay, signal)

    def _bound_to_live_link(self, signal: Signal, *, gives_up: bool = False) -> bool:
        """Whether we are connected to the signal's sender already (then this room is bound
        onto that connection and the signal needs nothing more); see
        ``SharedLinks.bound_to_live_link`` for ``gives_up``."""
        return self.room._shared.bound_to_live_link(self.room, signal.peer_id, gives_up=gives_up)

    def _handle(self, relay: TopicRelay, signal: Signal) -> None:
        """Handle ``signal`` in a task (the caller checked that ``relay`` has one free)."""
        handle = {
            SignalKind.ANNOUNCE: self._on_announce,
            SignalKind.OFFER: self._on_offer,
            SignalKind.ANSWER: self._on_answer,
            SignalKind.CANDIDATE: self._on_candidate,
        }[signal.kind]
        task = asyncio.ensure_future(handle(relay, signal))
        self._tasks[task] = relay
        task.add_done_callback(self._task_done)

    def _share(self, cap: int) -> int:
        """Each relay's part of ``cap``."""
        return max(1, cap // len(self.relays))

    def _free_tasks(self, relay: TopicRelay) -> int:
        return self._share(MAX_TASKS) - sum(r is relay for r in self._tasks.values())

    def _needs_link(self, signal: Signal) -> bool:
        """Whether handling ``signal`` sets up a connection: an offer, or an announcement
        that we, the leader, answer with an offer."""
        if signal.kind is SignalKind.OFFER:
            return True
        return signal.kind is SignalKind.ANNOUNCE and self.room.self_id < signal.peer_id

    # -- deferred signals -----------------------------------------------------------------------

    def _defer(self, relay: TopicRelay, signal: Signal) -> None:
        """Keep ``signal`` until ``relay`` has a free slot for it (see the module docstring)."""
        waiting = self._deferred[relay]
        if len(waiting) >= self._share(MAX_DEFERRED):
            waiting.popleft()
            self.counters.dropped_busy += 1
        waiting.append((time.monotonic(), signal))
        self.counters.deferred += 1
        if self._retrying is None and not self._closed:
            self._retrying = asyncio.ensure_future(self._retry_deferred())

    async def _retry_deferred(self) -> None:
        try:
            while any(self._deferred.values()):
                await asyncio.sleep(DEFERRED_RETRY)
                for relay in self.relays:
                    self._release_deferred(relay)
        finally:
            self._retrying = None

    def _release_deferred(self, relay: TopicRelay) -> None:
        """Handle, oldest first, the deferred signals of ``relay`` that have a slot now; keep
        the rest in order, drop those older than :data:`DEFERRED_TTL`."""
        waiting = self._deferred[relay]
        if not waiting:
            return
        tasks = self._free_tasks(relay)
        links = self._share(MAX_PENDING_LINKS) - self._pending_links(relay)
        stale_before = time.monotonic() - DEFERRED_TTL
        kept: list[tuple[float, Signal]] = []
        while waiting:
            deferred_at, signal = waiting.popleft()
            if deferred_at < stale_before:
                self.counters.dropped_busy += 1
                continue
            if self._bound_to_live_link(signal):
                continue
            needs_link = self._needs_link(signal)
            if needs_link and links <= 0 and tasks > 0 and self._evict_offer(relay):
                links += 1
            if tasks <= 0 or (needs_link and links <= 0):
                kept.append((deferred_at, signal))
                continue
            tasks -= 1
            links -= needs_link
            self._handle(relay, signal)
        waiting.extend(kept)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%r: signalling task failed", self.room, exc_info=task.exception())

    def _current_offer(self, peer_id: str) -> _Offer | None:
        """Our offer to ``peer_id`` still being set up (one whose link opened is done: a
        signal that gets here comes from a peer that gave that link up)."""
        offer = self._offers.get(peer_id)
        if offer is not None and (offer.link.is_closed or offer.link.is_open):
            del self._offers[peer_id]
            return None
        return offer

    def _current_answer(self, peer_id: str) -> _Answer | None:
        """Our answer to ``peer_id`` still being set up (see :meth:`_current_offer`)."""
        answer = self._answers.get(peer_id)
        if answer is not None and (answer.link.is_closed or answer.link.is_open):
            del self._answers[peer_id]
            return None
        return answer

    def _pending_links(self, relay: TopicRelay | None = None) -> int:
        """Connections being set up, for ``relay`` (or every relay); offers still being
        made count: they hold a slot."""
        entries: list[_Offer | _Answer] = [*self._offers.values(), *self._answers.values()]
        pending = sum(
            1
            for e in entries
            if (relay is None or e.relay is relay) and not e.link.is_open and not e.link.is_closed
        )
        creating = self._creating
        return pending + (sum(creating.values()) if relay is None else creating[relay])

    def _has_room(self, relay: TopicRelay) -> bool:
        return self._pending_links(relay) < self._share(MAX_PENDING_LINKS)

    def _evict_offer(self, relay: TopicRelay) -> bool:
        """Make room by dropping ``relay``'s oldest offer nobody answered for
        :data:`EVICT_AFTER` seconds: peers that announce and never answer (made-up ids from
        a hostile relay) must not lock real peers out, and peers merely slow to answer (a
        swarm joining at once) must not lose their offer to the next announcement."""
        old = time.monotonic() - EVICT_AFTER
        unanswered = [
            (o.created, p)
            for p, o in self._offers.items()
            if not o.answered and o.relay is relay and o.created < old
        ]
        if not unanswered:
            return False
        _, peer_id = min(unanswered)
        self._offers.pop(peer_id).link.close("offer evicted for a newer peer")
        self.counters.evicted_offers += 1
        return True

    def _new_link(self, *, initiator: bool, remote_id: str) -> PeerLink:
        room = self.room
        return room._shared.new_link(
            room,
            initiator=initiator,
            configuration=room.configuration,
            ice_addresses=room.ice_addresses,
            remote_id=remote_id,
        )

    async def _publish_to(self, relay: TopicRelay, peer_id: str, text: str) -> None:
        room = self.room
        await relay.publish(self_topic(room.app_id, room.room_id, peer_id), text)

    async def _on_announce(self, relay: TopicRelay, signal: Signal) -> None:
        room = self.room
        peer_id = signal.peer_id
        if self._current_answer(peer_id) is not None:
            return
        offer = self._current_offer(peer_id)
        if offer is not None and offer.answered:
            return
        if room.self_id > peer_id:
            if offer is None:
                await self._publish_to(relay, peer_id, encode_announce(room.self_id))
            return
        guard = self._offer_locks.setdefault(peer_id, _OfferLock())
        guard.users += 1
        try:
            async with guard.lock:
                offer = self._current_offer(peer_id)
                now = time.monotonic()
                if offer is not None and not offer.answered and now - offer.created > OFFER_TTL:
                    offer.link.close("offer expired")
                    del self._offers[peer_id]
                    offer = None
                if offer is None:
                    if not self._has_room(relay) and not self._evict_offer(relay):
                        self._defer(relay, signal)
                        return
                    self._creating[relay] += 1
                    try:
                        await room._shared.given_up_closed(peer_id)
                        link = self._new_link(initiator=True, remote_id=peer_id)
                        sdp = await link.create_offer()
                    finally:
                        self._creating[relay] -= 1
                    sealed = seal(room.seal_key, sdp)
                    offer = _Offer(gen_id(OFFER_ID_LENGTH), link, sealed, now, relay)
                    self._offers[peer_id] = offer
                elif offer.answered or now - offer.sent.get(relay, -OFFER_RESEND) < OFFER_RESEND:
                    return
                offer.sent[relay] = now
        finally:
            guard.users -= 1
            if guard.users == 0:
                del self._offer_locks[peer_id]
        await self._publish_to(
            relay,
            peer_id,
            encode_offer(room.self_id, offer.offer_id, offer.sealed_sdp, passive=room.is_passive),
        )

    async def _on_offer(self, relay: TopicRelay, signal: Signal) -> None:
        room = self.room
        peer_id = signal.peer_id
        if self._current_answer(peer_id) is not None:
            return
        own = self._current_offer(peer_id)
        if own is not None:
            if own.answered or room.self_id < peer_id:
                return  # the leader keeps its own offer
            own.link.close("yielded to the leader's offer")
            del self._offers[peer_id]
        try:
            sdp = unseal(room.seal_key, signal.sealed)
        except SealError as exc:
            self.counters.undecryptable += 1
            logger.debug("%r: undecryptable offer from %s: %s", room, peer_id, exc)
            room._join_error("incorrect room password when decrypting offer", peer_id)
            return
        if not self._has_room(relay):
            self._defer(relay, signal)
            return
        await room._shared.given_up_closed(peer_id)
        link = self._new_link(initiator=False, remote_id=peer_id)
        entry = self._answers[peer_id] = _Answer(signal.offer_id, link, relay)
        try:
            answer = await link.accept_offer(sdp)
        except ProtocolError as exc:
            self.counters.unusable += 1
            logger.debug("%r: unusable offer from %s: %s", room, peer_id, exc)
            link.close("unusable offer")
            if self._answers.get(peer_id) is entry:  # don't keep it: ids can be made up
                del self._answers[peer_id]
            return
        await self._publish_to(
            relay,
            peer_id,
            encode_answer(
                room.self_id,
                seal(room.seal_key, answer),
                signal.offer_id,
                passive=room.is_passive,
            ),
        )
        await self._apply_early(peer_id, signal.offer_id, link)

    async def _on_answer(self, relay: TopicRelay, signal: Signal) -> None:
        room = self.room
        peer_id = signal.peer_id
        offer = self._current_offer(peer_id)
        if offer is None or offer.answered:
            return
        if signal.offer_id is not None and signal.offer_id != offer.offer_id:
            return
        try:
            sdp = unseal(room.seal_key, signal.sealed)
        except SealError as exc:
            self.counters.undecryptable += 1
            logger.debug("%r: undecryptable answer from %s: %s", room, peer_id, exc)
            room._join_error("incorrect room password when decrypting answer", peer_id)
            return
        offer.answered = True
        try:
            await offer.link.accept_answer(sdp)
        except ProtocolError as exc:
            self.counters.unusable += 1
            logger.debug("%r: unusable answer from %s: %s", room, peer_id, exc)
            offer.link.close("unusable answer")
            if self._offers.get(peer_id) is offer:  # don't keep it: ids can be made up
                del self._offers[peer_id]
            return
        await self._apply_early(peer_id, offer.offer_id, offer.link)

    async def _on_candidate(self, relay: TopicRelay, signal: Signal) -> None:
        peer_id = signal.peer_id
        offer = self._current_offer(peer_id)
        answer = self._current_answer(peer_id)
        link: PeerLink | None = None
        if offer is not None and signal.offer_id in (offer.offer_id, None):
            link = offer.link
        elif answer is not None and signal.offer_id in (answer.offer_id, None):
            link = answer.link
        if link is None:
            self._hold_early(peer_id, signal.offer_id, signal.sealed)
            return
        await self._apply_candidate(link, signal.sealed)

    async def _apply_candidate(self, link: PeerLink, sealed: str) -> None:
        try:
            value = json.loads(unseal(self.room.seal_key, sealed))
            if not isinstance(value, dict):
                raise ProtocolError("candidate is not a JSON object")
            await link.add_remote_candidate(value)
        except (SealError, ProtocolError, ValueError) as exc:
            self.counters.unusable += 1
            logger.debug("%r: dropped a candidate: %s", self.room, exc)

    def _hold_early(self, peer_id: str, offer_id: str | None, sealed: str) -> None:
        key = (peer_id, offer_id)
        held = self._early.get(key)
        if held is None:
            if len(self._early) >= MAX_EARLY_KEYS:
                self.counters.dropped_busy += 1
                return
            held = self._early[key] = []
        if len(held) < MAX_EARLY_PER_KEY:
            held.append(sealed)

    async def _apply_early(self, peer_id: str, offer_id: str | None, link: PeerLink) -> None:
        for key in ((peer_id, offer_id), (peer_id, None)):
            for sealed in self._early.pop(key, []):
                await self._apply_candidate(link, sealed)
