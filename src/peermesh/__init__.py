"""peermesh: serverless peer-to-peer rooms over WebRTC, wire-compatible with Trystero 0.25.

``peermesh.join_room`` meets peers through Nostr relays, Trystero's default; pick another
medium by importing its strategy's ``join_room`` (``peermesh.torrent``, ``peermesh.mqtt``,
``peermesh.relay``), or several at once with ``join_room(..., strategies=[Torrent(),
Nostr()])``. Everything else a user touches is re-exported here.
"""

from __future__ import annotations

from ._default import join_room
from ._events import ActionMessage, PeerJoined, PeerLeft, PeerStream, PeerTrack, RoomEvent
from ._join import SELF_ID as self_id
from ._limits import Limits
from ._requests import RequestAction, RequestMany
from ._room import Action, HandshakeHook, HandshakeReceive, HandshakeSend, JoinErrorEvent, Room
from ._rpc import caller_id
from ._signalling import RelayHealth, RelayState, relay_health
from ._sockets import PeerSocket, StreamReader, StreamWriter
from .errors import (
    HandshakeError,
    PeerError,
    PeermeshError,
    PeerTimeoutError,
    PeerUnavailableError,
    ProtocolError,
    RelayError,
    RelayProtocolError,
    RequestError,
    RoomClosedError,
    SealError,
    StreamResetError,
    UsageError,
)
from .mqtt import Mqtt
from .nostr import Nostr
from .relay import WsRelay
from .torrent import Torrent

__all__ = [
    "Action",
    "ActionMessage",
    "HandshakeError",
    "HandshakeHook",
    "HandshakeReceive",
    "HandshakeSend",
    "JoinErrorEvent",
    "Limits",
    "Mqtt",
    "Nostr",
    "PeerError",
    "PeerJoined",
    "PeerLeft",
    "PeerSocket",
    "PeerStream",
    "PeerTimeoutError",
    "PeerTrack",
    "PeerUnavailableError",
    "PeermeshError",
    "ProtocolError",
    "RelayError",
    "RelayHealth",
    "RelayProtocolError",
    "RelayState",
    "RequestAction",
    "RequestError",
    "RequestMany",
    "Room",
    "RoomClosedError",
    "RoomEvent",
    "SealError",
    "StreamReader",
    "StreamResetError",
    "StreamWriter",
    "Torrent",
    "UsageError",
    "WsRelay",
    "caller_id",
    "join_room",
    "relay_health",
    "self_id",
]

__version__ = "0.1.0"
