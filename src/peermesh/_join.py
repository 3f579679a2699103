"""What every strategy's ``join_room`` shares: validation, the room, its shared links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._ice import RtcConfigLike, normalise_ice_addresses, to_rtc_configuration
from ._limits import DEFAULT_LIMITS, Limits
from ._room import HANDSHAKE_TIMEOUT, HandshakeHook, Room
from ._shared import shared_links
from ._signalling import Signaller
from ._wire.topics import gen_id, is_peer_id
from .errors import UsageError

__all__ = ["SELF_ID", "Strategy", "join", "relay_urls_for"]

#: This process's peer id, shared by every room (as Trystero's ``selfId``).
SELF_ID = gen_id(20)


class Strategy(Protocol):
    """Where peers meet: ``peermesh.torrent.Torrent``, ``peermesh.nostr.Nostr``,
    ``peermesh.mqtt.Mqtt`` or ``peermesh.relay.WsRelay``."""

    def check_peer_id(self, peer_id: str) -> None:
        """Raise :class:`UsageError` if this medium cannot carry ``peer_id``."""

    def signaller(self, room: Room) -> Signaller:
        """A new signaller for ``room`` on this medium."""


async def join(
    room_id: str,
    *,
    app_id: str,
    password: str | None,
    rtc_config: RtcConfigLike,
    ice_addresses: Sequence[str] | None,
    peer_id: str | None,
    strategies: Sequence[Strategy],
    passive: bool = False,
    on_peer_handshake: HandshakeHook | None = None,
    handshake_timeout: float | None = None,
    limits: Limits | None = None,
) -> Room:
    """Join ``room_id`` of ``app_id`` as ``peer_id`` (default :data:`SELF_ID`), meeting
    peers through every one of ``strategies`` at once.

    Joining a room this identity is already in returns that same room, as in Trystero.
    Raises :class:`UsageError` for an empty ``app_id``/``room_id`` or ``strategies``, a
    malformed ``peer_id``, ``rtc_config`` or ``ice_addresses``, a non-callable
    ``on_peer_handshake``, a non-positive ``handshake_timeout`` or ``limits`` that is not a
    :class:`Limits`.
    """
    if not strategies:
        raise UsageError("strategies must name at least one strategy")
    if not isinstance(app_id, str) or not app_id:
        raise UsageError("app_id must be a non-empty string")
    if not isinstance(room_id, str) or not room_id:
        raise UsageError("room_id must be a non-empty string")
    if password is not None and not isinstance(password, str):
        raise UsageError("password must be a string or None")
    self_id = SELF_ID if peer_id is None else peer_id
    if not is_peer_id(self_id):
        raise UsageError(f"peer_id {peer_id!r} is not a valid peer id")
    for strategy in strategies:
        strategy.check_peer_id(self_id)
    if on_peer_handshake is not None and not callable(on_peer_handshake):
        raise UsageError("on_peer_handshake must be callable")
    if handshake_timeout is None:
        handshake_timeout = HANDSHAKE_TIMEOUT
    elif not isinstance(handshake_timeout, int | float) or not handshake_timeout > 0:
        raise UsageError("handshake_timeout must be a positive number of seconds")
    if limits is None:
        limits = DEFAULT_LIMITS
    elif not isinstance(limits, Limits):
        raise UsageError("limits must be a peermesh.Limits value")
    configuration = to_rtc_configuration(rtc_config)
    addresses = normalise_ice_addresses(ice_addresses)
    shared = shared_links(self_id, app_id)
    room = Room(
        app_id=app_id,
        room_id=room_id,
        self_id=self_id,
        password=password,
        shared=shared,
        configuration=configuration,
        ice_addresses=addresses,
        passive=bool(passive),
        on_peer_handshake=on_peer_handshake,
        handshake_timeout=float(handshake_timeout),
        limits=limits,
    )
    existing = shared.rooms.get(room.token)
    if isinstance(existing, Room) and not existing.closed:
        return existing
    shared.add_room(room)
    room._signallers = [strategy.signaller(room) for strategy in strategies]
    for signaller in room._signallers:
        await signaller.start()
    return room


def relay_urls_for(
    relay_urls: Sequence[str] | None,
    relay_redundancy: int | None,
    defaults: Sequence[str],
    default_redundancy: int,
    *,
    schemes: tuple[str, ...] = ("ws://", "wss://"),
    what: str = "relay",
) -> list[str]:
    """The URLs a strategy uses: all of ``relay_urls`` if given (duplicates dropped), else
    the first ``relay_redundancy`` (default ``default_redundancy``) of ``defaults``.

    Raises :class:`UsageError` for a string instead of a list, an empty list, a redundancy
    below 1, no defaults to fall back on, or a URL with an unsupported scheme.
    """
    if relay_urls is not None:
        if isinstance(relay_urls, str):
            raise UsageError("relay_urls must be a list of URLs, not a string")
        urls = list(dict.fromkeys(relay_urls))
        if not urls:
            raise UsageError("relay_urls must contain at least one URL")
    else:
        count = default_redundancy if relay_redundancy is None else relay_redundancy
        if count < 1:
            raise UsageError("relay_redundancy must be at least 1")
        if not defaults:
            raise UsageError(f"this strategy has no default {what}s: pass relay_urls")
        urls = list(defaults[:count])
    for url in urls:
        if not isinstance(url, str) or not url.startswith(schemes):
            raise UsageError(f"{what} URL {url!r} must start with one of {', '.join(schemes)}")
    return urls
