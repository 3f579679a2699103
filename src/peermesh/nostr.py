"""Rooms whose peers meet through Nostr relays — Trystero's default strategy, and ours.

    from peermesh.nostr import join_room      # also: from peermesh import join_room

    async with await join_room("lobby", app_id="my-app") as room:
        ...

Signalling travels as signed ephemeral events (kind 20000–29999, tag ``x``); incoming events
are verified and forgeries dropped. By default five relays are picked from Trystero's list
by the same app-id-seeded shuffle, so Python and browser peers of one app use the same ones.
:class:`Nostr` names this medium for ``peermesh.join_room(..., strategies=[...])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._ice import RtcConfigLike
from ._join import join, relay_urls_for
from ._limits import Limits
from ._room import HandshakeHook, Room
from ._signalling import Signaller
from ._signalling.nostr import acquire_nostr_relay
from ._signalling.topic import TopicSignaller
from ._wire.nostr import DEFAULT_NOSTR_RELAYS, DEFAULT_REDUNDANCY, shuffled_default_relays

__all__ = ["DEFAULT_NOSTR_RELAYS", "Nostr", "join_room"]


@dataclass(frozen=True)
class Nostr:
    """Meet through Nostr relays: all of ``relay_urls``, or the first ``relay_redundancy``
    (default 5) of Trystero's list shuffled by app id. Raises
    :class:`~peermesh.errors.UsageError` for invalid arguments."""

    relay_urls: Sequence[str] | None = None
    relay_redundancy: int | None = None

    def __post_init__(self) -> None:
        self.urls("")

    def urls(self, app_id: str) -> list[str]:
        return relay_urls_for(
            self.relay_urls,
            self.relay_redundancy,
            shuffled_default_relays(app_id),
            DEFAULT_REDUNDANCY,
        )

    def check_peer_id(self, peer_id: str) -> None:
        pass

    def signaller(self, room: Room) -> Signaller:
        return TopicSignaller(room, [acquire_nostr_relay(u) for u in self.urls(room.app_id)])


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
    """Join ``room_id`` of ``app_id`` through Nostr relays and return the room.

    The arguments are those of :func:`peermesh.torrent.join_room`; the default relays are
    five of :data:`DEFAULT_NOSTR_RELAYS`, chosen by app id as Trystero does. Returns
    promptly even when no relay is reachable. Raises :class:`~peermesh.errors.UsageError`
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
        strategies=[Nostr(relay_urls, relay_redundancy)],
    )
