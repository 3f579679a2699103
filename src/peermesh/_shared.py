"""The connections one local identity holds for one app id, shared by all its rooms.

Trystero keeps at most one RTCPeerConnection per (app id, remote peer) and multiplexes
rooms over it with room frames and presence frames (wire notes §6.1, §6.2, §9). A
:class:`SharedLinks` table does the same for one ``(self_id, app_id)``:

* a link that opens is registered as *the* link to its remote peer (a duplicate is closed),
  gets a presence=1 frame for every local room, and is bound to the room whose signalling
  produced it;
* incoming frames are routed to rooms by token; a presence=1 for a local room binds that
  room onto the link, presence=0 is that peer leaving the room;
* tokens the remote announced before we joined the room are remembered (bounded), so a room
  joined later binds at once;
* when a link closes, every room bound to it loses that peer; when the last local room
  bound to a link leaves, the link is closed;
* a link its peer has given up — the peer sends a signal it sends only while it holds no
  connection to us, or the link has been silent for
  :data:`~peermesh._wire.liveness.SILENT_AFTER` seconds while the peer still signals — is
  closed, and the signal handled: rooms see the peer leave, then join again on the new link
  (:meth:`SharedLinks.bound_to_live_link`);
* when a second link to the same peer opens and both sides prefer it (peermesh peers
  only, see :meth:`SharedLinks._preferred`), the rooms move to it *before* the old one
  goes: each room re-admits the peer on the new link while it keeps using the old one,
  then switches; the old link is *retired* — once no room and no message in progress uses
  it, a handover frame ``DRAINED`` is its last frame, the peer's ``DRAINED`` is answered
  with ``DRAINED_SEEN``, and it is closed once both ``DRAINED`` frames are delivered
  (both directions are then empty), or when it carries no frame for :data:`RETIRE_IDLE`
  seconds after our ``DRAINED``.
  Rooms receive from both links meanwhile, and a room's first send on the new link waits
  until the old one is delivered, so nothing is lost or reordered;
* a *dormant* passive room is not advertised: it gets no presence=1 when it joins or when a
  link opens; :meth:`SharedLinks.set_dormant` sends presence=0 when it goes dormant and
  presence=1 when it wakes (wire notes §9.1, Trystero's ``shouldAdvertise``). A dormant room
  is not bound onto links either (its peer, not having our presence, would not answer the
  admission handshake); it is bound, where the peer said it is in it, when it wakes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiortc import RTCConfiguration

from ._limits import RateLimit, log_once
from ._link import DtlsCertificate, PeerLink
from ._wire.frames import (
    HandoverFrame,
    HandoverSignal,
    PresenceFrame,
    encode_handover_frame,
    encode_presence_frame,
    parse_frame,
)
from ._wire.liveness import SILENT_AFTER
from .errors import PeerTimeoutError, PeerUnavailableError, ProtocolError, RoomClosedError

__all__ = ["LinkCounters", "RoomEndpoint", "SharedLinks", "shared_links"]

logger = logging.getLogger(__name__)

#: How many room tokens a remote may announce on one link before we stop remembering more.
MAX_REMOTE_TOKENS = 256
#: Presence frames per second a link's peer may send (bursts of twice that); each may start
#: or end an admission handshake, so the excess is dropped (counted, logged once per link).
MAX_PRESENCE_RATE = 20
#: A link open this long is kept when a second one to the same peer opens.
SETTLED_AFTER = 2.0
#: How long a link whose peer sent ``@_leave`` stays open for its presence=0 to arrive.
LEAVE_LINGER = 1.0
#: A retiring link that carries no frame for this long is closed, handed over or not.
RETIRE_IDLE = 10.0
#: A link idle this long is asked whether its peer still uses it (``still_used``)...
CHECK_IDLE_AFTER = 5.0
#: ... and closed when the peer does not answer a ping within this long.
CHECK_TIMEOUT = 3.0
#: The longest a new connection waits for the given-up one to the same peer to close.
GIVEN_UP_CLOSE_TIMEOUT = 5.0


class RoomEndpoint(Protocol):
    """What a room offers the shared table (implemented by :class:`peermesh.Room`)."""

    token: str
    #: A dormant passive room is not advertised on shared connections.
    dormant: bool

    def has_peer(self, peer_id: str) -> bool: ...
    def uses(self, link: PeerLink) -> bool: ...
    def attach(self, link: PeerLink) -> None: ...
    def receive_chunk(
        self, peer_id: str, chunk: bytes | memoryview, link: PeerLink | None = None
    ) -> None: ...
    def move_peer(self, peer_id: str, link: PeerLink) -> None: ...
    async def ping(self, peer_id: str, *, timeout: float) -> float: ...
    def peer_gone(self, peer_id: str, reason: str, *, lost: bool = False) -> None: ...
    def link_failed(self, link: PeerLink) -> None: ...


@dataclass
class LinkCounters:
    """Frames dropped at the link level, for diagnostics and tests."""

    malformed_frames: int = 0
    frames_for_unknown_rooms: int = 0
    duplicate_links: int = 0
    #: Presence frames over :data:`MAX_PRESENCE_RATE`.
    presence_rate_limited: int = 0


@dataclass
class _Retirement:
    """A link being handed over (see the module docstring)."""

    #: Set once everything we sent on the link is known to have arrived, or it closed.
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    drained_sent: bool = False
    #: ``link.frames`` when the idle timer last looked.
    frames_seen: int = -1
    timer: asyncio.TimerHandle | None = None


@dataclass
class _LinkInfo:
    origin: RoomEndpoint | None
    remote_tokens: set[str] = field(default_factory=set)
    #: The peer sent ``DRAINED`` here: it will send nothing more on this link.
    peer_drained: bool = False
    #: A running :meth:`SharedLinks.still_used` check of this link.
    check: asyncio.Task[bool] | None = None
    retirement: _Retirement | None = None
    #: Kinds of dropped input from this link already logged (see :func:`log_once`).
    logged: set[str] = field(default_factory=set)
    presence_rate: RateLimit = field(
        default_factory=lambda: RateLimit(
            MAX_PRESENCE_RATE, 2 * MAX_PRESENCE_RATE, time.monotonic()
        )
    )


class SharedLinks:
    """The links and rooms of one ``(self_id, app_id)``; see the module docstring."""

    def __init__(self, self_id: str, app_id: str, on_empty: Callable[[SharedLinks], None]):
        self.self_id = self_id
        self.app_id = app_id
        self.rooms: dict[str, RoomEndpoint] = {}
        self.links: dict[str, PeerLink] = {}  # open links by remote peer id
        self.counters = LinkCounters()
        self._info: dict[PeerLink, _LinkInfo] = {}
        self._on_empty = on_empty
        self._certificate: DtlsCertificate | None = None
        #: Links closed as given up by their peer, until a new one to it is started or
        #: (pruned when another is given up) they are torn down.
        self._given_up: dict[str, PeerLink] = {}

    # -- rooms ------------------------------------------------------------------------------

    def add_room(self, room: RoomEndpoint) -> None:
        """Register a joined room, tell every open link we are in it (unless the room is
        dormant), and bind the room to links whose peer already said it is in it."""
        self.rooms[room.token] = room
        if room.dormant:
            return
        frame = encode_presence_frame(room.token, True)
        for link in list(self.links.values()):
            link.send_nowait(frame)
            if room.token in self._info[link].remote_tokens:
                room.attach(link)

    def remove_room(self, room: RoomEndpoint, peer_ids: list[str]) -> None:
        """Unregister a room that left; send presence=0 to its peers and close links that no
        longer serve any local room."""
        if self.rooms.get(room.token) is room:
            del self.rooms[room.token]
        frame = encode_presence_frame(room.token, False)
        for peer_id in peer_ids:
            link = self.links.get(peer_id)
            if link is not None:
                link.send_nowait(frame)
                self.release(link)
        for link, info in list(self._info.items()):
            if info.origin is room and not link.is_open:
                link.close("room left before the connection opened")
            elif not self.rooms:
                # No local room left to serve: lingering for a leaving peer's grace (see
                # release) has no purpose, and the event loop may be about to end.
                link.close("no room left on this connection")
        self._maybe_empty()

    def set_dormant(self, room: RoomEndpoint, dormant: bool) -> None:
        """Mark a passive ``room`` dormant or awake, telling every open link: presence=0
        when it goes dormant, presence=1 when it wakes (and then binding the room onto the
        links whose peer said it is in it). No-op if nothing changes; frames are sent only
        for a room registered here."""
        if room.dormant == dormant:
            return
        room.dormant = dormant
        if self.rooms.get(room.token) is not room:
            return
        frame = encode_presence_frame(room.token, not dormant)
        for link in list(self.links.values()):
            if link.is_open:
                link.send_nowait(frame)
                if not dormant and room.token in self._info[link].remote_tokens:
                    room.attach(link)

    def release(self, link: PeerLink, *, linger: bool = False) -> None:
        """Close ``link`` if its peer is in none of our rooms any more.

        With ``linger``, wait :data:`LEAVE_LINGER` seconds first (checking again then): a
        peer that sent ``@_leave`` is still in its leave grace, and Trystero would take an
        immediate close for a lost connection and re-announce. Its presence=0, which ends
        the grace, releases the link at once.
        """
        if linger:
            loop = asyncio.get_running_loop()
            loop.call_later(LEAVE_LINGER, self.release, link)
            return
        peer_id = link.remote_id
        if peer_id is not None and not any(r.has_peer(peer_id) for r in self.rooms.values()):
            link.close("no room left on this connection")
        else:
            self._retire_step(link)

    def _maybe_empty(self) -> None:
        if not self.rooms and not self._info:
            self._on_empty(self)

    # -- links ------------------------------------------------------------------------------

    def live_link(self, peer_id: str) -> PeerLink | None:
        """The open link to ``peer_id``, if any."""
        link = self.links.get(peer_id)
        return link if link is not None and link.is_open else None

    def new_link(
        self,
        origin: RoomEndpoint,
        *,
        initiator: bool,
        configuration: RTCConfiguration,
        ice_addresses: tuple[str, ...] | None,
        remote_id: str | None = None,
    ) -> PeerLink:
        """Create a link whose signalling runs in ``origin``; it binds there when open."""
        link = PeerLink(
            initiator=initiator,
            configuration=configuration,
            ice_addresses=ice_addresses,
            on_frame=self._on_frame,
            on_open=self._on_open,
            on_close=self._on_close,
            remote_id=remote_id,
            certificate=self.certificate(),
        )
        self._info[link] = _LinkInfo(origin=origin)
        return link

    def certificate(self) -> DtlsCertificate:
        """The DTLS certificate of this identity's new links: one for all of them (another
        local identity, even of the same process, has its own), renewed before it expires."""
        if self._certificate is None or self._certificate.renewal_due:
            self._certificate = DtlsCertificate.generateCertificate()
        return self._certificate

    def bound_to_live_link(self, room: RoomEndpoint, peer_id: str, *, gives_up: bool) -> bool:
        """Whether a signal from ``peer_id`` is taken care of by the open link to it: True
        when there is one that the peer still uses (``room`` is then bound onto it, and
        the signal needs nothing more); False when there is none, and the signal must be
        handled.

        A peer has given its link up when ``gives_up`` — the signal is one a peer sends
        only while it holds no connection to us: an answer to our connection offer, an
        offer or announcement addressed to us — or when the link has carried nothing from
        it for :data:`~peermesh._wire.liveness.SILENT_AFTER` seconds while it still signals
        through a relay. Trystero gives a link up without closing it (a failed
        renegotiation or a data-channel error drops the peer but leaves the
        ``RTCPeerConnection`` open), so to us it still looks alive. Such a link is closed
        here: its rooms see the peer leave, then join again on the new one. The signaller
        must ``await`` :meth:`given_up_closed` before it starts the new connection: Trystero
        0.25.4 clears whatever connection it holds to a peer when an older connection to
        that peer closes, so the old one must be gone before the new one opens.

        ``gives_up`` counts only for a peer that is not peermesh: a peermesh peer closes a
        link it gives up, and two links crossing at the start are settled by
        :meth:`_preferred`."""
        live = self.live_link(peer_id)
        if live is None:
            return False
        if live.silent_for >= SILENT_AFTER:
            reason = f"silent for {live.silent_for:.0f} s while the peer still signals"
        elif gives_up and not live.remote_is_peermesh:
            reason = "the peer gave this connection up"
        else:
            self.bind(room, live)
            return True
        self._give_up(live, reason)
        return False

    def _give_up(self, link: PeerLink, reason: str) -> None:
        logger.info("closing the connection to %s: %s", link.remote_id, reason)
        link.close(reason)
        if link.remote_id is not None:
            self._given_up = {k: v for k, v in self._given_up.items() if not v.torn_down}
            self._given_up[link.remote_id] = link

    async def given_up_closed(self, peer_id: str) -> None:
        """Return once a link to ``peer_id`` closed as given up (see
        :meth:`bound_to_live_link`) is torn down: at once if there is none, after
        :data:`GIVEN_UP_CLOSE_TIMEOUT` seconds at most (logged) if its teardown hangs."""
        link = self._given_up.pop(peer_id, None)
        if link is None:
            return
        try:
            await asyncio.wait_for(link.wait_closed(), GIVEN_UP_CLOSE_TIMEOUT)
        except TimeoutError:
            logger.info("the given-up connection to %s is still closing; going on", peer_id)

    async def still_used(self, link: PeerLink) -> bool:
        """Whether the peer still uses ``link``, an open link that looks alive (packets
        keep coming) — for a signal that a peer may send with or without a connection to us
        (a tracker hands its offers to every peer). True unless the link carried no frame
        either way for :data:`CHECK_IDLE_AFTER` seconds and the peer then does not answer
        a ping within :data:`CHECK_TIMEOUT` seconds: it gave the link up (see
        :meth:`bound_to_live_link`) and the link is closed. One check runs at a time per
        link; concurrent callers share it."""
        info = self._info.get(link)
        if info is None or not link.is_open:
            return False
        if link.idle_for < CHECK_IDLE_AFTER and info.check is None:
            return True
        if info.check is None:
            info.check = asyncio.ensure_future(self._check(link))
            info.check.add_done_callback(lambda _: setattr(info, "check", None))
        return await asyncio.shield(info.check)

    async def _check(self, link: PeerLink) -> bool:
        peer_id = link.remote_id or ""
        room = next((r for r in self.rooms.values() if r.uses(link)), None)
        if room is None:
            return True  # no room of ours uses it: nothing to ask through
        try:
            await room.ping(peer_id, timeout=CHECK_TIMEOUT)
        except PeerTimeoutError:
            self._give_up(link, "the peer stopped answering on this connection")
            return False
        except (PeerUnavailableError, RoomClosedError):
            return link.is_open
        return True

    def bind(self, room: RoomEndpoint, link: PeerLink) -> None:
        """Bind ``room`` onto an existing open link (a signal arrived from a peer we are
        already connected to through another room)."""
        if link.is_open and not room.has_peer(link.remote_id or ""):
            link.send_nowait(encode_presence_frame(room.token, True))
            room.attach(link)

    def _on_open(self, link: PeerLink) -> None:
        remote_id = link.remote_id
        info = self._info.get(link)
        if remote_id is None or info is None:
            link.close("opened without a known remote peer")
            return
        existing = self.live_link(remote_id)
        if existing is not None and existing is not link:
            self.counters.duplicate_links += 1
            if self._preferred(existing, link) is existing:
                logger.debug("duplicate connection to %s; keeping the first", remote_id)
                link.close("duplicate connection")
                if info.origin is not None:
                    self.bind(info.origin, existing)
                return
            logger.debug("duplicate connection to %s; switching to the new one", remote_id)
            # The peer makes the same choice (see _preferred) and moves its rooms too: each
            # room re-runs the admission handshake on the new link without the app seeing
            # the peer leave and join again, and switches once it passes.
            for room in list(self.rooms.values()):
                if room.has_peer(remote_id):
                    room.move_peer(remote_id, link)
            self._retire(existing)
        self.links[remote_id] = link
        for token, room in self.rooms.items():
            if not room.dormant:
                link.send_nowait(encode_presence_frame(token, True))
        origin = info.origin
        if origin is not None and self.rooms.get(origin.token) is origin:
            origin.attach(link)

    def _is_leader_link(self, link: PeerLink) -> bool:
        """Whether ``link`` is the one the smaller of the two peer ids offered."""
        return link.initiator == (self.self_id < (link.remote_id or ""))

    def _preferred(self, first: PeerLink, second: PeerLink) -> PeerLink:
        """Which of two open links to one peer to keep (``first`` is the registered one).

        Trystero keeps the first and destroys the second, whatever the other side does; so
        do we unless both links come from a peermesh peer (their SDP carries
        :data:`~peermesh._link.PEERMESH_SDP_MARKER`). Between peermesh peers a link open for
        :data:`SETTLED_AFTER` seconds is in use on both sides and is kept; otherwise both
        links are racing to open (crossing offers, or one connection per strategy) and each
        side may see them open in a different order and at different moments, so both
        peers pick by something they share, not by what each has seen so far: the leader's
        link (the smaller id's offer, wire notes §2.3), and between two of those, the one
        whose offerer's DTLS fingerprint sorts first. The rooms then move to the kept link
        without the app seeing a leave (see ``Room.move_peer``)."""
        if not (first.remote_is_peermesh and second.remote_is_peermesh):
            return first
        opened = first.opened_at
        if opened is not None and time.monotonic() - opened > SETTLED_AFTER:
            return first
        first_leads, second_leads = self._is_leader_link(first), self._is_leader_link(second)
        if first_leads != second_leads:
            return first if first_leads else second
        return first if _offerer_fingerprint(first) <= _offerer_fingerprint(second) else second

    # -- handing a link over (see the module docstring) --------------------------------------

    def _retire(self, link: PeerLink) -> None:
        info = self._info.get(link)
        if info is None or info.retirement is not None:
            return
        info.retirement = _Retirement()
        link.on_idle = self._retire_step
        self._retire_step(link)

    def _retire_step(self, link: PeerLink) -> None:
        """Send ``DRAINED`` once nothing uses ``link``; close it once both sides' are in."""
        info = self._info.get(link)
        retirement = info.retirement if info is not None else None
        if info is None or retirement is None or link.is_closed:
            return
        if not retirement.drained_sent:
            if not link.idle or any(room.uses(link) for room in self.rooms.values()):
                return
            retirement.drained_sent = True
            link.retire(encode_handover_frame(HandoverSignal.DRAINED))
            self._watch_retiring(link)
        if retirement.delivered.is_set() and info.peer_drained:
            link.close("duplicate connection")

    def _watch_retiring(self, link: PeerLink) -> None:
        """From our ``DRAINED`` on, close ``link`` once it carries no frame for
        :data:`RETIRE_IDLE` seconds (a peer that never answers must not hold it open)."""
        info = self._info.get(link)
        retirement = info.retirement if info is not None else None
        if retirement is None or link.is_closed:
            return
        if link.frames == retirement.frames_seen:
            logger.debug("%r: no frame for %g s while handing over; closing it", link, RETIRE_IDLE)
            link.close("duplicate connection")
            return
        retirement.frames_seen = link.frames
        loop = asyncio.get_running_loop()
        retirement.timer = loop.call_later(RETIRE_IDLE, self._watch_retiring, link)

    async def delivered(self, link: PeerLink) -> None:
        """Return once everything sent on ``link`` has arrived, if it is being handed over
        (at once otherwise, or once it closed). Bounded: a retired link that carries no
        frame for :data:`RETIRE_IDLE` seconds is closed."""
        info = self._info.get(link)
        if info is not None and info.retirement is not None:
            await info.retirement.delivered.wait()

    def _on_handover(self, link: PeerLink, info: _LinkInfo, frame: HandoverFrame) -> None:
        if frame.signal is HandoverSignal.DRAINED:
            info.peer_drained = True
            link.send_nowait(encode_handover_frame(HandoverSignal.DRAINED_SEEN))
        elif info.retirement is not None and info.retirement.drained_sent:
            info.retirement.delivered.set()
        self._retire_step(link)

    def _on_close(self, link: PeerLink) -> None:
        info = self._info.pop(link, None)
        if info is not None and info.retirement is not None:
            info.retirement.delivered.set()
            if info.retirement.timer is not None:
                info.retirement.timer.cancel()
        remote_id = link.remote_id
        if remote_id is not None and self.links.get(remote_id) is link:
            del self.links[remote_id]
            for room in list(self.rooms.values()):
                if room.has_peer(remote_id):
                    room.peer_gone(remote_id, link.close_reason, lost=True)
        elif (
            info is not None
            and info.retirement is None
            and info.origin is not None
            and link.sdp_exchanged
            and link.close_reason != "duplicate connection"
        ):
            info.origin.link_failed(link)
        self._maybe_empty()

    def _on_frame(self, link: PeerLink, data: bytes) -> None:
        remote_id = link.remote_id
        if remote_id is None:
            return
        try:
            frame = parse_frame(data)
        except ProtocolError as exc:
            self.counters.malformed_frames += 1
            logger.debug("dropped a malformed frame from %s: %s", remote_id, exc)
            return
        info = self._info.get(link)
        if isinstance(frame, HandoverFrame):
            if info is not None:
                self._on_handover(link, info, frame)
            return
        room = self.rooms.get(frame.token)
        if isinstance(frame, PresenceFrame):
            if info is None:
                return
            if not info.presence_rate.allow(time.monotonic()):
                self.counters.presence_rate_limited += 1
                log_once(
                    logger,
                    info.logged,
                    "presence",
                    "dropped a presence frame from %s: over the rate",
                    remote_id,
                )
                return
            if frame.present:
                if len(info.remote_tokens) < MAX_REMOTE_TOKENS:
                    info.remote_tokens.add(frame.token)
                if room is not None and not room.dormant and not room.has_peer(remote_id):
                    room.attach(link)
            else:
                info.remote_tokens.discard(frame.token)
                if room is not None and room.has_peer(remote_id):
                    room.peer_gone(remote_id, "left the room (presence)")
                self.release(link)
            return
        if room is None or not room.has_peer(remote_id):
            self.counters.frames_for_unknown_rooms += 1
            logger.debug("dropped a frame from %s for a room we are not in with it", remote_id)
            return
        room.receive_chunk(remote_id, frame.chunk, link)


_FINGERPRINT = re.compile(r"^a=fingerprint:\S+ (\S+)", re.MULTILINE)


def _offerer_fingerprint(link: PeerLink) -> str:
    description = link.pc.localDescription if link.initiator else link.pc.remoteDescription
    found = _FINGERPRINT.search(description.sdp) if description is not None else None
    return found.group(1) if found else ""


_tables: dict[tuple[str, str], SharedLinks] = {}


def shared_links(self_id: str, app_id: str) -> SharedLinks:
    """The table for ``(self_id, app_id)``, created on first use and dropped when empty."""
    key = (self_id, app_id)
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = SharedLinks(self_id, app_id, _drop_table)
    return table


def _drop_table(table: SharedLinks) -> None:
    key = (table.self_id, table.app_id)
    if _tables.get(key) is table:
        del _tables[key]
