"""Rooms and actions: the asyncio face of peermesh.

A :class:`Room` is one ``(app_id, room_id)`` joined by one local identity. Its peers are
links (see :mod:`peermesh._link`) bound to it; each peer is *pending* until the admission
handshake of wire notes §7 completes in both directions, and only then *active*: visible to
``on_peer_join``, ``get_peers()``, sends and pings. Frames from pending peers other than
handshake and leave frames are dropped, as Trystero does.

Callbacks may be plain functions or coroutine functions. A callback that raises is logged
(at ERROR, with the traceback) and never disturbs the room.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from aiortc import RTCConfiguration, RTCPeerConnection

from ._events import DEFAULT_QUEUE_LIMIT, ActionMessage, EventQueue, PeerJoined, PeerLeft, RoomEvent
from ._limits import DEFAULT_LIMITS, Limits, RateLimit, budget_for, log_once
from ._link import PeerLink, wait_links_closed
from ._media import RoomMedia
from ._requests import DEFAULT_REQUEST_TIMEOUT, RequestAction, RequestManager
from ._rpc import Rpc
from ._shared import SharedLinks
from ._signalling import Signaller
from ._wire import actions as wire
from ._wire.frames import room_frame_prefix
from ._wire.sealing import (
    PasswordChallenge,
    PasswordResponse,
    check_password_proof,
    derive_key,
    make_password_challenge,
    make_password_response,
    parse_password_message,
)
from ._wire.streams import DEFAULT_WINDOW, DEFAULT_WRITE_LIMIT
from ._wire.topics import room_token
from .errors import (
    HandshakeError,
    PeerTimeoutError,
    PeerUnavailableError,
    ProtocolError,
    RoomClosedError,
    UsageError,
)

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

    from ._sockets import PeerSocket, StreamReader, StreamWriter
    from .media import MediaStream

__all__ = [
    "Action",
    "HandshakeHook",
    "HandshakeReceive",
    "HandshakeSend",
    "JoinErrorEvent",
    "Room",
    "RoomCounters",
]

logger = logging.getLogger(__name__)

Callback = Callable[..., Any]
C = TypeVar("C", bound=Callback)

#: ``await send(data, metadata=None)`` inside a handshake hook: one ``@_hsdata`` message.
HandshakeSend = Callable[..., Awaitable[None]]
#: ``data, metadata = await receive()`` inside a handshake hook: the peer's next message.
HandshakeReceive = Callable[[], Awaitable[tuple[Any, Any]]]
#: ``hook(peer_id, send, receive, is_initiator)``, sync or async: the admission check of
#: Trystero's ``onPeerHandshake``. Returning admits the peer (once it has admitted us too);
#: raising rejects it, and ``str(exception)`` becomes the :class:`JoinErrorEvent` error.
#: ``is_initiator`` is true on the side with the smaller peer id.
HandshakeHook = Callable[[str, HandshakeSend, HandshakeReceive, bool], Any]

#: Default time a peer has to complete the admission handshake (Trystero: 10 s).
HANDSHAKE_TIMEOUT = 10.0
#: Default time ``ping`` waits for the pong.
PING_TIMEOUT = 10.0
#: Time between sending ``@_leave`` and dropping the room's bindings (Trystero: 99 ms).
LEAVE_GRACE = 0.099
#: Handshake messages a pending peer may queue before it is dropped.
MAX_HANDSHAKE_INBOX = 16
_MEDIA_ACTIONS = frozenset((wire.SIGNAL, wire.STREAM, wire.TRACK))
#: Internal messages held until something else happens (an admission step, a track), so
#: bounded by :attr:`Limits.max_media_metadata` (``@_signal`` has its own SDP bound).
_BOUNDED_INTERNAL = frozenset((wire.HSDATA, wire.STREAM, wire.TRACK))
#: Internal actions whose messages go through the reassembler (the others are one chunk).
_REASSEMBLED_INTERNAL = frozenset((wire.HSDATA, wire.RESPONSE)) | _MEDIA_ACTIONS


@dataclass(frozen=True, slots=True)
class JoinErrorEvent:
    """A failure to admit a peer into the room (Trystero's ``onJoinError`` payload)."""

    error: str
    app_id: str
    room_id: str
    peer_id: str | None


@dataclass
class RoomCounters:
    """Inputs a room dropped, for diagnostics and tests."""

    malformed_chunks: int = 0
    rejected_messages: int = 0
    dropped_while_pending: int = 0
    #: Messages held for an action nobody listened to, dropped to stay within
    #: :attr:`Limits.max_unclaimed_messages` or the sender's share of the memory budget.
    unclaimed_dropped: int = 0
    #: ``@_hsdata``/``@_stream``/``@_track`` messages over :attr:`Limits.max_media_metadata`.
    oversized_messages: int = 0
    #: Peers disconnected for holding more than their fair share of the memory budget.
    evicted_peers: int = 0
    #: Peers disconnected for sending :attr:`Limits.max_malformed_inputs` malformed inputs.
    malformed_peers: int = 0
    #: Pings and media signals over :attr:`Limits.max_control_rate`.
    rate_limited: int = 0
    #: Messages on a request action without valid request metadata ``{"r": id}``.
    malformed_requests: int = 0
    #: ``@_response`` messages without valid metadata ``{"r": id}``.
    malformed_responses: int = 0
    #: ``@_response`` messages for no request of ours to that peer (unknown, cancelled,
    #: timed out, or answered by another peer).
    unmatched_responses: int = 0
    #: ``@_signal`` / ``@_stream`` / ``@_track`` messages that were malformed.
    malformed_media: int = 0


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One ``Action.send``: the encoded payload, shared by every target."""

    type_field: bytes
    nonce: int
    kind: wire.PayloadKind
    payload: bytes
    encoded_metadata: bytes | None
    metadata: object
    on_progress: Callback | None


@dataclass(eq=False)
class _Member:
    link: PeerLink
    peer_id: str
    active: bool = False
    remote_ready: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[tuple[Any, Any]] = field(
        default_factory=lambda: asyncio.Queue(MAX_HANDSHAKE_INBOX)
    )
    pings: deque[asyncio.Future[float]] = field(default_factory=deque)
    handshake: asyncio.Task[None] | None = None
    #: Malformed inputs received from the peer.
    malformed: int = 0
    #: Kinds of dropped input already logged for this peer (each is logged once).
    logged: set[str] = field(default_factory=set)
    #: Pings and media signals the peer may make us act on (created on first use).
    control_rate: RateLimit | None = None
    #: Moved from a replaced connection while active: the app already sees the peer, so
    #: passing the handshake again is silent, and failing it is a leave.
    resumed: bool = False
    #: Our ``@_hsready`` went out: the peer's admits it at once (see ``Room._activate``).
    ready_sent: bool = False
    #: While the peer moves to a new connection: its admission there, in progress. This
    #: member (on the old link) stays in use until the successor is admitted.
    successor: _Member | None = None
    #: After a move: the connection the peer moved from, still delivering its last frames.
    previous: PeerLink | None = None

    @property
    def visible(self) -> bool:
        """Whether the application sees this peer (it joined and has not left)."""
        return self.active or self.resumed


class Action:
    """A named, typed message channel within a room (Trystero's ``makeAction``).

    Unpacks as ``send, on_message, on_receive_progress = room.make_action("x")``, and
    iterates as ``async for data, peer_id, metadata in action`` (see :meth:`__aiter__`).
    """

    def __init__(self, room: Room, name: str) -> None:
        self.name = name
        self._room = room
        self._type_field = wire.encode_action_type(name)
        self._nonce = 0
        self._on_message: list[Callback] = []
        self._on_progress: list[Callback] = []
        self._queues: set[EventQueue[ActionMessage]] = set()

    def __repr__(self) -> str:
        return f"<Action {self.name!r}>"

    def __iter__(self) -> Iterator[Callback]:
        return iter((self.send, self.on_message, self.on_receive_progress))

    async def send(
        self,
        data: object,
        target: str | Sequence[str] | None = None,
        metadata: object = None,
        on_progress: Callback | None = None,
    ) -> None:
        """Send ``data`` to ``target`` (a peer id, a list of them, or ``None`` for every
        active peer) and return once every target has been handed the whole payload.

        ``data``: ``str`` travels as text, ``bytes``-like as binary (received as ``bytes``),
        anything else as JSON. ``metadata`` is any JSON value, delivered alongside.
        ``on_progress(fraction, peer_id, metadata)`` is called after each chunk per target.

        Raises ``TypeError`` (before sending anything) if ``data`` or ``metadata`` cannot be
        encoded, :class:`PeerUnavailableError` if a named target is not an active peer or
        leaves during the send, :class:`RoomClosedError` after ``leave()``. Peers of a
        broadcast (``target=None``) that leave mid-send are skipped.
        """
        kind, payload = wire.encode_payload(data)
        message = _Outgoing(
            type_field=self._type_field,
            nonce=self._nonce,
            kind=kind,
            payload=payload,
            encoded_metadata=None if metadata is None else wire.encode_metadata(metadata),
            metadata=metadata,
            on_progress=on_progress,
        )
        self._nonce = wire.next_nonce(self._nonce)
        await self._room._send(message, target)

    def on_message(self, callback: C) -> C:
        """Call ``callback(data, peer_id, metadata)`` for every message received. Messages
        that arrived before the first callback was set are delivered to it (bounded)."""
        first = not self._on_message
        self._on_message.append(callback)
        if first:
            for event in self._room._claim(self.name):
                self._room._invoke(callback, event.data, event.peer_id, event.metadata)
        return callback

    def on_receive_progress(self, callback: C) -> C:
        """Call ``callback(fraction, peer_id, metadata)`` as chunks of a message arrive."""
        self._on_progress.append(callback)
        return callback

    def __aiter__(self) -> AsyncIterator[ActionMessage]:
        """``async for data, peer_id, metadata in action:`` — every message received from
        now on (plus those held for an unset action, as :meth:`on_message` gets them).

        Each iteration has its own queue of at most ``DEFAULT_QUEUE_LIMIT`` messages; if
        the loop body falls that far behind, newer messages are dropped for this iterator
        (and logged), never buffered without bound. Iteration ends when the room is left.
        For flow control end to end, use :meth:`Room.open_stream` instead.
        """
        return self.messages()

    async def messages(self, *, limit: int = DEFAULT_QUEUE_LIMIT) -> AsyncIterator[ActionMessage]:
        """:meth:`__aiter__` with a chosen queue ``limit``."""
        queue: EventQueue[ActionMessage] = EventQueue(limit, what=f"action {self.name!r}")
        if self._room.closed:
            return
        if not self._on_message and not self._queues:
            for event in self._room._claim(self.name):
                queue.put(ActionMessage(event.data, event.peer_id, event.metadata))
        self._queues.add(queue)
        self._room._queues.add(queue)
        try:
            async for message in queue:
                yield message
        finally:
            self._queues.discard(queue)
            self._room._queues.discard(queue)

    def _deliver(self, event: wire.MessageReceived) -> bool:
        if not self._on_message and not self._queues:
            return False
        for cb in self._on_message:
            self._room._invoke(cb, event.data, event.peer_id, event.metadata)
        if self._queues:
            message = ActionMessage(event.data, event.peer_id, event.metadata)
            for queue in self._queues:
                queue.put(message)
        return True

    def _progress(self, fraction: float, peer_id: str, metadata: object) -> None:
        for cb in self._on_progress:
            self._room._invoke(cb, fraction, peer_id, metadata)


class Room:
    """A joined room. Obtain one from a strategy's ``join_room``; see the package docs.

    Use it as an async context manager to leave on exit::

        async with await join_room("lobby", app_id="my-app") as room:
            ...
    """

    def __init__(
        self,
        *,
        app_id: str,
        room_id: str,
        self_id: str,
        password: str | None,
        shared: SharedLinks,
        configuration: RTCConfiguration,
        ice_addresses: tuple[str, ...] | None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        on_peer_handshake: HandshakeHook | None = None,
        passive: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.app_id = app_id
        self.room_id = room_id
        self.self_id = self_id
        self.token = room_token(app_id, room_id)
        self.password = password or None
        self.seal_key = derive_key(password, app_id, room_id)
        self.configuration = configuration
        self.ice_addresses = ice_addresses
        self.handshake_timeout = handshake_timeout
        self.on_peer_handshake = on_peer_handshake
        self._passive = passive
        #: A passive room is dormant until a non-passive peer wakes it; the signallers set
        #: this, and a dormant room does not advertise itself on shared connections.
        self.dormant = passive
        self.counters = RoomCounters()
        self._shared = shared
        self._prefix = room_frame_prefix(self.token)
        self._members: dict[str, _Member] = {}
        self._actions: dict[str, Action | RequestAction] = {}
        self.limits = limits
        self._budget = budget_for(limits)
        self._budget.add_holder(self._evict)
        self._unclaimed: deque[wire.MessageReceived] = deque()
        self._reassembler = wire.Reassembler(
            max_message_size=limits.max_message_size,
            max_partial_per_peer=limits.max_partial_messages,
            max_meta_size=limits.max_metadata_size,
            budget=self._budget,
            reclaim=self._reclaim,
        )
        self._on_join: list[Callback] = []
        self._on_leave: list[Callback] = []
        self._on_join_error: list[Callback] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queues: set[EventQueue[Any]] = set()  # every open iterator, closed on leave
        self._event_queues: set[EventQueue[RoomEvent]] = set()
        self._closed = False
        self._signallers: list[Signaller] = []
        self._ctl = {
            name: wire.encode_action_type(name)
            for name in (wire.HSREADY, wire.HSDATA, wire.LEAVE, wire.PING, wire.PONG)
        }
        self._internal_nonces: dict[str, int] = {}
        self._requests = RequestManager(self, self._budget)
        self._rpc = Rpc(self)
        self._media = RoomMedia(self)

    def __repr__(self) -> str:
        return f"<Room {self.app_id}/{self.room_id} as {self.self_id}>"

    async def __aenter__(self) -> Room:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    # -- public API ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`leave` has been called."""
        return self._closed

    @property
    def is_passive(self) -> bool:
        """True if the room was joined with ``passive=True`` (Trystero's ``isPassive()``)."""
        return self._passive

    @overload
    def make_action(self, name: str, kind: Literal["message"] = "message") -> Action: ...

    @overload
    def make_action(self, name: str, kind: Literal["request"]) -> RequestAction: ...

    @overload
    def make_action(self, name: str, kind: str) -> Action | RequestAction: ...

    def make_action(self, name: str, kind: str = "message") -> Action | RequestAction:
        """The action called ``name`` (created on first use; the same object afterwards).

        ``kind="message"`` gives an :class:`Action` (one-way messages); ``kind="request"``
        a :class:`~peermesh._requests.RequestAction` (request/response, Trystero's
        ``{kind: 'request'}``). Messages that arrived for a new request action before it
        was made are taken as its requests.

        Raises :class:`UsageError` if the name is empty, longer than 32 UTF-8 bytes, or
        starts with ``@_`` (reserved for the protocol), if ``kind`` is neither of the two,
        or if ``name`` was already made with the other kind (Trystero: "cannot be
        redefined"). ``"peermesh.rpc"`` is a request action every room makes for
        :meth:`expose` and :meth:`call`.
        """
        if kind not in ("message", "request"):
            raise UsageError(f"action kind must be 'message' or 'request', not {kind!r}")
        if name.startswith(wire.INTERNAL_PREFIX):
            raise UsageError(f"action names starting with {wire.INTERNAL_PREFIX!r} are reserved")
        action = self._actions.get(name)
        if action is None:
            if kind == "request":
                request_action = RequestAction(self, name)
                self._actions[name] = request_action
                for event in self._claim(name):
                    request_action._deliver(event)
                return request_action
            action = self._actions[name] = Action(self, name)
            return action
        existing = "request" if isinstance(action, RequestAction) else "message"
        if existing != kind:
            raise UsageError(
                f"action {name!r} is a {existing} action and cannot be redefined as {kind}"
            )
        return action

    @overload
    def expose(self, fn: C, *, name: str | None = None) -> C: ...

    @overload
    def expose(self, fn: None = None, *, name: str | None = None) -> Callable[[C], C]: ...

    def expose(self, fn: C | None = None, *, name: str | None = None) -> C | Callable[[C], C]:
        """Let peers call ``fn`` (sync or async) with :meth:`call`, under ``name`` (default
        ``fn.__name__``); replaces a function of the same name. Use as ``room.expose(fn)``,
        ``@room.expose`` or ``@room.expose(name="x")``; returns ``fn``.

        Inside ``fn``, ``peermesh.caller_id()`` is the calling peer. Arguments and the
        return value travel as JSON (``str``/``bytes`` results as text/binary). Raises
        :class:`UsageError` for a non-callable or unnamed ``fn``. See :mod:`peermesh._rpc`
        for the wire format and calling from JavaScript.
        """
        if fn is None:

            def decorator(f: C) -> C:
                return self._rpc.expose(f, name)

            return decorator
        return self._rpc.expose(fn, name)

    async def call(
        self,
        peer_id: str,
        name: str,
        *args: Any,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        **kwargs: Any,
    ) -> Any:
        """Run the function ``peer_id`` exposed as ``name`` with ``args``/``kwargs`` (JSON
        values) and return its result. ``timeout`` is as for ``RequestAction.request``.

        Raises :class:`RequestError` if the call failed remotely: its message is
        ``"no such function: <name>"``, or ``"<ExceptionClass>: <text>"`` for an exception
        raised by the function; ``TypeError`` for arguments that are not JSON values; and
        :class:`PeerTimeoutError`, :class:`PeerUnavailableError`, :class:`RoomClosedError`
        as a request does.
        """
        return await self._rpc.call(peer_id, name, args, kwargs, timeout)

    def socket(self, peer_id: str, name: str, *, limit: int = DEFAULT_QUEUE_LIMIT) -> PeerSocket:
        """A message socket to one peer over the action ``name``: ``await sock.send(data)``,
        ``async for data in sock``, ``await sock.close()``. See
        :class:`peermesh.PeerSocket` for its contract (queue ``limit``, what ends it)."""
        from ._sockets import PeerSocket

        return PeerSocket(self, peer_id, name, limit=limit)

    async def open_stream(
        self,
        peer_id: str,
        name: str,
        *,
        window: int = DEFAULT_WINDOW,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> tuple[StreamReader, StreamWriter]:
        """A flow-controlled byte stream with one peer, which opens the same ``name`` with
        our id: ``reader, writer = await room.open_stream(peer_id, "file")``. At most
        ``window`` bytes are ever in flight or buffered unread; a reader that stops reading
        stops the writer's ``drain()``. See :func:`peermesh._sockets.open_stream`."""
        from ._sockets import open_stream

        return await open_stream(self, peer_id, name, window=window, write_limit=write_limit)

    # -- media (see peermesh._media for how renegotiation works) ------------------------------

    async def add_stream(
        self,
        stream: MediaStream,
        target: str | Sequence[str] | None = None,
        metadata: object = None,
    ) -> None:
        """Send ``stream``'s tracks to ``target`` (a peer id, a list, or ``None`` for every
        active peer), announced with ``metadata`` (any JSON value): the receiving room's
        ``on_peer_stream(stream, peer_id, metadata)`` fires once, with a stream holding the
        tracks as they arrive.

        Returns once the announcement is sent and the tracks are attached; the connection
        renegotiates in the background (over the data channel, Trystero's ``@_signal``).
        Peers that join later do not get the stream: call this from ``on_peer_join`` with
        ``target=peer_id`` for them. One track sent to several peers is read once.

        Raises :class:`UsageError` for something that is not a
        :class:`peermesh.media.MediaStream`, ``TypeError`` for metadata that is not JSON,
        :class:`PeerUnavailableError` for a named target that is not active, and
        :class:`RoomClosedError` after :meth:`leave`.
        """
        await self._media.add_stream(stream, target, metadata)

    async def remove_stream(
        self, stream: MediaStream, target: str | Sequence[str] | None = None
    ) -> None:
        """Stop sending ``stream``'s tracks to ``target`` (default: every peer it was sent
        to); the receiver's tracks end (``recv()`` raises ``MediaStreamError``). Does not
        stop the tracks themselves. Raises as :meth:`add_stream`."""
        self._media.remove_tracks(stream.get_tracks(), target)

    async def add_track(
        self,
        track: MediaStreamTrack,
        stream: MediaStream,
        target: str | Sequence[str] | None = None,
        metadata: object = None,
    ) -> None:
        """Send one more ``track`` as part of ``stream``, announced with ``metadata``: the
        receiver's ``on_peer_track(track, stream, peer_id, metadata)`` fires. The track is
        not added to the ``stream`` object. Raises as :meth:`add_stream`."""
        await self._media.add_track(track, stream, target, metadata)

    async def remove_track(
        self, track: MediaStreamTrack, target: str | Sequence[str] | None = None
    ) -> None:
        """Stop sending ``track`` to ``target`` (default: everyone). Raises as
        :meth:`add_stream`."""
        self._media.remove_tracks([track], target)

    async def replace_track(
        self,
        old: MediaStreamTrack,
        new: MediaStreamTrack,
        stream: MediaStream | None = None,
        target: str | Sequence[str] | None = None,
        metadata: object = None,
    ) -> None:
        """Send ``new`` instead of ``old`` on the same senders, without renegotiation (the
        receiver keeps its track, now showing ``new``'s frames); ``metadata`` is announced as
        Trystero's ``replaceTrack`` does. If ``stream`` holds ``old``, ``new`` takes its
        place in it, so a later :meth:`remove_stream` removes ``new``. Raises
        :class:`UsageError` if ``new`` is of another kind or is already sent to a target,
        and otherwise as :meth:`add_stream`."""
        await self._media.replace_track(old, new, target, metadata)
        if stream is not None and old in stream.get_tracks():
            stream.remove_track(old)
            stream.add_track(new)

    def on_peer_stream(self, callback: C) -> C:
        """Call ``callback(stream, peer_id, metadata)`` when an active peer sends a stream
        (Trystero's ``onPeerStream``); replays streams already received and still live."""
        self._media.on_peer_stream(callback)
        return callback

    def on_peer_track(self, callback: C) -> C:
        """Call ``callback(track, stream, peer_id, metadata)`` when an active peer sends a
        track with ``add_track`` (Trystero's ``onPeerTrack``)."""
        self._media.on_peer_track(callback)
        return callback

    def on_peer_join(self, callback: C) -> C:
        """Call ``callback(peer_id)`` when a peer becomes active; replays current peers."""
        self._on_join.append(callback)
        for peer_id, member in self._members.items():
            if member.active:
                self._invoke(callback, peer_id)
        return callback

    async def events(self, *, limit: int = DEFAULT_QUEUE_LIMIT) -> AsyncIterator[RoomEvent]:
        """``async for event in room.events():`` — :class:`PeerJoined` for every active
        peer first, then each join and leave as it happens; ends when the room is left.

        The iterator holds at most ``limit`` unread events; beyond that, new ones are
        dropped (and logged) rather than buffered without bound.
        """
        if self._closed:
            return
        queue: EventQueue[RoomEvent] = EventQueue(limit, what=f"{self!r} events")
        for peer_id, member in self._members.items():
            if member.active:
                queue.put(PeerJoined(peer_id))
        self._queues.add(queue)
        self._event_queues.add(queue)
        try:
            async for event in queue:
                yield event
        finally:
            self._queues.discard(queue)
            self._event_queues.discard(queue)

    def _publish(self, event: RoomEvent) -> None:
        for queue in self._event_queues:
            queue.put(event)

    def on_peer_leave(self, callback: C) -> C:
        """Call ``callback(peer_id)`` when an active peer leaves or its connection ends.
        Not called for the peers of a room once :meth:`leave` has begun."""
        self._on_leave.append(callback)
        return callback

    def on_join_error(self, callback: C) -> C:
        """Call ``callback(event: JoinErrorEvent)`` when a peer could not be admitted: wrong
        password, handshake timeout, or no connection after exchanging SDP."""
        self._on_join_error.append(callback)
        return callback

    def get_peers(self) -> dict[str, RTCPeerConnection]:
        """Active peers and their aiortc connections."""
        return {pid: m.link.pc for pid, m in self._members.items() if m.active}

    async def ping(self, peer_id: str, *, timeout: float = PING_TIMEOUT) -> float:
        """Round-trip time to ``peer_id`` in milliseconds, through the action stack.

        Raises :class:`PeerUnavailableError` if the peer is not active (or leaves while
        waiting), :class:`PeerTimeoutError` if no pong comes within ``timeout`` seconds,
        :class:`RoomClosedError` after ``leave()``.
        """
        member = self._active_member(peer_id)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        member.pings.append(future)
        started = time.perf_counter()
        await member.link.send(self._control_frame(wire.PING))
        try:
            answered = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise PeerTimeoutError(f"{peer_id} did not answer a ping in {timeout:g} s") from None
        finally:
            if future in member.pings:
                member.pings.remove(future)
        return (answered - started) * 1000.0

    async def leave(self) -> None:
        """Leave the room: tell every peer, stop signalling, and close connections no other
        local room uses. Idempotent; the room cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        self._budget.remove_holder(self._evict)
        self._requests.close()
        for signaller in self._signallers:
            try:
                await signaller.close()
            except Exception:
                logger.exception("%r: error while closing %r", self, signaller)
        leave_frame = self._control_frame(wire.LEAVE)
        for member in self._members.values():
            member.link.send_nowait(leave_frame)
        if self._members:
            await asyncio.sleep(LEAVE_GRACE)
        members = list(self._members.values())
        self._shared.remove_room(self, [m.peer_id for m in members])
        for member in members:
            self._forget(member, "room left")
        for queue in self._queues:
            queue.close()
        self._release_unclaimed(lambda event: True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await wait_links_closed()

    # -- sending ------------------------------------------------------------------------------

    def _control_frame(self, name: str, payload: bytes = b"") -> bytes:
        (frame,) = wire.iter_chunks(
            self._ctl[name], 0, wire.PayloadKind.TEXT, payload, prefix=self._prefix
        )
        return frame

    def _active_member(self, peer_id: str) -> _Member:
        if self._closed:
            raise RoomClosedError(f"{self!r} has been left")
        member = self._members.get(peer_id)
        if member is None or not member.active:
            raise PeerUnavailableError(f"{peer_id} is not an active peer of {self!r}")
        return member

    def _is_active(self, peer_id: str) -> bool:
        member = self._members.get(peer_id)
        return member is not None and member.active

    def _media_targets(self, target: str | Sequence[str] | None) -> list[tuple[str, PeerLink]]:
        """``(peer_id, link)`` of the active peers ``target`` names (all for ``None``).
        Raises :class:`RoomClosedError` after leave, :class:`PeerUnavailableError` for a
        named peer that is not active."""
        if self._closed:
            raise RoomClosedError(f"{self!r} has been left")
        if target is None:
            return [(m.peer_id, m.link) for m in self._members.values() if m.active]
        ids = [target] if isinstance(target, str) else list(dict.fromkeys(target))
        return [(pid, self._active_member(pid).link) for pid in ids]

    async def _send_internal(self, name: str, value: object, peer_id: str) -> None:
        """Send ``value`` (JSON) as the internal action ``name`` to one active peer, with
        that action's own nonce sequence (so long payloads reassemble correctly)."""
        if name not in self._ctl:
            self._ctl[name] = wire.encode_action_type(name)
        kind, payload = wire.encode_payload(value)
        nonce = self._internal_nonces.get(name, 0)
        self._internal_nonces[name] = wire.next_nonce(nonce)
        message = _Outgoing(self._ctl[name], nonce, kind, payload, None, None, None)
        await self._send(message, peer_id)

    async def _send(self, message: _Outgoing, target: str | Sequence[str] | None) -> None:
        if self._closed:
            raise RoomClosedError(f"{self!r} has been left")
        if target is None:
            ids = [m.peer_id for m in self._members.values() if m.active]
            strict = False
        else:
            ids = [target] if isinstance(target, str) else list(dict.fromkeys(target))
            for peer_id in ids:
                self._active_member(peer_id)
            strict = True
        results = await asyncio.gather(
            *(self._send_to(peer_id, message) for peer_id in ids), return_exceptions=True
        )
        for result in results:
            if isinstance(result, PeerUnavailableError) and not strict:
                continue
            if isinstance(result, BaseException):
                raise result

    async def _send_encoded(
        self,
        type_field: bytes,
        nonce: int,
        kind: wire.PayloadKind,
        payload: bytes,
        encoded_metadata: bytes | None,
        metadata: object,
        on_progress: Callback | None,
        target: str | Sequence[str] | None,
    ) -> None:
        """:meth:`_send` for an already encoded message (used by request actions)."""
        message = _Outgoing(
            type_field, nonce, kind, payload, encoded_metadata, metadata, on_progress
        )
        await self._send(message, target)

    async def _send_to(self, peer_id: str, message: _Outgoing) -> None:
        """Send every chunk of ``message`` to ``peer_id`` over one link. After a move to a
        new connection, the first send there waits until the old one has delivered what
        was sent on it, so that messages arrive in the order they were sent."""
        member = self._active_member(peer_id)
        if member.previous is not None:
            await self._shared.delivered(member.previous)
            member = self._active_member(peer_id)
        link = member.link
        total = wire.chunk_count(len(message.payload), message.encoded_metadata is not None)
        frames = wire.iter_chunks(
            message.type_field,
            message.nonce,
            message.kind,
            message.payload,
            message.encoded_metadata,
            prefix=self._prefix,
        )
        progress = message.on_progress
        with link.sending():
            for index, frame in enumerate(frames):
                await link.send(frame)
                if progress is not None:
                    self._invoke(progress, (index + 1) / total, peer_id, message.metadata)

    # -- membership (called by SharedLinks) ---------------------------------------------------

    def has_peer(self, peer_id: str) -> bool:
        return peer_id in self._members

    def uses(self, link: PeerLink) -> bool:
        """Whether this room sends to ``link``'s peer over ``link``."""
        member = self._members.get(link.remote_id or "")
        return member is not None and member.link is link

    def attach(self, link: PeerLink) -> None:
        """Bind a link to this room and start the admission handshake with its peer."""
        peer_id = link.remote_id
        if self._closed or peer_id is None or peer_id in self._members or not link.is_open:
            return
        member = _Member(link=link, peer_id=peer_id)
        self._members[peer_id] = member
        member.handshake = self._spawn(self._admit(member))

    def move_peer(self, peer_id: str, link: PeerLink) -> None:
        """The connection to ``peer_id`` is being replaced by ``link`` (a duplicate that
        both peers prefer): run the admission handshake again on ``link``, silently for a
        peer the app already sees. An active peer keeps using its old link until then (see
        :meth:`_activate`); a peer still in its handshake starts it again on ``link``.
        Outstanding pings and requests carry over."""
        current = self._members.get(peer_id)
        if current is None or self._closed or not link.is_open or current.link is link:
            return
        successor = _Member(
            link=link, peer_id=peer_id, resumed=current.visible, pings=current.pings
        )
        if current.active:
            if current.successor is not None:
                _cancel(current.successor.handshake)
            current.successor = successor
        else:
            _cancel(current.handshake)
            self._members[peer_id] = successor
        logger.debug("%r: moving peer %s to a new connection", self, peer_id)
        successor.handshake = self._spawn(self._admit(successor))

    def peer_gone(self, peer_id: str, reason: str, *, lost: bool = False) -> None:
        """``peer_id`` is no longer in this room: it said so (``lost=False``) or its
        connection ended (``lost=True``; signallers then look for it again at once)."""
        member = self._members.get(peer_id)
        if member is None:
            return
        self._forget(member, reason)
        if lost and member.visible and not self._closed:
            for signaller in self._signallers:
                signaller.peer_lost(peer_id)

    def link_failed(self, link: PeerLink) -> None:
        if self._closed:
            return  # we abandoned it by leaving; nothing failed
        peer = link.remote_id or "unknown peer"
        self._join_error(
            f"could not connect to peer {peer} after exchanging SDP ({link.close_reason}); "
            "a TURN server may be needed",
            link.remote_id,
        )

    def _forget(self, member: _Member, reason: str, *, linger: bool = False) -> None:
        """Drop the peer ``member`` stands for (a successor that failed its handshake on
        a new connection takes the peer with it)."""
        current = self._members.get(member.peer_id)
        if current is not None and current.successor is member:
            member = current
        if current is not member:
            return
        del self._members[member.peer_id]
        self._reassembler.drop_peer(member.peer_id)
        _cancel(member.handshake)
        successor = member.successor
        if successor is not None:
            _cancel(successor.handshake)
            self._shared.release(successor.link)
        if member.previous is not None:
            self._shared.release(member.previous)
        for future in member.pings:
            if not future.done():
                future.set_exception(PeerUnavailableError(f"{member.peer_id} left: {reason}"))
        member.pings.clear()
        self._requests.peer_gone(member.peer_id, reason)
        self._media.peer_gone(member.peer_id)
        logger.debug("%r: peer %s gone (%s)", self, member.peer_id, reason)
        self._shared.release(member.link, linger=linger)
        if member.visible and not self._closed:
            self._publish(PeerLeft(member.peer_id))
            for cb in self._on_leave:
                self._invoke(cb, member.peer_id)

    # -- admission handshake (wire notes §7) --------------------------------------------------

    async def _admit(self, member: _Member) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                if self.password is not None:
                    await self._password_handshake(member)
                if self.on_peer_handshake is not None:
                    await self._user_handshake(member, self.on_peer_handshake)
                await member.link.send(self._control_frame(wire.HSREADY))
                member.ready_sent = True
                await member.remote_ready.wait()
        except TimeoutError:
            ms = int(self.handshake_timeout * 1000)
            self._reject(member, f"handshake timed out after {ms}ms")
            return
        except PeerUnavailableError:
            return  # the link closed under us; _forget has run or will run
        except HandshakeError as exc:
            self._reject(member, str(exc))
            return
        self._activate(member)

    def _activate(self, member: _Member) -> None:
        """Admit ``member``: both sides sent ``@_hsready``. Runs as soon as the peer's
        arrives (after ours went out), before any frame that follows it is handled: the
        peer may send data right behind it. A successor takes over from the member on the
        old connection, which the shared table then retires."""
        current = self._members.get(member.peer_id)
        if member.active or self._closed or current is None:
            return
        if current is not member:
            if current.successor is not member:
                return
            current.successor = None
            member.previous = current.link
            self._members[member.peer_id] = member
            self._media.peer_gone(member.peer_id)
        member.active = True
        self._media.peer_active(member.peer_id, member.link)
        if member.previous is not None:
            self._shared.release(member.previous)
        if member.resumed:
            logger.debug("%r: peer %s active again on its new connection", self, member.peer_id)
            return
        logger.debug("%r: peer %s joined", self, member.peer_id)
        self._publish(PeerJoined(member.peer_id))
        for cb in self._on_join:
            self._invoke(cb, member.peer_id)

    async def _password_handshake(self, member: _Member) -> None:
        assert self.password is not None
        initiator = self.self_id < member.peer_id
        if initiator:
            challenge = make_password_challenge()
            await self._send_hsdata(member, challenge)
            while True:
                message = parse_password_message((await member.inbox.get())[0])
                if isinstance(message, PasswordResponse):
                    break
            if not check_password_proof(
                challenge["c"], message.proof, self.password, self.app_id, self.room_id
            ):
                raise HandshakeError("incorrect password for overlapping room")
        else:
            while True:
                message = parse_password_message((await member.inbox.get())[0])
                if isinstance(message, PasswordChallenge):
                    break
            await self._send_hsdata(
                member,
                make_password_response(message.challenge, self.password, self.app_id, self.room_id),
            )

    async def _user_handshake(self, member: _Member, hook: HandshakeHook) -> None:
        """Run the application's admission hook; any exception it raises rejects the peer
        with that exception's text (Trystero strips its "handshake failed: " prefix)."""

        async def send(data: object, metadata: object = None) -> None:
            await self._send_hsdata(member, data, metadata)

        async def receive() -> tuple[Any, Any]:
            return await member.inbox.get()

        try:
            result = hook(member.peer_id, send, receive, self.self_id < member.peer_id)
            if inspect.isawaitable(result):
                await result
        except (PeerUnavailableError, HandshakeError, asyncio.CancelledError):
            raise
        except Exception as exc:
            logger.debug("%r: handshake hook rejected %s", self, member.peer_id, exc_info=True)
            raise HandshakeError(str(exc) or type(exc).__name__) from exc

    async def _send_hsdata(self, member: _Member, value: object, metadata: object = None) -> None:
        kind, payload = wire.encode_payload(value)
        encoded_metadata = None if metadata is None else wire.encode_metadata(metadata)
        for frame in wire.iter_chunks(
            self._ctl[wire.HSDATA], 0, kind, payload, encoded_metadata, prefix=self._prefix
        ):
            await member.link.send(frame)

    def _reject(self, member: _Member, error: str) -> None:
        logger.info("%r: peer %s not admitted: %s", self, member.peer_id, error)
        self._join_error(error, member.peer_id)
        self._forget(member, error)

    def _join_error(self, error: str, peer_id: str | None) -> None:
        event = JoinErrorEvent(error, self.app_id, self.room_id, peer_id)
        if not self._on_join_error:
            logger.warning("%r: join error: %s", self, error)
        for cb in self._on_join_error:
            self._invoke(cb, event)

    # -- receiving ----------------------------------------------------------------------------

    def receive_chunk(
        self, peer_id: str, data: bytes | memoryview, link: PeerLink | None = None
    ) -> None:
        """A chunk from ``peer_id`` over ``link``: the peer's connection, the one it is
        moving to (handshake frames only, until it is admitted there) or the one it moved
        from (still delivering its last frames); chunks from any other link are dropped."""
        member = self._members.get(peer_id)
        if member is None:
            return
        if link is not None and link is not member.link and link is not member.previous:
            successor = member.successor
            if successor is None or link is not successor.link:
                return
            member = successor
        try:
            chunk = wire.parse_chunk(data)
        except ProtocolError as exc:
            self.counters.malformed_chunks += 1
            self._malformed(peer_id, "action chunk", exc)
            return
        name = chunk.action_type
        internal = name.startswith(wire.INTERNAL_PREFIX)
        if not member.active and name not in (wire.HSREADY, wire.HSDATA, wire.LEAVE):
            self.counters.dropped_while_pending += 1
            return
        if name == wire.HSREADY:
            member.remote_ready.set()
            if member.ready_sent:
                self._activate(member)
            return
        if name == wire.LEAVE:
            self._forget(member, "left the room", linger=True)
            return
        if name == wire.PING:
            if self._within_rate(member, name):
                member.link.send_nowait(self._control_frame(wire.PONG))
            return
        if name == wire.PONG:
            answered = time.perf_counter()
            while member.pings:
                future = member.pings.popleft()
                if not future.done():
                    future.set_result(answered)
                    break
            return
        if internal and name not in _REASSEMBLED_INTERNAL:
            logger.debug("%r: ignoring unsupported internal action %s", self, name)
            return
        try:
            event = self._reassembler.feed(peer_id, chunk)
        except wire.LimitExceeded as exc:
            self.counters.rejected_messages += 1
            logger.debug("%r: dropped a message from %s: %s", self, peer_id, exc)
            action = self._actions.get(name)
            if isinstance(action, RequestAction):
                action._refuse(peer_id, exc.metadata)  # so that the caller is not left waiting
            return
        except ProtocolError as exc:
            self.counters.rejected_messages += 1
            self._malformed(peer_id, "message", exc)
            return
        if event is None:
            return
        if (
            isinstance(event, wire.MessageReceived)
            and name in _BOUNDED_INTERNAL
            and event.size > self.limits.max_media_metadata
        ):
            self.counters.oversized_messages += 1
            logger.debug("%r: dropped a %d-byte %s from %s", self, event.size, name, peer_id)
            return
        if name == wire.HSDATA:
            if isinstance(event, wire.MessageReceived) and not member.active:
                try:
                    member.inbox.put_nowait((event.data, event.metadata))
                except asyncio.QueueFull:
                    self._reject(member, "too many handshake messages")
            return
        if name == wire.RESPONSE:
            if isinstance(event, wire.MessageReceived):
                self._requests.on_response(event)
            return
        if name in _MEDIA_ACTIONS:
            if isinstance(event, wire.MessageReceived) and self._within_rate(member, name):
                try:
                    self._media.receive(name, peer_id, event.data)
                except ProtocolError as exc:
                    self.counters.malformed_media += 1
                    self._malformed(peer_id, name, exc)
            return
        action = self._actions.get(name)
        if isinstance(event, wire.ReceiveProgress):
            if action is not None:
                action._progress(event.fraction, peer_id, event.metadata)
            return
        if action is not None:
            action._progress(1.0, peer_id, event.metadata)
            if action._deliver(event):
                return
        self._hold(event)

    def _malformed(self, peer_id: str, kind: str, error: object) -> None:
        """``peer_id`` sent input that breaks the protocol (it was dropped and counted): log
        the first of each kind per peer, and disconnect a peer that keeps at it."""
        member = self._members.get(peer_id)
        if member is None:
            return
        member.malformed += 1
        self._log_once(member, kind, "dropped a malformed %s from %s: %s", kind, peer_id, error)
        if member.malformed >= self.limits.max_malformed_inputs:
            reason = f"it sent {member.malformed} malformed inputs"
            logger.warning("%r: disconnecting peer %s: %s", self, member.peer_id, reason)
            self.counters.malformed_peers += 1
            self._forget(member, reason)

    def _within_rate(self, member: _Member, kind: str) -> bool:
        """Whether ``member`` may make us act on one more control message of ``kind`` now
        (:attr:`Limits.max_control_rate`); the excess is counted and logged once per kind."""
        now = time.monotonic()
        limit = member.control_rate
        if limit is None:
            rate = self.limits.max_control_rate
            limit = member.control_rate = RateLimit(rate, 2 * rate, now)
        if limit.allow(now):
            return True
        self.counters.rate_limited += 1
        self._log_once(
            member, f"rate {kind}", "dropped %s from %s: over the rate", kind, member.peer_id
        )
        return False

    def _log_once(self, member: _Member, kind: str, message: str, *args: object) -> None:
        log_once(logger, member.logged, kind, "%r: " + message, self, *args)

    def _hold(self, event: wire.MessageReceived) -> None:
        """Keep a message for an action nobody listens to yet, charged to its sender; the
        oldest held messages go first (the sender's own when its share is what is full)."""
        if len(self._unclaimed) >= self.limits.max_unclaimed_messages:
            self._drop_unclaimed(self._unclaimed.popleft())
        peer_id, size = event.peer_id, event.size
        if not self._budget.charge(peer_id, size) and not (
            self._reclaim(peer_id, size) and self._budget.charge(peer_id, size)
        ):
            self._drop_unclaimed(event, charged=False)
            return
        self._unclaimed.append(event)

    def _reclaim(self, peer_id: str, nbytes: int) -> bool:
        """Drop the oldest messages ``peer_id`` sent for unset actions until ``nbytes`` more
        fit in its share of the memory budget; whether they now do. Messages in progress,
        and those somebody listens to, come before held ones."""
        budget = self._budget
        while budget.held(peer_id) + nbytes > budget.per_peer:
            oldest = next((e for e in self._unclaimed if e.peer_id == peer_id), None)
            if oldest is None:
                return False
            self._unclaimed.remove(oldest)
            self._drop_unclaimed(oldest)
        return True

    def _drop_unclaimed(self, event: wire.MessageReceived, *, charged: bool = True) -> None:
        if charged:
            self._budget.release(event.peer_id, event.size)
        self.counters.unclaimed_dropped += 1
        logger.debug(
            "%r: dropped a message from %s held for unset action %r",
            self,
            event.peer_id,
            event.action_type,
        )

    def _release_unclaimed(
        self, which: Callable[[wire.MessageReceived], bool]
    ) -> list[wire.MessageReceived]:
        """Take the held messages ``which`` selects out of the room, releasing their charge."""
        taken = [e for e in self._unclaimed if which(e)]
        if taken:
            self._unclaimed = deque(e for e in self._unclaimed if not which(e))
            for event in taken:
                self._budget.release(event.peer_id, event.size)
        return taken

    def _claim(self, name: str) -> list[wire.MessageReceived]:
        return self._release_unclaimed(lambda event: event.action_type == name)

    def _evict(self, peer_id: str, reason: str) -> None:
        """The memory budget disconnects ``peer_id``: release what this room holds for it
        now (requests whose handlers are running release theirs when they finish), and
        drop the peer from the room once the current input is handled."""
        for event in self._release_unclaimed(lambda event: event.peer_id == peer_id):
            self._drop_unclaimed(event, charged=False)
        self._reassembler.drop_peer(peer_id)
        self._requests.peer_gone(peer_id, reason)
        member = self._members.get(peer_id)
        if member is None:
            return
        self.counters.evicted_peers += 1
        logger.warning("%r: disconnecting peer %s: %s", self, peer_id, reason)
        asyncio.get_running_loop().call_soon(self._forget, member, reason)

    # -- tasks and callbacks ------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%r: background task failed", self, exc_info=task.exception())

    def _invoke(self, callback: Callback, *args: object) -> None:
        try:
            result = callback(*args)
        except Exception:
            logger.exception("%r: callback %r raised", self, callback)
            return
        if inspect.isawaitable(result):
            self._spawn(result)


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
