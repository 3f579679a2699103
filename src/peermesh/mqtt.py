"""Rooms whose peers meet through MQTT brokers (Trystero's ``@trystero-p2p/mqtt``).

    from peermesh.mqtt import join_room

    room = await join_room("lobby", app_id="my-app", relay_urls=["mqtt://127.0.0.1:1883"])

Brokers are reached over WebSocket (``ws://``, ``wss://``, as browsers do) or plain TCP
(``mqtt://``, ``mqtts://``); credentials go in the URL (``mqtt://user:pass@host``). Topics
are the hashed room and peer topics, QoS 0, not retained. :class:`Mqtt` names this medium
for ``peermesh.join_room(..., strategies=[...])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._ice import RtcConfigLike
from ._join import join, relay_urls_for
from ._limits import Limits
from ._room import HandshakeHook, Room
from ._signalling import Signaller
from ._signalling.mqtt import DEFAULT_MQTT_BROKERS, DEFAULT_REDUNDANCY, acquire_mqtt_relay
from ._signalling.topic import TopicSignaller

__all__ = ["DEFAULT_MQTT_BROKERS", "Mqtt", "join_room"]


@dataclass(frozen=True)
class Mqtt:
    """Meet through MQTT brokers: all of ``relay_urls``, or the first ``relay_redundancy``
    (default 4) of :data:`DEFAULT_MQTT_BROKERS`. Raises
    :class:`~peermesh.errors.UsageError` for invalid arguments."""

    relay_urls: Sequence[str] | None = None
    relay_redundancy: int | None = None

    def __post_init__(self) -> None:
        self.urls()

    def urls(self) -> list[str]:
        return relay_urls_for(
            self.relay_urls,
            self.relay_redundancy,
            DEFAULT_MQTT_BROKERS,
            DEFAULT_REDUNDANCY,
            schemes=("mqtt://", "mqtts://", "ws://", "wss://"),
            what="broker",
        )

    def check_peer_id(self, peer_id: str) -> None:
        pass

    def signaller(self, room: Room) -> Signaller:
        return TopicSignaller(room, [acquire_mqtt_relay(url) for url in self.urls()])


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
    """Join ``room_id`` of ``app_id`` through MQTT brokers and return the room.

    The arguments are those of :func:`peermesh.torrent.join_room`; the default brokers
    are the first four of :data:`DEFAULT_MQTT_BROKERS` (Trystero's). Returns promptly even
    when no broker is reachable. Raises :class:`~peermesh.errors.UsageError` for invalid
    arguments.
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
        strategies=[Mqtt(relay_urls, relay_redundancy)],
    )
