"""peermesh: serverless peer-to-peer rooms over WebRTC, wire-compatible with Trystero 0.25.

Pick where peers meet by importing a strategy's ``join_room``::

    from peermesh.torrent import join_room

Everything else a user touches is re-exported here.
"""

from __future__ import annotations

from ._join import SELF_ID as self_id
from ._room import Action, JoinErrorEvent, Room
from ._signalling import RelayHealth, RelayState, relay_health
from .errors import (
    HandshakeError,
    PeerError,
    PeermeshError,
    PeerTimeoutError,
    PeerUnavailableError,
    ProtocolError,
    RelayError,
    RelayProtocolError,
    RoomClosedError,
    SealError,
    UsageError,
)

__all__ = [
    "Action",
    "HandshakeError",
    "JoinErrorEvent",
    "PeerError",
    "PeerTimeoutError",
    "PeerUnavailableError",
    "PeermeshError",
    "ProtocolError",
    "RelayError",
    "RelayHealth",
    "RelayProtocolError",
    "RelayState",
    "Room",
    "RoomClosedError",
    "SealError",
    "UsageError",
    "relay_health",
    "self_id",
]

__version__ = "0.1.0"
