"""The peermesh exception hierarchy, split by who is to blame.

::

    PeermeshError
    ├── UsageError                 bad local use: wrong argument, closed room (also ValueError)
    │   └── RoomClosedError        the room was left; make a new one with join_room()
    ├── PeerError                  a remote peer misbehaved, failed or went away
    │   ├── ProtocolError          a peer sent bytes that break the wire format
    │   │   └── SealError          an SDP/candidate could not be decrypted (wrong password?)
    │   ├── HandshakeError         the admission handshake failed (password mismatch, timeout)
    │   ├── PeerUnavailableError   the target peer is not (or no longer) in the room
    │   ├── StreamResetError       a byte stream was aborted by (or because of) the peer
    │   ├── RequestError           a peer answered a request with an error
    │   └── PeerTimeoutError       a peer did not answer in time (also TimeoutError)
    └── RelayError                 a tracker, relay or broker failed or misbehaved
        └── RelayProtocolError     a relay sent a message that breaks its protocol

Third-party exceptions (aiortc, websockets, cryptography) are mapped onto this tree at
the boundary where they are caught; callers never need to import those libraries to
handle a peermesh failure.

Errors caused by remote input (``PeerError``, ``RelayError``) are normally *not* raised
into user code: the offending frame or message is dropped, logged at DEBUG and counted,
and the room keeps working. They are raised only from calls that are about that peer or
relay, e.g. ``Room.ping()`` on a peer that left raises :class:`PeerUnavailableError`.
"""

from __future__ import annotations

__all__ = [
    "HandshakeError",
    "PeerError",
    "PeerTimeoutError",
    "PeerUnavailableError",
    "PeermeshError",
    "ProtocolError",
    "RelayError",
    "RelayProtocolError",
    "RequestError",
    "RoomClosedError",
    "SealError",
    "StreamResetError",
    "UsageError",
]


class PeermeshError(Exception):
    """Root of every exception peermesh raises on purpose."""


class UsageError(PeermeshError, ValueError):
    """The library was called in a way it does not support. Fix the calling code."""


class RoomClosedError(UsageError):
    """The room has been left; no further sends, pings or actions are possible on it."""


class PeerError(PeermeshError):
    """A remote peer misbehaved, failed or went away."""


class ProtocolError(PeerError):
    """Bytes from a peer (or relayed for a peer) do not follow the Trystero wire format."""


class SealError(ProtocolError):
    """An encrypted SDP or candidate could not be opened: corrupt, or sealed with another
    password."""


class HandshakeError(PeerError):
    """The per-room admission handshake with a peer failed or timed out."""


class PeerUnavailableError(PeerError):
    """The peer is not an active member of the room (never joined, or has left)."""


class RequestError(PeerError):
    """A peer answered a request with an error (Trystero's ``@_response`` with ``e``).

    ``str(error)`` and :attr:`remote_message` are the peer's error text, e.g. ``"request
    handler unavailable"`` or the message of the exception its handler raised;
    :attr:`peer_id` is the peer that answered (``None`` if unknown).
    """

    def __init__(self, remote_message: str, *, peer_id: str | None = None) -> None:
        super().__init__(remote_message)
        self.remote_message = remote_message
        self.peer_id = peer_id


class PeerTimeoutError(PeerError, TimeoutError):
    """A peer did not answer within the allotted time."""


class StreamResetError(PeerError):
    """A byte stream (``Room.open_stream``) was aborted: the peer reset it, or it broke the
    stream protocol (then we reset it). Unread and unsent bytes are lost."""


class RelayError(PeermeshError):
    """A signalling relay (tracker, Nostr relay, MQTT broker, ws-relay) failed."""


class RelayProtocolError(RelayError):
    """A relay sent something that is not a valid message of its protocol."""
