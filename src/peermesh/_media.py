"""Media in rooms: Trystero's ``addStream``/``onPeerStream`` family over aiortc (wire notes
§5.4, §8), the asyncio half of :mod:`peermesh._wire.media`.

Three layers, each owning one thing:

* :class:`TrackFanout` — one local source track feeding any number of connections. aiortc
  reads a track from its sender's loop, so a track added to two connections would have
  each frame go to only one of them. Every connection gets its own subscription; the
  source is read while at least one subscription is live, and a subscriber that falls
  behind loses its oldest frames (at most :data:`FANOUT_QUEUE` are held), never memory.
* :class:`LinkMedia` — the media of one :class:`~peermesh._link.PeerLink`, shared by
  every room bound to it, as Trystero shares one ``RTCPeerConnection``: which local tracks
  it sends (with the rooms that asked, so a track leaves only when its last room removes
  it), the remote tracks and streams it receives, and in-band renegotiation.
* :class:`RoomMedia` — one room's view: the ``@_stream``/``@_track`` metadata it sends and
  receives, matching received tracks to that metadata, and the user's callbacks.

Renegotiation without ``negotiationneeded`` and without rollback
================================================================
aiortc 1.16 has neither, so :class:`LinkMedia` runs perfect negotiation by hand, with
Trystero's fixed roles (the link's original offerer is *impolite*, the answerer *polite*):

1. Every local change (a sender added, removed, its direction changed) bumps a
   :class:`~peermesh._wire.media.NegotiationTracker`; whenever the connection is
   ``stable`` and changes are pending, one offer covering all of them goes out as
   ``@_signal``. Changes made while an offer is in flight ride on the next one.
2. All signalling of a link — our offers, every incoming ``@_signal`` — runs one at a
   time, in arrival order, in one worker task. So a collision is simply "an offer
   arrives while our ``signalingState`` is ``have-local-offer``".
3. On a collision the impolite side ignores the remote offer; the polite side discards
   its own offer with :func:`emulate_rollback` (aiortc's private state, checked), applies
   the remote one and answers; its own changes are still pending, so it offers again
   after.
4. A renegotiation that fails never leaves the connection half-changed: an offer that gets
   no answer within :data:`RENEGOTIATION_TIMEOUT` is rolled back the same way (and not
   sent again as it was: its changes go out with the next renegotiation); a remote offer or
   answer aiortc cannot apply is undone (:class:`TransceiverState`) and our offer rolled
   back. Each failure is logged once, at WARNING; the data channel is never touched.
   An offer or answer that changes the connection's DTLS fingerprint or ICE credentials
   (:func:`~peermesh._wire.media.credentials_change`; peermesh supports no ICE restart)
   is refused before anything is done: not applied, not answered, nothing rolled back (an
   offer of ours waits for its real answer), logged once at WARNING.
5. Offers keep the header-extension ids and payload types the peer uses, and otherwise
   number them as libwebrtc does (:mod:`peermesh._wire.rtp_numbering`): a browser drops
   the connection when an offer rebinds one of its ids.
6. aiortc has no ``removeTrack`` and never ends a remote track: removing is
   ``replaceTrack(None)`` plus a direction without "send"; on the receiving side a
   section that stops sending ends its track here (``recv()`` raises
   ``MediaStreamError``, the track emits ``"ended"``) and removes it from its stream.
7. aiortc gives every sender one connection-wide msid stream id and reuses any idle
   transceiver on ``addTrack``; we set each sender's msid to its :class:`MediaStream`'s id
   and reuse only transceivers that never sent, as browsers do.

Received tracks are found by comparing the transceivers with the SDP just applied (not by
aiortc's ``track`` event, which fires before its remote description is updated): a
section whose author sends and whose ``a=msid`` names a stream yields a track in that
stream. A section without a stream id is ignored, as Trystero ignores a track without
``event.streams[0]``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ._events import PeerStream, PeerTrack
from ._wire import media as wire
from ._wire.actions import encode_payload
from ._wire.rtp_numbering import RtpNumbering
from .errors import (
    PeerTimeoutError,
    PeerUnavailableError,
    ProtocolError,
    RoomClosedError,
    UsageError,
)
from .media import MediaStream

if TYPE_CHECKING:
    from ._link import PeerLink

__all__ = [
    "FANOUT_QUEUE",
    "MAX_PENDING_METAS",
    "RENEGOTIATION_TIMEOUT",
    "LinkMedia",
    "RoomMedia",
    "TrackFanout",
    "emulate_rollback",
    "link_media",
]

logger = logging.getLogger(__name__)

#: Frames a connection's sender may fall behind its source before the oldest is dropped.
FANOUT_QUEUE = 4
#: ``@_stream`` / ``@_track`` metadata held per peer and room, waiting for its track.
MAX_PENDING_METAS = 64
#: Remote keys, stream ids and track ids remembered per connection (Trystero's media cache).
MAX_REMEMBERED = 256
#: Incoming ``@_signal`` messages waiting to be applied, per connection.
MAX_SIGNAL_BACKLOG = 64
#: An offer with no answer after this long is rolled back; its changes go out with the
#: next renegotiation (see :meth:`LinkMedia._roll_back_unanswered`).
RENEGOTIATION_TIMEOUT = 10.0
#: Longest accepted stream id in a remote ``a=msid`` line.
_MAX_STREAM_ID = 256


# -- aiortc glue -------------------------------------------------------------------------------

#: Name prefix of ``RTCPeerConnection``'s private attributes (aiortc 1.16).
_PRIVATE = "_RTCPeerConnection__"


def emulate_rollback(pc: Any) -> bool:
    """Discard ``pc``'s pending local offer, as ``setLocalDescription({type: "rollback"})``
    would in a browser; aiortc 1.16 has no rollback.

    Works on aiortc's private state: the pending local description is dropped, the
    signalling state goes back to ``stable``, and transceivers that only the discarded offer
    had given a mid lose it again (so a following remote offer can match them, or the next
    local offer re-assigns them). Returns ``False`` and changes nothing unless the state is
    ``have-local-offer``. Raises :class:`RuntimeError` if aiortc's internals are not as
    expected (another aiortc version).
    """
    if pc.signalingState != "have-local-offer":
        return False
    try:
        pending = getattr(pc, _PRIVATE + "pendingLocalDescription")
        current = (
            getattr(pc, _PRIVATE + "currentLocalDescription"),
            getattr(pc, _PRIVATE + "currentRemoteDescription"),
        )
        seen_mids = getattr(pc, _PRIVATE + "seenMids")
        set_state = getattr(pc, _PRIVATE + "setSignalingState")
    except AttributeError as exc:
        raise RuntimeError(f"unsupported aiortc internals: {exc}") from exc
    known = {m.rtp.muxId for d in current if d is not None for m in d.media}
    fresh = {m.rtp.muxId for m in pending.media} - known if pending is not None else set()
    for transceiver in pc.getTransceivers():
        if transceiver.mid in fresh:
            transceiver._set_mid(None)
            transceiver._set_mline_index(None)
    seen_mids.difference_update(fresh)
    setattr(pc, _PRIVATE + "pendingLocalDescription", None)
    set_state("stable")
    return True


class TransceiverState:
    """What aiortc's ``setRemoteDescription`` may have changed when it fails: it assigns
    mids, creates transceivers and sets their codecs while it walks the m-sections, then
    raises at the first it cannot take (``OperationError`` for a section without a common
    codec), leaving the connection half-changed. That walk runs without yielding to the
    event loop, so a state taken right before the call and restored after a failure undoes
    exactly what the call did. Raises :class:`RuntimeError` if aiortc's internals are not
    as expected (another aiortc version)."""

    def __init__(self, pc: Any) -> None:
        try:
            self._transceivers: list[Any] = getattr(pc, _PRIVATE + "transceivers")
            self._seen_mids: set[str] = getattr(pc, _PRIVATE + "seenMids")
        except AttributeError as exc:
            raise RuntimeError(f"unsupported aiortc internals: {exc}") from exc
        self._list = list(self._transceivers)
        self._mids = set(self._seen_mids)
        self._fields = [
            (
                t,
                t.mid,
                t._get_mline_index(),
                list(t._codecs),
                list(t._headerExtensions),
                t._offerDirection,
                t.receiver._track,
            )
            for t in self._transceivers
        ]

    def restore(self) -> None:
        """Put the transceivers, their mids and codecs back as they were."""
        self._transceivers[:] = self._list
        self._seen_mids.clear()
        self._seen_mids.update(self._mids)
        for t, mid, index, codecs, extensions, direction, track in self._fields:
            t._set_mid(mid)
            t._set_mline_index(index)
            t._codecs = codecs
            t._headerExtensions = extensions
            t._offerDirection = direction
            t.receiver._track = track


def emulate_remote_rollback(pc: Any) -> bool:
    """Discard ``pc``'s pending remote offer (state ``have-remote-offer``), as a rollback
    would in a browser; see :func:`emulate_rollback` (and :class:`TransceiverState` for
    the transceivers). Returns ``False`` and changes nothing in another state."""
    if pc.signalingState != "have-remote-offer":
        return False
    try:
        set_state = getattr(pc, _PRIVATE + "setSignalingState")
        getattr(pc, _PRIVATE + "pendingRemoteDescription")
    except AttributeError as exc:
        raise RuntimeError(f"unsupported aiortc internals: {exc}") from exc
    setattr(pc, _PRIVATE + "pendingRemoteDescription", None)
    set_state("stable")
    return True


async def create_offer(pc: Any, numbering: RtpNumbering) -> str:
    """``pc.createOffer()``, keeping what is already negotiated and numbering the rest the
    way the remote does (:mod:`peermesh._wire.rtp_numbering`).

    aiortc builds every offer from its default codec list, with its own payload types and
    header-extension ids, even for m-sections the remote's offer negotiated with other
    numbers. Sections that are already negotiated keep their negotiated codecs and
    extensions here, as JSEP asks; new ones are renumbered by ``numbering``. The
    transceivers are given the same numbers, which RTP then uses.
    """
    from aiortc import sdp

    negotiated = {
        t.mid: (list(t._codecs), list(t._headerExtensions))
        for t in pc.getTransceivers()
        if t.mid is not None and t._codecs
    }
    offer = await pc.createOffer()
    description = sdp.SessionDescription.parse(offer.sdp)
    description.type = "offer"
    for media in description.media:
        kept = negotiated.get(media.rtp.muxId)
        if kept is None:
            continue
        codecs, extensions = kept
        media.rtp.codecs = codecs
        media.rtp.headerExtensions = extensions
        media.fmt = [codec.payloadType for codec in codecs]
        if not any(codec.mimeType.lower().endswith("/rtx") for codec in codecs):
            media.ssrc = media.ssrc[:1]
            media.ssrc_group = []
    numbering.number_offer(description, set(negotiated))
    for transceiver in pc.getTransceivers():
        index = transceiver._get_mline_index()  # createOffer gives every transceiver one
        if index is not None and description.media[index].kind == transceiver.kind:
            section = description.media[index]
            transceiver._codecs = list(section.rtp.codecs)
            transceiver._headerExtensions = list(section.rtp.headerExtensions)
    return str(description)


def _end_remote_track(track: MediaStreamTrack) -> None:
    """End an aiortc remote track: a waiting ``recv()`` raises ``MediaStreamError``."""
    queue = getattr(track, "_queue", None)
    if isinstance(queue, asyncio.Queue):
        queue.put_nowait(None)
    track.stop()


# -- one source, many connections --------------------------------------------------------------


class _FanoutTrack(MediaStreamTrack):
    """One connection's subscription to a :class:`TrackFanout`."""

    def __init__(self, fanout: TrackFanout) -> None:
        super().__init__()
        self.kind = fanout.source.kind
        self._fanout: TrackFanout | None = fanout
        self._frames: deque[Any] = deque(maxlen=FANOUT_QUEUE)
        self._wakeup = asyncio.Event()
        self._source_ended = False

    def _push(self, frame: Any) -> None:
        self._frames.append(frame)
        self._wakeup.set()

    def _end(self) -> None:
        self._source_ended = True
        self._wakeup.set()

    async def recv(self) -> Any:
        while not self._frames:
            if self.readyState != "live" or self._source_ended or self._fanout is None:
                self.stop()
                raise MediaStreamError
            self._fanout._start()
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._frames.popleft()

    def switch(self, fanout: TrackFanout) -> None:
        """Take frames from ``fanout`` from now on (``replace_track``): the connection's
        sender keeps reading this same track, so nothing is renegotiated."""
        old, self._fanout = self._fanout, fanout
        fanout._subscribers.add(self)
        if old is not None:
            old._unsubscribe(self)
        self._frames.clear()
        self._source_ended = False
        fanout._start()

    def stop(self) -> None:
        super().stop()
        fanout, self._fanout = self._fanout, None
        if fanout is not None:
            fanout._unsubscribe(self)
        self._wakeup.set()


class TrackFanout:
    """Feeds one local ``source`` track to many subscriptions (one per connection).

    Get it with :meth:`of`. The source is read only while a subscription is live and has
    been read from; when the last subscription stops, reading stops too (the source itself
    is not stopped: it belongs to the application). When the source ends, every
    subscription ends.
    """

    _all: ClassVar[dict[MediaStreamTrack, TrackFanout]] = {}

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self._subscribers: set[_FanoutTrack] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, source: MediaStreamTrack) -> TrackFanout:
        fanout = cls._all.get(source)
        if fanout is None:
            fanout = cls._all[source] = cls(source)
        return fanout

    def subscribe(self) -> _FanoutTrack:
        subscriber = _FanoutTrack(self)
        self._subscribers.add(subscriber)
        return subscriber

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._pump())

    def _unsubscribe(self, subscriber: _FanoutTrack) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            if TrackFanout._all.get(self.source) is self:
                del TrackFanout._all[self.source]

    async def _pump(self) -> None:
        try:
            while self._subscribers:
                frame = await self.source.recv()
                for subscriber in self._subscribers:
                    subscriber._push(frame)
        except MediaStreamError:
            pass
        except Exception:
            logger.exception("media source %r failed", self.source)
        for subscriber in list(self._subscribers):
            subscriber._end()


# -- one connection ----------------------------------------------------------------------------


class MediaRoom(Protocol):
    """What :class:`LinkMedia` needs from a room (implemented by :class:`RoomMedia`)."""

    token: str

    async def send_signal(self, peer_id: str, payload: dict[str, str]) -> None: ...
    def remote_track(self, peer_id: str, track: MediaStreamTrack, stream: MediaStream) -> None: ...


@dataclass(eq=False)
class _Sending:
    """A local track sent on one connection: its subscription, transceiver, and the rooms
    (tokens) that asked for it."""

    source: MediaStreamTrack
    proxy: _FanoutTrack
    transceiver: Any
    rooms: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Receiving:
    track: MediaStreamTrack
    stream: MediaStream


class LinkMedia:
    """The media of one connection; obtain it with :func:`link_media`. See the module
    docstring for the renegotiation rules. Methods that change what is sent apply the
    change at once and renegotiate in the background."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.polite = not link.initiator
        self._tracker = wire.NegotiationTracker()
        self._rooms: list[MediaRoom] = []  # rooms with this peer active, control room first
        self._sending: dict[MediaStreamTrack, _Sending] = {}
        self._sent_on: weakref.WeakSet[Any] = weakref.WeakSet()  # transceivers that sent
        self._receiving: dict[str, _Receiving] = {}  # by mid
        self._streams: dict[str, MediaStream] = {}  # remote streams by id
        self._signals: deque[wire.RenegotiationSignal] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._offer_wanted = False
        self._offer_timed_out = False
        self._offer_timer: asyncio.TimerHandle | None = None
        #: Header-extension ids and payload types the remote uses, kept in our offers.
        self.numbering = RtpNumbering()
        #: Trystero's shared media cache: remote stream/track by key or id, once announced.
        self.remembered_streams: OrderedDict[str, MediaStream] = OrderedDict()
        self.remembered_tracks: OrderedDict[str, tuple[MediaStreamTrack, MediaStream]] = (
            OrderedDict()
        )
        self.dropped_signals = 0

    def __repr__(self) -> str:
        return f"<LinkMedia {self.link.remote_id}>"

    # -- rooms --------------------------------------------------------------------------------

    def bind(self, room: MediaRoom) -> None:
        """``room`` has this link's peer active: it may carry signals and gets tracks."""
        if room not in self._rooms:
            self._rooms.append(room)
            if self._tracker.pending:
                self._want_offer()

    def unbind(self, room: MediaRoom) -> None:
        """``room`` lost this peer: stop sending what only it asked for; when no room is
        left (or the link closed), end every received track."""
        if room in self._rooms:
            self._rooms.remove(room)
        for source in [s for s, sending in self._sending.items() if room.token in sending.rooms]:
            self.remove(room.token, source)
        if not self._rooms or self.link.is_closed:
            self._close()

    def _close(self) -> None:
        for receiving in self._receiving.values():
            _end_remote_track(receiving.track)
        self._receiving.clear()
        self._streams.clear()
        for sending in self._sending.values():
            sending.proxy.stop()
        self._sending.clear()
        if self._offer_timer is not None:
            self._offer_timer.cancel()
            self._offer_timer = None
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if _links.get(self.link) is self:
            del _links[self.link]

    # -- local changes ------------------------------------------------------------------------

    def add(self, room_token: str, source: MediaStreamTrack, stream_id: str) -> None:
        """Send ``source`` (as part of stream ``stream_id``) on this connection for the room
        ``room_token``; a track already sent here just gains the room."""
        sending = self._sending.get(source)
        if sending is None:
            if self.link.is_closed:
                raise PeerUnavailableError(f"connection to {self.link.remote_id} is closed")
            proxy = TrackFanout.of(source).subscribe()
            transceiver = self._idle_transceiver(source.kind)
            if transceiver is None:
                transceiver = self.link.pc.addTransceiver(proxy, "sendrecv")
            else:
                transceiver.sender.replaceTrack(proxy)
                transceiver.direction = (
                    "sendrecv" if transceiver.direction in ("recvonly", "sendrecv") else "sendonly"
                )
            transceiver.sender._stream_id = stream_id
            transceiver.sender._track_id = source.id
            self._sent_on.add(transceiver)
            sending = self._sending[source] = _Sending(source, proxy, transceiver)
            self._changed()
        sending.rooms.add(room_token)

    def _idle_transceiver(self, kind: str) -> Any:
        """A transceiver of ``kind`` the remote offered us that never sent (browsers reuse
        only those on ``addTrack``)."""
        for transceiver in self.link.pc.getTransceivers():
            if (
                transceiver.kind == kind
                and transceiver.sender.track is None
                and not transceiver.stopped
                and transceiver not in self._sent_on
            ):
                return transceiver
        return None

    def remove(self, room_token: str, source: MediaStreamTrack) -> None:
        """Stop sending ``source`` for ``room_token``; it leaves the connection when no room
        wants it any more. No-op if it is not sent for that room."""
        sending = self._sending.get(source)
        if sending is None or room_token not in sending.rooms:
            return
        sending.rooms.discard(room_token)
        if sending.rooms:
            return
        del self._sending[source]
        transceiver = sending.transceiver
        transceiver.sender.replaceTrack(None)
        transceiver.direction = {"sendrecv": "recvonly", "sendonly": "inactive"}.get(
            transceiver.direction, transceiver.direction
        )
        sending.proxy.stop()
        self._changed()

    def replace(self, old: MediaStreamTrack, new: MediaStreamTrack) -> bool:
        """Send ``new`` where ``old`` was sent, through the same sender (no renegotiation;
        the SDP keeps ``old``'s track id). Returns False if ``old`` is not sent here.

        Raises :class:`UsageError` if ``new`` is already sent on this connection."""
        sending = self._sending.get(old)
        if sending is None:
            return False
        if new is old:
            return True
        if new in self._sending:
            raise UsageError(f"{new!r} is already sent to {self.link.remote_id}")
        del self._sending[old]
        sending.proxy.switch(TrackFanout.of(new))
        sending.source = new
        self._sending[new] = sending
        return True

    def _changed(self) -> None:
        self._tracker.changed()
        self._want_offer()

    # -- the signalling worker ----------------------------------------------------------------

    def receive_signal(self, value: object) -> None:
        """Queue a received ``@_signal`` payload. Raises :class:`ProtocolError` if it is
        malformed; one beyond :data:`MAX_SIGNAL_BACKLOG` waiting is dropped (logged)."""
        signal = wire.parse_signal(value)
        if len(self._signals) >= MAX_SIGNAL_BACKLOG:
            self.dropped_signals += 1
            logger.warning("%r: dropped a renegotiation signal (backlog full)", self)
            return
        self._signals.append(signal)
        self._run()

    def _want_offer(self) -> None:
        self._offer_wanted = True
        self._run()

    def _run(self) -> None:
        if self._worker is None and not self.link.is_closed:
            self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        """The one task that touches this connection's signalling, one step at a time."""
        try:
            while not self.link.is_closed:
                if self._signals:
                    await self._apply(self._signals.popleft())
                elif self._offer_timed_out:
                    self._offer_timed_out = False
                    self._roll_back_unanswered()
                elif self._offer_wanted:
                    self._offer_wanted = False
                    await self._offer()
                else:
                    break
        except (PeerUnavailableError, asyncio.CancelledError):
            pass  # the link or its last room went away meanwhile
        except PeerTimeoutError as exc:
            logger.info("%r: renegotiation stalled: %s", self, exc)
        except Exception:
            logger.exception("%r: renegotiation failed", self)
        finally:
            if self._worker is asyncio.current_task():
                self._worker = None

    async def _send_signal(self, kind: wire.SignalType, sdp: str) -> None:
        """Send an offer or answer in the control room (the first bound, as Trystero), or
        the next one if that room is being left. Raises :class:`PeerUnavailableError` when
        no room is left to carry it."""
        payload = wire.encode_signal(kind, sdp)
        for room in list(self._rooms):
            try:
                await room.send_signal(self.link.remote_id or "", payload)
                return
            except RoomClosedError:
                continue
        raise PeerUnavailableError(f"no room left to renegotiate with {self.link.remote_id}")

    async def _offer(self) -> None:
        pc = self.link.pc
        if not self._rooms or not self._tracker.needs_offer(pc.signalingState):
            return
        self._tracker.offer_made()
        try:
            sdp = await self.link.describe_local(await create_offer(pc, self.numbering))
        except ProtocolError as exc:
            emulate_rollback(pc)
            self._failed(f"could not make an offer: {exc}")
            return
        await self._send_signal(wire.SignalType.OFFER, sdp)
        logger.debug("%r: sent a media offer", self)
        loop = asyncio.get_running_loop()
        self._offer_timer = loop.call_later(RENEGOTIATION_TIMEOUT, self._offer_expired)

    def _offer_expired(self) -> None:
        self._offer_timer = None
        self._offer_timed_out = True
        self._run()

    def _roll_back_unanswered(self) -> None:
        """Our offer got no answer: the peer could not apply it (a browser says why only
        in its own console) or dropped it. Sending it again would fail the same way, so it
        is rolled back and its changes stay pending: they go out with the next local change,
        or after the peer's next offer."""
        if emulate_rollback(self.link.pc):
            self._failed(
                f"no answer to our media offer within {RENEGOTIATION_TIMEOUT:g} s "
                "(the peer could not apply it)"
            )

    def _failed(self, reason: str) -> None:
        """A renegotiation failed and was rolled back; the data channel is unaffected."""
        logger.warning("%r: media renegotiation failed, rolled back: %s", self, reason)

    def _stop_offer_timer(self) -> None:
        if self._offer_timer is not None:
            self._offer_timer.cancel()
            self._offer_timer = None

    async def _apply(self, signal: wire.RenegotiationSignal) -> None:
        if signal.type is wire.SignalType.CANDIDATE:
            try:
                await self.link.add_remote_candidate(wire.parse_candidate(signal.sdp))
            except ProtocolError as exc:
                logger.debug("%r: dropped a renegotiation candidate: %s", self, exc)
            return
        pc = self.link.pc
        has_media = wire.has_media_codecs(signal.sdp)
        if has_media:
            # Also an offer ignored below: its author rolls it back to take ours, but a
            # browser keeps the numbers it chose (see peermesh._wire.rtp_numbering).
            self.numbering.observe(signal.sdp)
        step = wire.decide(
            signal.type,
            polite=self.polite,
            signaling_state=pc.signalingState,
            has_media=has_media,
        )
        logger.debug("%r: remote %s -> %s", self, signal.type.value, step.value)
        if step is wire.Step.IGNORE:
            return
        current = pc.remoteDescription
        refusal = wire.credentials_change(current.sdp, signal.sdp) if current else None
        if refusal is not None:
            logger.warning("%r: refused the peer's %s: %s", self, signal.type.value, refusal)
            return
        if step is wire.Step.ROLLBACK_THEN_APPLY_OFFER:
            self._stop_offer_timer()
            emulate_rollback(pc)
        before = TransceiverState(pc)
        try:
            await self.link.apply_remote(signal.sdp, signal.type.value)
        except ProtocolError as exc:
            before.restore()
            if step is wire.Step.APPLY_ANSWER:
                self._stop_offer_timer()
                emulate_rollback(pc)
            self._failed(f"could not apply the peer's {signal.type.value}: {exc}")
            return
        if step is wire.Step.APPLY_ANSWER:
            self._stop_offer_timer()
            self._tracker.answer_applied()
            self._sync_received(signal.sdp)
        else:
            try:
                answer = await self.link.describe_local()
            except ProtocolError as exc:
                before.restore()
                emulate_remote_rollback(pc)
                self._failed(f"could not answer the peer's offer: {exc}")
                return
            self._sync_received(signal.sdp)
            await self._send_signal(wire.SignalType.ANSWER, answer)
        if self._tracker.pending:
            self._offer_wanted = True

    # -- received media -----------------------------------------------------------------------

    def _sync_received(self, remote_sdp: str) -> None:
        """Compare the transceivers with the remote SDP just applied: new sending sections
        become tracks of their streams (then announced to the rooms), sections that stopped
        sending end their tracks."""
        by_mid = {t.mid: t for t in self.link.pc.getTransceivers() if t.mid is not None}
        new: list[_Receiving] = []
        for section in wire.media_sections(remote_sdp):
            known = self._receiving.get(section.mid)
            if not section.sends:
                if known is not None:
                    self._end(section.mid)
                continue
            transceiver = by_mid.get(section.mid)
            track = transceiver.receiver.track if transceiver is not None else None
            if known is not None or track is None or track.readyState != "live":
                continue
            stream_id = section.stream_id
            if stream_id is None or len(stream_id) > _MAX_STREAM_ID:
                logger.debug("%r: ignoring a remote track without a stream id", self)
                continue
            stream = self._streams.get(stream_id)
            if stream is None:
                stream = self._streams[stream_id] = MediaStream._remote(stream_id)
            stream.add_track(track)
            receiving = self._receiving[section.mid] = _Receiving(track, stream)
            new.append(receiving)
        peer_id = self.link.remote_id or ""
        for receiving in new:
            for room in list(self._rooms):
                room.remote_track(peer_id, receiving.track, receiving.stream)

    def _end(self, mid: str) -> None:
        receiving = self._receiving.pop(mid)
        receiving.stream.remove_track(receiving.track)
        if not receiving.stream.get_tracks() and self._streams.get(receiving.stream.id) is (
            receiving.stream
        ):
            del self._streams[receiving.stream.id]
        _end_remote_track(receiving.track)

    def live_stream(self, stream_id: str | None) -> MediaStream | None:
        return self._streams.get(stream_id) if stream_id is not None else None

    def live_track(self, track_id: str | None) -> tuple[MediaStreamTrack, MediaStream] | None:
        for receiving in self._receiving.values():
            if track_id is not None and receiving.track.id == track_id:
                return receiving.track, receiving.stream
        return None

    @staticmethod
    def remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        """Remember ``value`` under the remote ``key`` (bounded, oldest forgotten first)."""
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > MAX_REMEMBERED:
            cache.popitem(last=False)


_links: weakref.WeakKeyDictionary[PeerLink, LinkMedia] = weakref.WeakKeyDictionary()


def link_media(link: PeerLink) -> LinkMedia:
    """The :class:`LinkMedia` of ``link``, created on first use."""
    media = _links.get(link)
    if media is None:
        media = _links[link] = LinkMedia(link)
    return media


# -- one room ----------------------------------------------------------------------------------


class MediaHost(Protocol):
    """What :class:`RoomMedia` needs from its room (implemented by :class:`peermesh.Room`)."""

    token: str

    def _media_targets(self, target: str | Sequence[str] | None) -> list[tuple[str, PeerLink]]: ...
    async def _send_internal(self, name: str, value: object, peer_id: str) -> None: ...
    def _invoke(self, callback: Callable[..., Any], *args: object) -> None: ...
    def _publish(self, event: Any) -> None: ...
    def _is_active(self, peer_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Announced:
    """A stream a peer announced and we matched: replayed to late ``on_peer_stream``."""

    stream: MediaStream
    metadata: object


class RoomMedia:
    """Media of one room: see :class:`peermesh.Room` for the public contract."""

    def __init__(self, host: MediaHost) -> None:
        self._host = host
        self.token = host.token
        self._stream_keys: weakref.WeakKeyDictionary[MediaStream, str] = weakref.WeakKeyDictionary()
        self._track_keys: weakref.WeakKeyDictionary[MediaStreamTrack, str] = (
            weakref.WeakKeyDictionary()
        )
        self._pending_streams: dict[str, deque[wire.MediaMeta]] = {}
        self._pending_tracks: dict[str, deque[wire.MediaMeta]] = {}
        self._announced: dict[tuple[str, str], _Announced] = {}
        self._on_stream: list[Callable[..., Any]] = []
        self._on_track: list[Callable[..., Any]] = []
        self._links: dict[str, LinkMedia] = {}
        self.dropped_metas = 0

    # -- sending ------------------------------------------------------------------------------

    def _key(self, cache: weakref.WeakKeyDictionary[Any, str], item: Any) -> str:
        key = cache.get(item)
        if key is None:
            key = cache[item] = wire.new_media_key()
        return key

    async def add_stream(
        self, stream: MediaStream, target: str | Sequence[str] | None, metadata: object
    ) -> None:
        _check_stream(stream)
        key = self._key(self._stream_keys, stream)
        payload = wire.encode_stream_meta(key, stream.id, _meta(metadata))

        async def one(peer_id: str, link: PeerLink) -> None:
            await self._host._send_internal(wire.STREAM_ACTION, payload, peer_id)
            media = self._link(peer_id, link)
            for track in stream.get_tracks():
                media.add(self.token, track, stream.id)

        await self._each(target, payload, one)

    async def add_track(
        self,
        track: MediaStreamTrack,
        stream: MediaStream,
        target: str | Sequence[str] | None,
        metadata: object,
    ) -> None:
        _check_track(track)
        _check_stream(stream)
        key = self._key(self._track_keys, track)
        payload = wire.encode_track_meta(key, stream.id, track.id, _meta(metadata))

        async def one(peer_id: str, link: PeerLink) -> None:
            await self._host._send_internal(wire.TRACK_ACTION, payload, peer_id)
            self._link(peer_id, link).add(self.token, track, stream.id)

        await self._each(target, payload, one)

    async def replace_track(
        self,
        old: MediaStreamTrack,
        new: MediaStreamTrack,
        target: str | Sequence[str] | None,
        metadata: object,
    ) -> None:
        _check_track(old)
        _check_track(new)
        if old.kind != new.kind:
            raise UsageError(f"cannot replace a {old.kind} track with a {new.kind} track")
        key = self._key(self._track_keys, new)
        payload = wire.encode_replace_meta(key, old.id, _meta(metadata))

        async def one(peer_id: str, link: PeerLink) -> None:
            await self._host._send_internal(wire.TRACK_ACTION, payload, peer_id)
            self._link(peer_id, link).replace(old, new)

        await self._each(target, payload, one)

    def remove_tracks(
        self, tracks: Iterable[MediaStreamTrack], target: str | Sequence[str] | None
    ) -> None:
        tracks = list(tracks)
        for peer_id, _ in self._host._media_targets(target):
            media = self._links.get(peer_id)
            if media is not None:
                for track in tracks:
                    media.remove(self.token, track)

    async def _each(
        self,
        target: str | Sequence[str] | None,
        payload: dict[str, object],
        one: Callable[[str, PeerLink], Awaitable[None]],
    ) -> None:
        encode_payload(payload)  # TypeError for metadata that is not JSON, before any send
        targets = self._host._media_targets(target)
        results = await asyncio.gather(
            *(one(peer_id, link) for peer_id, link in targets), return_exceptions=True
        )
        for result in results:
            if isinstance(result, PeerUnavailableError) and target is None:
                continue  # a peer of a broadcast left meanwhile
            if isinstance(result, BaseException):
                raise result

    async def send_signal(self, peer_id: str, payload: dict[str, str]) -> None:
        await self._host._send_internal(wire.SIGNAL_ACTION, payload, peer_id)

    # -- peers --------------------------------------------------------------------------------

    def _link(self, peer_id: str, link: PeerLink) -> LinkMedia:
        media = self._links.get(peer_id)
        if media is None or media.link is not link:
            media = self._links[peer_id] = link_media(link)
            media.bind(self)
        return media

    def peer_active(self, peer_id: str, link: PeerLink) -> None:
        self._link(peer_id, link)

    def peer_gone(self, peer_id: str) -> None:
        media = self._links.pop(peer_id, None)
        if media is not None:
            media.unbind(self)
        self._pending_streams.pop(peer_id, None)
        self._pending_tracks.pop(peer_id, None)
        for key in [k for k in self._announced if k[0] == peer_id]:
            del self._announced[key]

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, name: str, peer_id: str, value: object) -> None:
        """An ``@_signal``, ``@_stream`` or ``@_track`` from an active peer. Raises
        :class:`ProtocolError` for a malformed one."""
        media = self._links.get(peer_id)
        if media is None:
            return
        if name == wire.SIGNAL_ACTION:
            media.receive_signal(value)
            return
        meta = wire.parse_media_meta(value)
        if name == wire.STREAM_ACTION:
            stream = media.remembered_streams.get(meta.key) or media.live_stream(meta.stream_id)
            if stream is not None:
                self._emit_stream(peer_id, media, meta, stream)
            else:
                self._hold(self._pending_streams, peer_id, meta)
        else:
            found = media.remembered_tracks.get(meta.key) or media.live_track(meta.track_id)
            if found is not None:
                self._emit_track(peer_id, media, meta, *found)
            else:
                self._hold(self._pending_tracks, peer_id, meta)

    def pending(self, peer_id: str) -> int:
        """``@_stream`` and ``@_track`` announcements from ``peer_id`` waiting for a track."""
        return len(self._pending_streams.get(peer_id, ())) + len(
            self._pending_tracks.get(peer_id, ())
        )

    def _hold(
        self, pending: dict[str, deque[wire.MediaMeta]], peer_id: str, meta: wire.MediaMeta
    ) -> None:
        queue = pending.setdefault(peer_id, deque())
        if len(queue) >= MAX_PENDING_METAS:
            queue.popleft()
            self.dropped_metas += 1
            logger.debug("dropped the oldest unmatched media metadata from %s", peer_id)
        queue.append(meta)

    def remote_track(self, peer_id: str, track: MediaStreamTrack, stream: MediaStream) -> None:
        """A new track from ``peer_id`` (called by :class:`LinkMedia`): match it with the
        oldest pending ``@_track`` and ``@_stream`` metadata, as Trystero does."""
        media = self._links.get(peer_id)
        if media is None or not self._host._is_active(peer_id):
            return
        tracks = self._pending_tracks.get(peer_id)
        if tracks:
            self._emit_track(peer_id, media, tracks.popleft(), track, stream)
        streams = self._pending_streams.get(peer_id)
        if streams:
            self._emit_stream(peer_id, media, streams.popleft(), stream)

    def _emit_stream(
        self, peer_id: str, media: LinkMedia, meta: wire.MediaMeta, stream: MediaStream
    ) -> None:
        media.remember(media.remembered_streams, meta.key, stream)
        metadata = _user_meta(meta)
        self._announced[(peer_id, stream.id)] = _Announced(stream, metadata)
        self._host._publish(PeerStream(stream, peer_id, metadata))
        for callback in self._on_stream:
            self._host._invoke(callback, stream, peer_id, metadata)

    def _emit_track(
        self,
        peer_id: str,
        media: LinkMedia,
        meta: wire.MediaMeta,
        track: MediaStreamTrack,
        stream: MediaStream,
    ) -> None:
        media.remember(media.remembered_tracks, meta.key, (track, stream))
        metadata = _user_meta(meta)
        self._host._publish(PeerTrack(track, stream, peer_id, metadata))
        for callback in self._on_track:
            self._host._invoke(callback, track, stream, peer_id, metadata)

    def on_peer_stream(self, callback: Callable[..., Any]) -> None:
        self._on_stream.append(callback)
        for (peer_id, _), announced in list(self._announced.items()):
            if announced.stream.get_tracks():
                self._host._invoke(callback, announced.stream, peer_id, announced.metadata)

    def on_peer_track(self, callback: Callable[..., Any]) -> None:
        self._on_track.append(callback)

    def close(self) -> None:
        for peer_id in list(self._links):
            self.peer_gone(peer_id)


def _meta(metadata: object) -> object:
    return wire.NO_METADATA if metadata is None else metadata


def _user_meta(meta: wire.MediaMeta) -> object:
    return meta.metadata if meta.has_metadata else None


def _check_stream(stream: object) -> None:
    if not isinstance(stream, MediaStream):
        raise UsageError(f"expected a peermesh.media.MediaStream, got {stream!r}")


def _check_track(track: object) -> None:
    if not isinstance(track, MediaStreamTrack) or track.kind not in ("audio", "video"):
        raise UsageError(f"{track!r} is not an audio or video MediaStreamTrack")
