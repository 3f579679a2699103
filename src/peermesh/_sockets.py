"""Per-peer sockets and flow-controlled byte streams over a room's actions.

:class:`PeerSocket` is one action seen from one peer: messages in order, in an asyncio
idiom (PeerSocket-like). It is wire compatible with Trystero: the peer may be a JavaScript
peer using ``makeAction(name)`` and sending to our id.

:func:`open_stream` gives an asyncio-style ``(reader, writer)`` pair carrying bytes to and
from one peer, with credit-based flow control end to end. Its wire protocol is peermesh's
own (Python to Python); see :mod:`peermesh._wire.streams`. In short: data frames are
binary messages of the action ``name`` (an 8-byte offset and at most 64 KiB of data),
control messages (hello, credit, EOF, reset) are small JSON objects on the same action.

Both kinds attach a callback to the room's action and to the room's peer-leave callbacks,
and detach them when they end. At most one socket or stream per ``(room, peer, name)`` is
open at a time.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from ._events import DEFAULT_QUEUE_LIMIT, ActionMessage, EventQueue
from ._room import Action, Room
from ._wire import streams as wire
from ._wire.streams import DEFAULT_WINDOW, DEFAULT_WRITE_LIMIT, MAX_FRAME
from .errors import (
    PeerError,
    PeerUnavailableError,
    ProtocolError,
    RoomClosedError,
    StreamResetError,
    UsageError,
)

__all__ = [
    "DEFAULT_LINE_LIMIT",
    "DEFAULT_WINDOW",
    "DEFAULT_WRITE_LIMIT",
    "MAX_FRAME",
    "PeerSocket",
    "StreamReader",
    "StreamResetError",
    "StreamWriter",
    "open_stream",
]

logger = logging.getLogger(__name__)

#: Longest line :meth:`StreamReader.readline` returns by default.
DEFAULT_LINE_LIMIT = 64 * 1024


# Open sockets and streams per room, by (peer id, action name).
_open: weakref.WeakKeyDictionary[Room, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def _claim(room: Room, peer_id: str, name: str) -> Action:
    if room.closed:
        raise RoomClosedError(f"{room!r} has been left")
    if peer_id not in room.get_peers():
        raise PeerUnavailableError(f"{peer_id} is not an active peer of {room!r}")
    action = room.make_action(name)  # UsageError for bad names and request actions
    taken = _open.setdefault(room, set())
    if (peer_id, name) in taken:
        raise UsageError(f"a socket or stream {name!r} with {peer_id} is already open")
    taken.add((peer_id, name))
    return action


# Stream names used per room, by (peer id, name): the stream protocol cannot tell an old
# stream from a new one of the same name, so a name is never reopened with the same peer.
_used_streams: weakref.WeakKeyDictionary[Room, set[tuple[str, str]]] = weakref.WeakKeyDictionary()
#: Stream names one room may use over its life (with all peers together).
MAX_STREAM_NAMES = 65536


def _release(room: Room, peer_id: str, name: str) -> None:
    _open.get(room, set()).discard((peer_id, name))


class _RoomClosed(EventQueue[None]):
    """Registered as one of the room's iterator queues so that ``Room.leave`` (which
    closes those) tells us the room is gone."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__(1, what="room closing")
        self._on_close = on_close

    def close(self) -> None:
        if not self.closed:
            super().close()
            # Room.leave is iterating over its queues: act after it.
            asyncio.get_running_loop().call_soon(self._on_close)


class _Attachment:
    """Callbacks on a room for one peer and action; :meth:`detach` removes them all."""

    def __init__(
        self,
        room: Room,
        action: Action,
        peer_id: str,
        on_message: Callable[[object, object], None],
        on_end: Callable[[BaseException], None],
    ) -> None:
        self.room = room
        self.action = action
        self.peer_id = peer_id
        self._on_message = on_message
        self._on_end = on_end
        self.attached = True
        self._closer = _RoomClosed(self._room_closed)
        room._queues.add(self._closer)
        room._on_leave.append(self._peer_left)
        # Through the public method: if nobody listened to the action yet, the messages the
        # room held for it are delivered now (ours are kept, other peers' are dropped).
        action.on_message(self._message)

    def _message(self, data: object, peer_id: str, metadata: object) -> None:
        if peer_id == self.peer_id and self.attached:
            self._on_message(data, metadata)

    def _peer_left(self, peer_id: str) -> None:
        if peer_id == self.peer_id and self.attached:
            self._on_end(PeerUnavailableError(f"{peer_id} left {self.room!r}"))

    def _room_closed(self) -> None:
        if self.attached:
            self._on_end(PeerUnavailableError(f"{self.room!r} has been left"))

    def detach(self) -> None:
        """Stop delivering (at once) and remove the callbacks (soon: the room may be
        iterating over its callback lists right now). Idempotent."""
        if not self.attached:
            return
        self.attached = False
        _release(self.room, self.peer_id, self.action.name)
        asyncio.get_running_loop().call_soon(self._unhook)

    def _unhook(self) -> None:
        self.room._queues.discard(self._closer)
        _remove(self.room._on_leave, self._peer_left)
        _remove(self.action._on_message, self._message)


def _remove(callbacks: list[Any], callback: Callable[..., Any]) -> None:
    for i, cb in enumerate(callbacks):
        if cb == callback:  # bound methods compare equal, never identical
            del callbacks[i]
            return


# -- sockets ----------------------------------------------------------------------------------


class PeerSocket:
    """The messages of action ``name`` exchanged with one peer (``room.socket(...)``).

    ``await sock.send(data, metadata=None)`` sends to that peer only; ``await
    sock.receive()``, :meth:`receive_message` and ``async for data in sock`` give the
    messages that peer sends on the action, in order. Use as ``async with`` to close on
    exit.

    Buffering: at most ``limit`` unread messages are kept; when full, *newer* messages are
    dropped (counted in :attr:`dropped`, logged) — the room cannot pause one peer's data
    channel for one reader. Use :func:`open_stream` for end-to-end back-pressure. If the
    socket is the action's first listener, the messages the room held for the unheard
    action are taken: this peer's are queued, other peers' are discarded.

    Ending: :meth:`close` (local) discards unread messages; afterwards iteration ends at
    once, and :meth:`send` and :meth:`receive` raise :class:`UsageError`. When the peer
    leaves or the room is left, the socket ends by itself: queued messages can still be
    read, then iteration ends and :meth:`receive` raises :class:`PeerUnavailableError`
    (as does :meth:`send`).

    Raises, on creation: :class:`RoomClosedError` after ``leave()``,
    :class:`PeerUnavailableError` if ``peer_id`` is not an active peer, :class:`UsageError`
    for a bad or request action name, or if a socket or stream with that peer and name is
    already open.
    """

    def __init__(
        self, room: Room, peer_id: str, name: str, *, limit: int = DEFAULT_QUEUE_LIMIT
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"limit must be a positive int, got {limit!r}")
        self.room = room
        self.peer_id = peer_id
        self.name = name
        action = _claim(room, peer_id, name)
        self._action = action
        self._queue: EventQueue[ActionMessage] = EventQueue(
            limit, what=f"socket {name!r} with {peer_id}"
        )
        self._closed = False
        self._ended: PeerUnavailableError | None = None
        self._attachment = _Attachment(room, action, peer_id, self._on_message, self._on_end)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._ended else "open"
        return f"<PeerSocket {self.name!r} with {self.peer_id} {state}>"

    @property
    def dropped(self) -> int:
        """Messages dropped because :attr:`limit` unread ones were queued."""
        return self._queue.dropped

    @property
    def closed(self) -> bool:
        """True once closed locally or ended by the peer or room going away."""
        return self._closed or self._ended is not None

    def _on_message(self, data: object, metadata: object) -> None:
        self._queue.put(ActionMessage(data, self.peer_id, metadata))

    def _on_end(self, error: BaseException) -> None:
        assert isinstance(error, PeerUnavailableError)
        self._ended = error
        self._queue.close()
        self._attachment.detach()

    async def send(self, data: object, metadata: object = None) -> None:
        """Send ``data`` (and ``metadata``) to the peer, as :meth:`Action.send` does.

        Raises :class:`UsageError` after :meth:`close`, :class:`PeerUnavailableError` if the
        peer left (or leaves during the send) or the room was left, ``TypeError`` for
        values that are not encodable.
        """
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        if self._ended is not None:
            raise PeerUnavailableError(str(self._ended))
        try:
            await self._action.send(data, target=self.peer_id, metadata=metadata)
        except RoomClosedError as exc:
            raise PeerUnavailableError(str(exc)) from exc

    async def receive_message(self) -> ActionMessage:
        """The next message as ``ActionMessage(data, peer_id, metadata)``.

        Raises :class:`UsageError` after :meth:`close`, :class:`PeerUnavailableError` once
        the peer or room is gone and the queued messages have been read.
        """
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        try:
            return await self._queue.get()
        except StopAsyncIteration:
            if self._closed:
                raise UsageError(f"{self!r} is closed") from None
            raise PeerUnavailableError(str(self._ended)) from None

    async def receive(self) -> object:
        """The next message's data; raises as :meth:`receive_message`."""
        return (await self.receive_message()).data

    def __aiter__(self) -> AsyncIterator[object]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[object]:
        while not self._closed:
            try:
                message = await self._queue.get()
            except StopAsyncIteration:
                return
            yield message.data

    async def close(self) -> None:
        """Stop receiving and drop unread messages. Idempotent; nothing is sent to the
        peer (Trystero has no per-action close)."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        self._attachment.detach()

    async def __aenter__(self) -> PeerSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- streams ----------------------------------------------------------------------------------


class _Stream:
    """The asyncio side of one :class:`~peermesh._wire.streams.StreamState`: a task sends
    what the state machine hands out; callbacks feed it what the peer sends."""

    def __init__(self, room: Room, peer_id: str, name: str, window: int, write_limit: int) -> None:
        self.state = wire.StreamState(window, write_limit=write_limit)
        self.room = room
        self.peer_id = peer_id
        self.name = name
        self.action = _claim(room, peer_id, name)
        #: Why the stream ended abnormally (peer/room gone, reset); ``None`` while healthy.
        self.error: PeerError | None = None
        #: Bytes of the data frame the sender task is sending right now.
        self.sending = 0
        self.eof_done = False  # our EOF frame was handed to the room
        self._changed = asyncio.Event()  # replaced by a fresh one on every change
        self._wakeup = asyncio.Event()  # for the sender task
        self._attachment = _Attachment(room, self.action, peer_id, self._on_message, self._end)
        self._sender = asyncio.ensure_future(self._send_loop())

    def __repr__(self) -> str:
        return f"<stream {self.name!r} with {self.peer_id}>"

    # -- events from the room

    def _on_message(self, data: object, metadata: object) -> None:
        try:
            frame = wire.decode_frame(data)
            if self.state.reset_reason is None and not self.state.finished:
                self.state.receive(frame)
        except ProtocolError as exc:
            logger.debug("%r: protocol error from the peer, resetting: %s", self, exc)
            self.state.reset(str(exc))
        if self.state.reset_reason is not None and self.error is None:
            self.error = StreamResetError(f"{self!r}: {self.state.reset_reason}")
        self._poke()

    def _end(self, error: BaseException) -> None:
        if self.error is None:
            assert isinstance(error, PeerError)
            self.error = error
        self._attachment.detach()
        self._sender.cancel()
        self._poke()

    def _poke(self) -> None:
        """Something changed: wake the sender and every waiter."""
        self._wakeup.set()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds or the stream failed."""
        while not predicate() and self.error is None:
            await self._changed.wait()

    # -- sending

    async def _send_loop(self) -> None:
        state = self.state
        try:
            while True:
                frame = state.next_frame()
                if frame is None:
                    if state.finished:
                        break
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if isinstance(frame, wire.DataFrame):
                    self.sending = len(frame.data)
                try:
                    await self.action.send(wire.encode_frame(frame), target=self.peer_id)
                finally:
                    self.sending = 0
                if isinstance(frame, wire.Eof):
                    self.eof_done = True
                self._notify()
        except asyncio.CancelledError:
            return
        except (PeerError, RoomClosedError) as exc:
            if self.error is None:
                self.error = PeerUnavailableError(f"{self!r}: {exc}")
        if state.reset_reason is not None and self.error is None:
            self.error = StreamResetError(f"{self!r}: {state.reset_reason}")
        self._attachment.detach()
        self._notify()

    def reset(self, reason: str) -> None:
        if self.error is None:
            self.error = StreamResetError(f"{self!r}: {reason}")
        self.state.reset(reason)
        self._poke()


class StreamWriter:
    """The sending half of a stream (asyncio ``StreamWriter``-like).

    :meth:`write` only queues (at most ``write_limit`` bytes, see :func:`open_stream`);
    :meth:`drain` waits until every queued byte was handed to the room, which happens only
    as fast as the peer's reader grants credit. :meth:`close` / :meth:`write_eof` end our
    direction after the queued bytes; reading continues.
    """

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return f"<StreamWriter {self._stream.name!r} to {self._stream.peer_id}>"

    @property
    def peer_id(self) -> str:
        return self._stream.peer_id

    @property
    def bytes_sent(self) -> int:
        """Bytes handed to the room (the transport) so far."""
        return self._stream.state.sent

    @property
    def buffered(self) -> int:
        """Bytes written but not yet handed to the room."""
        return self._stream.state.write_buffered + self._stream.sending

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``.

        Raises :class:`UsageError` after :meth:`close`/:meth:`write_eof`, or if more than
        ``write_limit`` bytes would be queued (``await drain()`` between writes); the
        stream's error (:class:`PeerUnavailableError`, :class:`StreamResetError`) if it
        failed.
        """
        stream = self._stream
        if stream.error is not None:
            raise stream.error
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        stream.state.write(data)
        if data:
            stream._poke()

    def writelines(self, data: list[bytes]) -> None:
        """:meth:`write` each item."""
        for item in data:
            self.write(item)

    async def drain(self) -> None:
        """Wait until every queued byte has been handed to the room.

        Raises :class:`PeerUnavailableError` if the peer or room goes away, or
        :class:`StreamResetError` if the stream is reset, before or while waiting.
        """
        stream = self._stream
        await stream.wait_for(lambda: not stream.state.write_buffered and not stream.sending)
        if stream.error is not None:
            raise stream.error

    def write_eof(self) -> None:
        """End our direction after the queued bytes. Idempotent."""
        self._stream.state.write_eof()
        self._stream._poke()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        """Same as :meth:`write_eof` (reading from the peer continues). Idempotent."""
        self.write_eof()

    def is_closing(self) -> bool:
        """True after :meth:`close`/:meth:`write_eof`, or once the stream failed."""
        return self._stream.state.eof_requested or self._stream.error is not None

    async def wait_closed(self) -> None:
        """Wait until our EOF was sent (after every queued byte).

        Raises the stream's error (:class:`PeerUnavailableError`,
        :class:`StreamResetError`) if it failed before that.
        """
        stream = self._stream
        await stream.wait_for(lambda: stream.eof_done)
        if not stream.eof_done and stream.error is not None:
            raise stream.error

    def abort(self, reason: str = "aborted") -> None:
        """Reset the whole stream, both ways: queued and unread bytes are dropped, the peer
        sees :class:`StreamResetError`, and so do later calls here. Idempotent."""
        self._stream.reset(reason)


class StreamReader:
    """The receiving half of a stream (asyncio ``StreamReader``-like).

    At most ``window`` bytes are buffered: the peer may only send what this reader has
    granted, and grants follow what the application reads. ``async for chunk in reader``
    yields chunks as they arrive (not lines, unlike asyncio).

    When the peer or room goes away before the peer's EOF, buffered bytes can still be read;
    then reads raise :class:`PeerUnavailableError`. A reset (by the peer, or by us because
    the peer broke the protocol) drops buffered bytes, and reads raise
    :class:`StreamResetError`.
    """

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return f"<StreamReader {self._stream.name!r} from {self._stream.peer_id}>"

    @property
    def peer_id(self) -> str:
        return self._stream.peer_id

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (never more than the window)."""
        return self._stream.state.read_buffered

    @property
    def bytes_received(self) -> int:
        return self._stream.state.received

    def at_eof(self) -> bool:
        """True once the peer's EOF came and every byte was read."""
        return self._stream.state.at_eof

    async def _wait_data(self) -> None:
        stream = self._stream
        state = stream.state
        await stream.wait_for(lambda: bool(state.read_buffered) or state.eof_received)
        if not state.read_buffered and not state.eof_received and stream.error is not None:
            raise stream.error
        if isinstance(stream.error, StreamResetError):
            raise stream.error

    def _consume(self, n: int) -> bytes:
        data = self._stream.state.read(n)
        if data:
            self._stream._poke()  # may be time to grant credit
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one), or ``b""`` at EOF. ``n < 0``: everything until
        EOF (memory grows with what the peer sends: the window bounds only the buffer).

        Raises :class:`PeerUnavailableError`, :class:`StreamResetError` as described in
        the class docstring.
        """
        if n == 0:
            return b""
        if n < 0:
            parts = []
            while chunk := await self.read(MAX_FRAME):
                parts.append(chunk)
            return b"".join(parts)
        await self._wait_data()
        return self._consume(n)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises ``asyncio.IncompleteReadError`` (with the partial
        bytes, which are consumed) if EOF comes first, or as :meth:`read` raises."""
        if n < 0:
            raise UsageError("readexactly size can not be less than zero")
        parts = bytearray()
        while len(parts) < n:
            chunk = await self.read(n - len(parts))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(parts), n)
            parts += chunk
        return bytes(parts)

    async def readline(self, *, limit: int = DEFAULT_LINE_LIMIT) -> bytes:
        """Bytes up to and including the next ``b"\\n"``, or what is left before EOF
        (``b""`` at EOF).

        Raises ``ValueError`` (as asyncio does) if no newline comes within ``limit`` bytes;
        those ``limit`` bytes are consumed and lost, the rest of the line stays readable.
        Otherwise raises as :meth:`read`.
        """
        line = bytearray()
        while True:
            await self._wait_data()
            state = self._stream.state
            if not state.read_buffered:
                return bytes(line)  # EOF
            index = state.find(b"\n")
            take = index + 1 if index >= 0 else state.read_buffered
            if len(line) + take > limit:
                self._consume(limit - len(line))
                raise ValueError(f"line longer than {limit} bytes")
            line += self._consume(take)
            if index >= 0:
                return bytes(line)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read(MAX_FRAME):
            yield chunk


async def open_stream(
    room: Room,
    peer_id: str,
    name: str,
    *,
    window: int = DEFAULT_WINDOW,
    write_limit: int = DEFAULT_WRITE_LIMIT,
) -> tuple[StreamReader, StreamWriter]:
    """Open the byte stream ``name`` with ``peer_id``, who must open it with our id.

    Returns at once; writes are sent once the peer has opened its end and granted credit.
    ``window`` bounds the bytes the peer may have in flight to us (our receive buffer);
    ``write_limit`` bounds bytes written but not yet sent. The stream lives until both
    sides have closed their writer (and the EOFs crossed), it is reset
    (:meth:`StreamWriter.abort`, or a protocol error from the peer: logged at DEBUG, never
    disturbing the room), or the peer or room goes away.

    Until the peer opens its end nothing is sent, so :meth:`StreamWriter.drain` and
    :meth:`StreamReader.read` wait; bound them with ``asyncio.timeout`` if the peer may
    never open. A name carries one stream per peer pair for the life of the room (the
    protocol cannot tell an old stream from a new one): use a fresh name per stream, e.g.
    ``f"file-{n}"``; at most :data:`MAX_STREAM_NAMES` per room.

    Raises :class:`RoomClosedError` after ``leave()``, :class:`PeerUnavailableError` if
    ``peer_id`` is not an active peer, :class:`UsageError` for a bad name or parameter, if
    a socket or stream with that peer and name is already open, or if a stream of that
    name was already opened with that peer in this room.
    """
    used = _used_streams.setdefault(room, set())
    if (peer_id, name) in used:
        raise UsageError(f"stream {name!r} was already used with {peer_id}; pick a new name")
    if len(used) >= MAX_STREAM_NAMES:
        raise UsageError(f"{room!r} has used {MAX_STREAM_NAMES} stream names")
    stream = _Stream(room, peer_id, name, window, write_limit)
    used.add((peer_id, name))
    return StreamReader(stream), StreamWriter(stream)
