"""Sans-I/O state machine for one flow-controlled byte stream between two peers.

This is peermesh's own protocol (Python to Python only; Trystero has no equivalent). A
stream is a pair of half-streams, one per direction, carried on one user action of a room
(the stream's name) and addressed to one peer. Both ends open the same name with the other's
peer id; each end is a :class:`StreamState`, which is both the sender of its outgoing
half-stream and the receiver of the incoming one.

Messages of the action (Trystero payload kinds, wire notes §6.3)::

    binary   offset (uint64 big-endian) + data      DATA  1..MAX_FRAME bytes at ``offset``
    JSON     {"s": "hello", "limit": L, "ack": A}    I opened the stream; you may send up to
                                                     byte offset L; A: I have seen your hello
    JSON     {"s": "credit", "limit": L}             you may send up to byte offset L
    JSON     {"s": "eof", "offset": N}               I sent N bytes in all and will send no more
    JSON     {"s": "reset", "reason": "..."}         the whole stream is aborted, both ways

Flow control is credit based and end to end: a receiver advertises an absolute *limit*
(consumed + window). ``limit`` values only grow; a smaller one than already known is
ignored. A sender never has more than ``limit - consumed <= window`` bytes in flight, so a
receiver buffers at most ``window`` bytes. A receiver re-grants once the application has
consumed at least half a window since the last grant, and stops granting after EOF.

The hello carries the first grant. A hello can be lost if it arrives before the other end
listens on the action (another listener of the same name may take it), so an end that
receives a hello with ``ack`` false answers with its own hello (``ack`` true); two ends
that open at the same time exchange at most two hellos each.

Protocol errors (a frame past the granted limit, at the wrong offset, larger than
:data:`MAX_FRAME`, after EOF, malformed, an EOF that disagrees with the bytes received)
reset the stream: :meth:`StreamState.receive` queues a ``reset`` for the peer, discards
both buffers and raises :class:`ProtocolError`. Each ``(room, peer, name)`` carries one
stream per room session: reopening a name with the same peer is not supported.

No asyncio, no clock; every buffer is bounded (see :class:`StreamState`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from peermesh.errors import ProtocolError, UsageError

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WRITE_LIMIT",
    "MAX_FRAME",
    "Credit",
    "DataFrame",
    "Eof",
    "Frame",
    "Hello",
    "Reset",
    "StreamState",
    "decode_frame",
    "encode_frame",
]

#: Bytes a receiver lets its peer have in flight by default.
DEFAULT_WINDOW: Final = 256 * 1024
#: Largest data frame (data bytes, excluding the 8-byte offset).
MAX_FRAME: Final = 64 * 1024
#: Default bound on bytes written but not yet sent.
DEFAULT_WRITE_LIMIT: Final = 16 * 1024 * 1024
#: Offsets and limits stay exact in JSON (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_OFFSET: Final = 2**53 - 1
#: Longest reset reason sent or kept.
MAX_REASON: Final = 200

_OFFSET = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class DataFrame:
    """``data`` (1..MAX_FRAME bytes) starting at byte ``offset`` of the half-stream."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """The sender opened the stream and grants up to ``limit``; ``ack``: it saw our hello."""

    limit: int
    ack: bool


@dataclass(frozen=True, slots=True)
class Credit:
    """The receiver lets the sender send up to byte offset ``limit`` (absolute)."""

    limit: int


@dataclass(frozen=True, slots=True)
class Eof:
    """The sender's half-stream ends after ``offset`` bytes."""

    offset: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream is aborted in both directions."""

    reason: str


Frame = DataFrame | Hello | Credit | Eof | Reset


def encode_frame(frame: Frame) -> bytes | dict[str, object]:
    """The action payload for ``frame``: ``bytes`` for data, a JSON object otherwise."""
    if isinstance(frame, DataFrame):
        return _OFFSET.pack(frame.offset) + frame.data
    if isinstance(frame, Hello):
        return {"s": "hello", "limit": frame.limit, "ack": frame.ack}
    if isinstance(frame, Credit):
        return {"s": "credit", "limit": frame.limit}
    if isinstance(frame, Eof):
        return {"s": "eof", "offset": frame.offset}
    return {"s": "reset", "reason": frame.reason[:MAX_REASON]}


def _offset_field(message: dict[object, object], key: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
        raise ProtocolError(f"stream {message.get('s')!r} message has bad {key!r}: {value!r}")
    return value


def decode_frame(payload: object) -> Frame:
    """Parse an action payload received on a stream's action.

    Raises :class:`ProtocolError` for anything that is not a valid stream message.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        if len(raw) <= _OFFSET.size:
            raise ProtocolError(f"stream data frame of {len(raw)} bytes has no data")
        if len(raw) - _OFFSET.size > MAX_FRAME:
            raise ProtocolError(f"stream data frame of {len(raw) - _OFFSET.size} bytes")
        (offset,) = _OFFSET.unpack_from(raw)
        if offset > MAX_OFFSET:
            raise ProtocolError(f"stream data offset {offset} out of range")
        return DataFrame(offset, raw[_OFFSET.size :])
    if not isinstance(payload, dict):
        raise ProtocolError(f"stream message of type {type(payload).__name__}")
    kind = payload.get("s")
    if kind == "hello":
        ack = payload.get("ack")
        if not isinstance(ack, bool):
            raise ProtocolError(f"stream hello has bad 'ack': {ack!r}")
        return Hello(_offset_field(payload, "limit"), ack)
    if kind == "credit":
        return Credit(_offset_field(payload, "limit"))
    if kind == "eof":
        return Eof(_offset_field(payload, "offset"))
    if kind == "reset":
        reason = payload.get("reason")
        return Reset(reason[:MAX_REASON] if isinstance(reason, str) else "")
    raise ProtocolError(f"unknown stream message {kind!r}")


class StreamState:
    """Both half-streams of one end: what to send next, and what was received.

    Sending: :meth:`write` and :meth:`write_eof` queue; :meth:`next_frame` hands out the
    next frame to transmit (control frames first, then data within the peer's credit, then
    EOF once everything was sent). Receiving: :meth:`receive` takes a decoded frame,
    :meth:`read` / :meth:`peek` give received bytes to the application, which is what
    earns the peer more credit.

    Bounds: the receive buffer never exceeds ``window`` bytes (more is a protocol error);
    the write buffer never exceeds ``write_limit`` bytes (:meth:`write` raises
    :class:`UsageError` instead); at most one control frame of each kind is pending.
    """

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        *,
        max_frame: int = MAX_FRAME,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        """Raises :class:`UsageError` unless ``window``, ``write_limit`` are positive ints and
        ``1 <= max_frame <= MAX_FRAME``."""
        for name, value in (("window", window), ("write_limit", write_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UsageError(f"{name} must be a positive int, got {value!r}")
        if isinstance(max_frame, bool) or not isinstance(max_frame, int):
            raise UsageError(f"max_frame must be an int, got {max_frame!r}")
        if not 1 <= max_frame <= MAX_FRAME:
            raise UsageError(f"max_frame must be in 1..{MAX_FRAME}, got {max_frame}")
        self.window = window
        self.max_frame = max_frame
        self.write_limit = write_limit
        # -- outgoing half-stream
        self._out = bytearray()
        #: Bytes handed out by :meth:`next_frame` (the next data offset).
        self.sent = 0
        #: The peer's latest grant: we may send up to this offset.
        self.peer_limit = 0
        self._eof_requested = False
        #: True once the EOF frame was handed out.
        self.eof_sent = False
        self.peer_opened = False  # we received the peer's hello
        # -- incoming half-stream
        self._in = bytearray()
        #: Next expected offset (bytes received so far).
        self.received = 0
        #: Bytes the application has read.
        self.consumed = 0
        #: The limit we last handed out (hello or credit); the peer may send up to it.
        self.advertised = 0
        self.eof_received = False
        # -- control
        self._hello_pending = True
        self._reset_pending: Reset | None = None
        #: Set once the stream is reset (by us or the peer): why.
        self.reset_reason: str | None = None
        self.reset_by_peer = False

    # -- queries ------------------------------------------------------------------------------

    @property
    def write_buffered(self) -> int:
        """Bytes written but not yet handed out by :meth:`next_frame`."""
        return len(self._out)

    @property
    def read_buffered(self) -> int:
        """Bytes received but not yet read."""
        return len(self._in)

    @property
    def at_eof(self) -> bool:
        """The peer ended its half-stream and every byte of it was read."""
        return self.eof_received and not self._in

    @property
    def finished(self) -> bool:
        """Nothing more will ever be sent or received: both EOFs passed, or reset."""
        if self.reset_reason is not None:
            return self._reset_pending is None
        return self.eof_sent and self.eof_received and not self._hello_pending

    # -- sending ------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending.

        Raises :class:`UsageError` after :meth:`write_eof` or a reset, or if the write buffer
        would exceed ``write_limit`` bytes (send what is queued first).
        """
        if self.reset_reason is not None:
            raise UsageError(f"stream was reset: {self.reset_reason}")
        if self._eof_requested:
            raise UsageError("write after write_eof()")
        if len(self._out) + len(data) > self.write_limit:
            raise UsageError(
                f"write buffer limit of {self.write_limit} bytes exceeded; drain first"
            )
        if self.sent + len(self._out) + len(data) > MAX_OFFSET:
            raise UsageError("stream length limit exceeded")
        self._out += data

    def write_eof(self) -> None:
        """End our half-stream after the queued bytes. Idempotent; a no-op after reset."""
        self._eof_requested = True

    @property
    def eof_requested(self) -> bool:
        return self._eof_requested

    def next_frame(self) -> Frame | None:
        """The next frame to transmit, or ``None`` if nothing can be sent now.

        Order: reset (then nothing more), hello, credit, data within credit, EOF.
        """
        if self.reset_reason is not None:
            reset, self._reset_pending = self._reset_pending, None
            return reset
        if self._hello_pending:
            self._hello_pending = False
            self.advertised = max(self.advertised, self.consumed + self.window)
            return Hello(self.advertised, self.peer_opened)
        if not self.eof_received and self._credit_due():
            self.advertised = self.consumed + self.window
            return Credit(self.advertised)
        if self._out and self.sent < self.peer_limit:
            size = min(self.max_frame, self.peer_limit - self.sent, len(self._out))
            data = bytes(self._out[:size])
            del self._out[:size]
            frame = DataFrame(self.sent, data)
            self.sent += size
            return frame
        if self._eof_requested and not self._out and not self.eof_sent:
            self.eof_sent = True
            return Eof(self.sent)
        return None

    def _credit_due(self) -> bool:
        return self.consumed + self.window - self.advertised >= max(1, self.window // 2)

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, frame: Frame) -> None:
        """Apply a frame from the peer.

        Raises :class:`ProtocolError` if the frame breaks the protocol; the stream is then
        reset (a reset frame for the peer is queued, both buffers are discarded). Frames
        after a reset are ignored.
        """
        if self.reset_reason is not None:
            return
        if isinstance(frame, Reset):
            self._reset(f"reset by peer: {frame.reason}" if frame.reason else "reset by peer")
            self.reset_by_peer = True
            self._reset_pending = None
            return
        try:
            self._receive(frame)
        except ProtocolError as exc:
            self.reset(str(exc))
            raise

    def _receive(self, frame: Frame) -> None:
        if isinstance(frame, Hello):
            self.peer_opened = True
            self.peer_limit = max(self.peer_limit, frame.limit)
            if not frame.ack:
                self._hello_pending = True
        elif isinstance(frame, Credit):
            if not self.peer_opened:
                raise ProtocolError("stream credit before hello")
            self.peer_limit = max(self.peer_limit, frame.limit)
        elif isinstance(frame, DataFrame):
            if self.eof_received:
                raise ProtocolError("stream data after EOF")
            if frame.offset != self.received:
                raise ProtocolError(
                    f"stream data at offset {frame.offset}, expected {self.received}"
                )
            if not 1 <= len(frame.data) <= MAX_FRAME:
                raise ProtocolError(f"stream data frame of {len(frame.data)} bytes")
            end = frame.offset + len(frame.data)
            if end > self.advertised:
                raise ProtocolError(
                    f"stream data up to offset {end} exceeds the credit limit {self.advertised}"
                )
            self._in += frame.data
            self.received = end
        elif isinstance(frame, Eof):
            if self.eof_received:
                raise ProtocolError("second stream EOF")
            if frame.offset != self.received:
                raise ProtocolError(
                    f"stream EOF at offset {frame.offset}, but {self.received} bytes received"
                )
            self.eof_received = True

    def reset(self, reason: str) -> None:
        """Abort the stream both ways: drop both buffers and queue a reset for the peer.
        No-op if already reset."""
        if self.reset_reason is not None:
            return
        self._reset(reason)
        self._reset_pending = Reset(reason[:MAX_REASON])

    def _reset(self, reason: str) -> None:
        self.reset_reason = reason
        self._out.clear()
        self._in.clear()
        self._hello_pending = False

    # -- reading ------------------------------------------------------------------------------

    def peek(self, n: int = -1) -> bytes:
        """Up to ``n`` (all if negative) received bytes, without consuming them."""
        return bytes(self._in if n < 0 else self._in[:n])

    def find(self, separator: bytes, start: int = 0) -> int:
        """Index of ``separator`` in the received bytes, or -1."""
        return self._in.find(separator, start)

    def read(self, n: int = -1) -> bytes:
        """Consume up to ``n`` (all if negative) received bytes; may earn the peer credit
        (see :meth:`next_frame`)."""
        if n < 0 or n >= len(self._in):
            data = bytes(self._in)
            self._in.clear()
        else:
            data = bytes(self._in[:n])
            del self._in[:n]
        self.consumed += len(data)
        return data
