"""What every strategy's ``join_room`` shares: validation, the room, its shared links."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._ice import RtcConfigLike, normalise_ice_addresses, to_rtc_configuration
from ._room import Room
from ._shared import shared_links
from ._signalling import Signaller
from ._wire.topics import gen_id, is_peer_id
from .errors import UsageError

__all__ = ["SELF_ID", "join"]

#: This process's peer id, shared by every room (as Trystero's ``selfId``).
SELF_ID = gen_id(20)


async def join(
    room_id: str,
    *,
    app_id: str,
    password: str | None,
    rtc_config: RtcConfigLike,
    ice_addresses: Sequence[str] | None,
    peer_id: str | None,
    make_signallers: Callable[[Room], list[Signaller]],
) -> Room:
    """Join ``room_id`` of ``app_id`` as ``peer_id`` (default :data:`SELF_ID`).

    Joining a room this identity is already in returns that same room, as in Trystero.
    Raises :class:`UsageError` for an empty ``app_id``/``room_id``, a malformed ``peer_id``,
    ``rtc_config`` or ``ice_addresses``.
    """
    if not isinstance(app_id, str) or not app_id:
        raise UsageError("app_id must be a non-empty string")
    if not isinstance(room_id, str) or not room_id:
        raise UsageError("room_id must be a non-empty string")
    if password is not None and not isinstance(password, str):
        raise UsageError("password must be a string or None")
    self_id = SELF_ID if peer_id is None else peer_id
    if not is_peer_id(self_id):
        raise UsageError(f"peer_id {peer_id!r} is not a valid peer id")
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
    )
    existing = shared.rooms.get(room.token)
    if isinstance(existing, Room) and not existing.closed:
        return existing
    shared.add_room(room)
    room._signallers = make_signallers(room)
    for signaller in room._signallers:
        await signaller.start()
    return room
