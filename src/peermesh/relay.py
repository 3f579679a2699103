"""Rooms whose peers meet through a self-hosted WebSocket relay (Trystero's ws-relay).

    from peermesh.relay import join_room

    room = await join_room("lobby", app_id="my-app", relay_urls=["ws://127.0.0.1:8080"])

Run a relay with ``peermesh relay --port 8080`` (or ``serve_relay()`` from
:mod:`peermesh.servers`). There are no default relays: ``relay_urls`` is required.
:class:`WsRelay` names this medium for ``peermesh.join_room(..., strategies=[...])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._ice import RtcConfigLike
from ._join import join, relay_urls_for
from ._limits import Limits
from ._room import HandshakeHook, Room
from ._signalling import Signaller
from ._signalling.topic import TopicSignaller
from ._signalling.ws_relay import acquire_ws_relay

__all__ = ["WsRelay", "join_room"]


@dataclass(frozen=True)
class WsRelay:
    """Meet through ws-relay servers: all of ``relay_urls`` (required). Raises
    :class:`~peermesh.errors.UsageError` for invalid arguments."""

    relay_urls: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.urls()

    def urls(self) -> list[str]:
        return relay_urls_for(self.relay_urls, None, (), 0)

    def check_peer_id(self, peer_id: str) -> None:
        pass

    def signaller(self, room: Room) -> Signaller:
        return TopicSignaller(room, [acquire_ws_relay(url) for url in self.urls()])


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
    """Join ``room_id`` of ``app_id`` through ws-relay servers and return the room.

    The arguments are those of :func:`peermesh.torrent.join_room`; ``relay_urls`` is
    required and ``relay_redundancy`` is ignored (ws-relay has no default list). Returns
    promptly even when no relay is reachable. Raises :class:`~peermesh.errors.UsageError`
    for invalid arguments.
    """
    del relay_redundancy
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
        strategies=[WsRelay(relay_urls)],
    )
