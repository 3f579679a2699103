"""``peermesh.join_room``: Nostr by default (as Trystero), or several strategies at once."""

from __future__ import annotations

from collections.abc import Sequence

from ._ice import RtcConfigLike
from ._join import Strategy, join
from ._limits import Limits
from ._room import HandshakeHook, Room
from .errors import UsageError
from .nostr import Nostr

__all__ = ["join_room"]


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
    strategies: Sequence[Strategy] | None = None,
) -> Room:
    """Join ``room_id`` of ``app_id`` and return the room.

    Without ``strategies`` this is :func:`peermesh.nostr.join_room`. With them, peers are
    met through every one at once, e.g. ``strategies=[Torrent(), Nostr(), Mqtt()]``; a peer
    reached through several still gets one connection and one ``on_peer_join``. Relay
    choices then belong to each strategy value, so ``relay_urls`` and ``relay_redundancy``
    must not be given too. Other arguments are those of :func:`peermesh.torrent.join_room`.

    Raises :class:`~peermesh.errors.UsageError` for invalid arguments.
    """
    if strategies is None:
        strategies = [Nostr(relay_urls, relay_redundancy)]
    elif relay_urls is not None or relay_redundancy is not None:
        raise UsageError("with strategies=, give relay_urls to each strategy instead")
    elif isinstance(strategies, str) or not strategies:
        raise UsageError("strategies must be a non-empty list such as [Torrent(), Nostr()]")
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
        strategies=strategies,
    )
