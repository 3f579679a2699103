"""The options and code a subcommand needs to join a room: which strategy, app id, room,
relays, and the ICE restrictions (``--ice-address``, ``--no-stun``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

from peermesh import Mqtt, Nostr, Room, Torrent
from peermesh import mqtt as mqtt_strategy
from peermesh import nostr as nostr_strategy
from peermesh import relay as relay_strategy
from peermesh import torrent as torrent_strategy

from ._output import CliError

__all__ = ["STRATEGIES", "add_join_arguments", "default_urls", "join"]

STRATEGIES = ("nostr", "torrent", "mqtt", "relay")

JoinRoom = Callable[..., Coroutine[Any, Any, Room]]

_JOINERS: dict[str, JoinRoom] = {
    "nostr": nostr_strategy.join_room,
    "torrent": torrent_strategy.join_room,
    "mqtt": mqtt_strategy.join_room,
    "relay": relay_strategy.join_room,
}


def add_join_arguments(
    parser: argparse.ArgumentParser, *, strategy: str, app_id: str, room: str | None
) -> None:
    """Add ``--strategy``, ``--app-id``, ``--room`` (required when ``room`` is None),
    ``--relay-url``, ``--ice-address`` and ``--no-stun`` with these defaults."""
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=strategy,
        help=f"how peers meet (default {strategy}, with its default relays)",
    )
    parser.add_argument(
        "--app-id",
        default=app_id,
        metavar="ID",
        help=f"application id (default {app_id}; it also picks the default Nostr relays)",
    )
    if room is None:
        parser.add_argument("--room", required=True, metavar="ROOM", help="room to join")
    else:
        parser.add_argument(
            "--room", default=room, metavar="ROOM", help=f"room to join (default {room})"
        )
    parser.add_argument(
        "--relay-url",
        dest="relay_urls",
        action="append",
        metavar="URL",
        help="relay, tracker or broker URL (repeatable; default: the strategy's public list; "
        "required for --strategy relay)",
    )
    parser.add_argument(
        "--ice-address",
        dest="ice_addresses",
        action="append",
        metavar="ADDRESS",
        help="local address to gather ICE candidates on (repeatable; default: all)",
    )
    parser.add_argument(
        "--no-stun",
        action="store_true",
        help="use no STUN/TURN servers (rtc_config={'iceServers': []})",
    )


def default_urls(strategy: str, app_id: str) -> list[str]:
    """The relays a strategy uses when no ``--relay-url`` is given. Raises
    :class:`CliError` for ``relay``, which has no public default."""
    if strategy == "nostr":
        return Nostr().urls(app_id)
    if strategy == "mqtt":
        return Mqtt().urls()
    if strategy == "torrent":
        return Torrent().urls()
    raise CliError("--strategy relay needs at least one --relay-url (it has no default list)")


async def join(args: argparse.Namespace) -> Room:
    """Join the room the options of :func:`add_join_arguments` describe."""
    if not args.relay_urls:
        default_urls(args.strategy, args.app_id)  # fails early for a strategy without any
    return await _JOINERS[args.strategy](
        args.room,
        app_id=args.app_id,
        relay_urls=args.relay_urls,
        rtc_config={"iceServers": []} if args.no_stun else None,
        ice_addresses=args.ice_addresses,
    )
