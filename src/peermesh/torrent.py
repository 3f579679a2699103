"""Rooms whose peers meet through WebTorrent WebSocket trackers.

    from peermesh.torrent import join_room

    async with await join_room("lobby", app_id="my-app") as room:
        ...

Wire-compatible with Trystero 0.25's ``@trystero-p2p/torrent``: a Python peer and a browser
peer on the same app id, room and tracker meet and exchange actions. :class:`Torrent`
names this medium for ``peermesh.join_room(..., strategies=[...])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._ice import RtcConfigLike
from ._join import join, relay_urls_for
from ._limits import Limits
from ._room import HandshakeHook, Room
from ._signalling import Signaller
from ._signalling.torrent import DEFAULT_REDUNDANCY, DEFAULT_TRACKER_URLS, TorrentSignaller
from .errors import UsageError

__all__ = ["DEFAULT_TRACKER_URLS", "Torrent", "join_room"]


@dataclass(frozen=True)
class Torrent:
    """Meet through WebTorrent trackers: all of ``relay_urls``, or the first
    ``relay_redundancy`` (default 3) of :data:`DEFAULT_TRACKER_URLS`. Raises
    :class:`~peermesh.errors.UsageError` for invalid arguments."""

    relay_urls: Sequence[str] | None = None
    relay_redundancy: int | None = None

    def __post_init__(self) -> None:
        self.urls()

    def urls(self) -> list[str]:
        return relay_urls_for(
            self.relay_urls,
            self.relay_redundancy,
            DEFAULT_TRACKER_URLS,
            DEFAULT_REDUNDANCY,
            what="tracker",
        )

    def check_peer_id(self, peer_id: str) -> None:
        if len(peer_id) != 20:
            raise UsageError("trackers need a peer_id of exactly 20 characters")

    def signaller(self, room: Room) -> Signaller:
        return TorrentSignaller(room, self.urls())


async def join_room(
    room_id: str,
    *,
    app_id: str,
    relay_urls: Sequence[str] | None = None,
    relay_redundancy: int | None = None,
    password: str | None = None,
    rtc_config: RtcConfigLike = None,
    ice_addresses: Sequence[str] | None = None,
    peer_id: str | None = None,
    passive: bool = False,
    on_peer_handshake: HandshakeHook | None = None,
    handshake_timeout: float | None = None,
    limits: Limits | None = None,
) -> Room:
    """Join ``room_id`` of ``app_id`` through WebTorrent trackers and return the room.

    Args:
        relay_urls: tracker URLs (``ws://`` or ``wss://``), all of which are used. Default:
            the first ``relay_redundancy`` of :data:`DEFAULT_TRACKER_URLS` (Trystero's).
        relay_redundancy: how many default trackers to use (default 3).
        password: encrypts signalling and admits only peers that know it.
        rtc_config: ``{"iceServers": [...]}`` (``[]`` for none) or an aiortc
            ``RTCConfiguration``; default: Trystero's public STUN servers.
        ice_addresses: offer only these local IP addresses as ICE host candidates
            (``["127.0.0.1"]`` keeps everything on loopback).
        peer_id: this peer's 20-character id; default ``peermesh.self_id``.
        passive: join as a dormant backup peer (Trystero's ``passive``): it listens
            without offering, announcing or advertising the room until a non-passive
            peer shows up, and goes dormant again once its last peer is gone.
        on_peer_handshake: ``hook(peer_id, send, receive, is_initiator)``, run for each
            peer before it becomes visible (Trystero's ``onPeerHandshake``); see
            :data:`peermesh.HandshakeHook`. Raising rejects the peer.
        handshake_timeout: seconds a peer has to finish the admission handshake
            (default 10, as Trystero's ``handshakeTimeoutMs``).
        limits: caps on what peers can make this room hold (:class:`peermesh.Limits`;
            default ``Limits()``). Rooms joined with equal limits share one memory budget.

    Returns promptly even when no tracker is reachable: trackers are contacted (and
    retried with backoff) in the background. Raises :class:`~peermesh.errors.UsageError`
    for invalid arguments.
    """
    return await join(
        room_id,
        app_id=app_id,
        password=password,
        rtc_config=rtc_config,
        ice_addresses=ice_addresses,
        peer_id=peer_id,
        passive=passive,
        on_peer_handshake=on_peer_handshake,
        handshake_timeout=handshake_timeout,
        limits=limits,
        strategies=[Torrent(relay_urls, relay_redundancy)],
    )
