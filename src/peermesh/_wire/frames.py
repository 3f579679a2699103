"""Room and presence frames: the outermost layer of every data-channel message (§6.1, §6.2).

Room frame::

    0x01 | token length N (uint16 BE, > 0) | N bytes ASCII token | action chunk

Presence frame::

    0x02 | 0x01 present / 0x00 left | token length N (uint16 BE, > 0) | N bytes token

Handover frame (peermesh only; Trystero drops a message whose first byte is not 1 or 2)::

    0x03 | 0x01 drained / 0x02 drained-seen

A peer that moves its rooms from one connection to a newer one to the same peer (see
``peermesh._shared``) sends *drained* on the old connection after the last frame it will
ever send there, and answers the other side's *drained* with *drained-seen*. Both
directions of the old connection are then known to be delivered, and it can be closed
without losing anything.

Senders build the room-frame prefix once per room (:func:`room_frame_prefix`) and prepend
it to each chunk, or pass it to :func:`peermesh._wire.actions.iter_chunks` so that each
chunk is assembled with a single copy.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from peermesh.errors import ProtocolError, UsageError

__all__ = [
    "HANDOVER_FRAME_VERSION",
    "MAX_TOKEN_LENGTH",
    "PRESENCE_FRAME_VERSION",
    "ROOM_FRAME_VERSION",
    "HandoverFrame",
    "HandoverSignal",
    "PresenceFrame",
    "RoomFrame",
    "encode_handover_frame",
    "encode_presence_frame",
    "encode_room_frame",
    "parse_frame",
    "room_frame_prefix",
]

ROOM_FRAME_VERSION = 1
PRESENCE_FRAME_VERSION = 2
HANDOVER_FRAME_VERSION = 3
MAX_TOKEN_LENGTH = 0xFFFF
"""Longest token the 16-bit length field can describe."""

_U16 = struct.Struct(">H")
_PRESENCE_HEAD = struct.Struct(">BBH")


@dataclass(frozen=True, slots=True)
class RoomFrame:
    """A room frame: ``chunk`` is the action chunk carried for the room ``token``."""

    token: str
    chunk: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PresenceFrame:
    """A presence frame: the sender joined (``present``) or left the room ``token``."""

    token: str
    present: bool


class HandoverSignal(enum.IntEnum):
    """What a handover frame says about the connection it travels on."""

    #: The sender will send nothing more on this connection.
    DRAINED = 1
    #: The sender received the other side's ``DRAINED``.
    DRAINED_SEEN = 2


_HANDOVER_SIGNALS = frozenset(int(signal) for signal in HandoverSignal)


@dataclass(frozen=True, slots=True)
class HandoverFrame:
    """A handover frame (peermesh peers only): see the module docstring."""

    signal: HandoverSignal


def _token_bytes(token: str) -> bytes:
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise UsageError("room token must be ASCII") from None
    if not 0 < len(raw) <= MAX_TOKEN_LENGTH:
        raise UsageError(f"room token must be 1-{MAX_TOKEN_LENGTH} bytes, got {len(raw)}")
    return raw


def room_frame_prefix(token: str) -> bytes:
    """Version byte, 2-byte big-endian token length and the token: ``prefix + chunk`` is a
    room frame. 67 bytes for a normal 64-hex token.

    Raises :class:`UsageError` if ``token`` is empty, not ASCII or longer than 65535 bytes.
    """
    raw = _token_bytes(token)
    return bytes((ROOM_FRAME_VERSION,)) + _U16.pack(len(raw)) + raw


def encode_room_frame(token: str, chunk: bytes) -> bytes:
    """``room_frame_prefix(token) + chunk``. Raises :class:`UsageError` for a bad token."""
    return room_frame_prefix(token) + chunk


def encode_presence_frame(token: str, present: bool) -> bytes:
    """A presence frame for ``token``. Raises :class:`UsageError` for a bad token."""
    raw = _token_bytes(token)
    return _PRESENCE_HEAD.pack(PRESENCE_FRAME_VERSION, int(bool(present)), len(raw)) + raw


def encode_handover_frame(signal: HandoverSignal) -> bytes:
    """A handover frame carrying ``signal``."""
    return bytes((HANDOVER_FRAME_VERSION, signal))


def _decode_token(raw: memoryview) -> str:
    try:
        return str(raw, "ascii")
    except UnicodeDecodeError:
        raise ProtocolError("room token is not ASCII") from None


def parse_frame(
    data: bytes | bytearray | memoryview,
) -> RoomFrame | PresenceFrame | HandoverFrame:
    """Parse one data-channel message.

    For a :class:`RoomFrame`, ``chunk`` is a zero-copy ``memoryview`` slice of ``data`` when
    ``data`` is ``bytes`` or a ``memoryview`` (so ``data`` must not be mutated while the chunk
    is in use); a ``bytearray`` is copied first. A room frame may carry an empty chunk
    (the action layer rejects it). Bytes after a presence frame's token are ignored, as
    Trystero ignores them.

    Raises :class:`ProtocolError` for: empty data, an unknown version byte, a header shorter
    than its fixed part, a token length of 0 or beyond the end of ``data``, a non-ASCII
    token, a presence flag other than 0 or 1 (Trystero reads any other value as 0;
    we reject it), and a handover frame that is not exactly two bytes with a known signal.
    """
    if isinstance(data, bytearray):
        data = bytes(data)
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        view = memoryview(view.tobytes())
    size = len(view)
    if size == 0:
        raise ProtocolError("empty data-channel message")
    version = view[0]
    if version == ROOM_FRAME_VERSION:
        if size < 3:
            raise ProtocolError("truncated room frame header")
        (token_len,) = _U16.unpack_from(view, 1)
        end = 3 + token_len
        if token_len == 0:
            raise ProtocolError("room frame has an empty token")
        if end > size:
            raise ProtocolError("room frame token runs past the end of the message")
        return RoomFrame(_decode_token(view[3:end]), view[end:])
    if version == PRESENCE_FRAME_VERSION:
        if size < 4:
            raise ProtocolError("truncated presence frame header")
        _, flag, token_len = _PRESENCE_HEAD.unpack_from(view, 0)
        end = 4 + token_len
        if flag > 1:
            raise ProtocolError(f"presence flag must be 0 or 1, got {flag}")
        if token_len == 0:
            raise ProtocolError("presence frame has an empty token")
        if end > size:
            raise ProtocolError("presence frame token runs past the end of the message")
        return PresenceFrame(_decode_token(view[4:end]), flag == 1)
    if version == HANDOVER_FRAME_VERSION:
        if size != 2 or view[1] not in _HANDOVER_SIGNALS:
            raise ProtocolError("malformed handover frame")
        return HandoverFrame(HandoverSignal(view[1]))
    raise ProtocolError(f"unknown frame version byte {version}")
