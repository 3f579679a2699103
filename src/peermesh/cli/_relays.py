"""``peermesh relays``: join a room, then show the health of every signalling relay.

One row per relay connection from :func:`peermesh.relay_health` (URL, state, last error,
messages sent, received and dropped). Exit status 0 when at least one relay is open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

import peermesh
from peermesh import RelayHealth, RelayState

from ._arguments import positive_float
from ._joining import add_join_arguments, default_urls, join
from ._output import EXIT_FAILURE, EXIT_OK, stdout
from ._signals import wait_for_stop_signal

if TYPE_CHECKING:
    from ._app import SubParsers

__all__ = ["register", "run_relays"]

DEFAULT_STRATEGY = "nostr"
DEFAULT_APP_ID = "peermesh-relays"
DEFAULT_ROOM = "health-check"
DEFAULT_WAIT = 3.0

_STATE_STYLES = {
    RelayState.OPEN: "green",
    RelayState.CONNECTING: "yellow",
    RelayState.BACKING_OFF: "red",
    RelayState.RETIRED: "dim",
    RelayState.CLOSED: "dim",
}


def register(subparsers: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add the ``relays`` subcommand."""
    parser = subparsers.add_parser(
        "relays",
        parents=[common],
        help="join a room and show the health of each signalling relay it uses",
        description="Join a room through one strategy, wait a few seconds, then print one "
        "row per relay connection (URL, state, last error, messages sent, received, "
        "dropped) and leave. Exit status 0 if at least one relay is open, 1 otherwise.",
    )
    add_join_arguments(parser, strategy=DEFAULT_STRATEGY, app_id=DEFAULT_APP_ID, room=DEFAULT_ROOM)
    parser.add_argument(
        "--wait",
        type=positive_float,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long to let connections settle before the first report "
        f"(default {DEFAULT_WAIT:g})",
    )
    parser.add_argument(
        "--watch",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="keep the room and print the table again every SECONDS until Ctrl-C",
    )
    parser.set_defaults(handler=run_relays)


async def run_relays(args: argparse.Namespace) -> int:
    """Join, report (once, or every ``--watch`` seconds until a stop signal), leave."""
    strategy: str = args.strategy
    relay_urls: list[str] | None = args.relay_urls
    if not relay_urls:
        urls = default_urls(strategy, args.app_id)
        stdout.print(
            f"using the default {strategy} relays: {', '.join(urls)}",
            soft_wrap=True,
            markup=False,
        )
    room = await join(args)
    try:
        await asyncio.sleep(args.wait)
        health = peermesh.relay_health()
        stdout.print(health_table(health))
        if args.watch is not None:
            health = await _watch(args.watch, health)
    finally:
        await room.leave()
    return EXIT_OK if any_open(health) else EXIT_FAILURE


async def _watch(period: float, health: list[RelayHealth]) -> list[RelayHealth]:
    """Reprint the table every ``period`` seconds until SIGINT/SIGTERM; the last snapshot."""
    stop = asyncio.ensure_future(wait_for_stop_signal())
    try:
        while True:
            done, _ = await asyncio.wait({stop}, timeout=period)
            if done:
                return health
            health = peermesh.relay_health()
            stdout.print(health_table(health))
    finally:
        stop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def any_open(health: Sequence[RelayHealth]) -> bool:
    """Whether at least one relay connection is open."""
    return any(h.state is RelayState.OPEN for h in health)


def health_table(health: Sequence[RelayHealth]) -> Table:
    """The rich table of relay health rows (no markup is interpreted in the values)."""
    opened = sum(h.state is RelayState.OPEN for h in health)
    table = Table(title=f"{opened} of {len(health)} relays open", title_justify="left")
    table.add_column("URL", no_wrap=True, overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("last error", overflow="fold")
    table.add_column("sent", justify="right")
    table.add_column("received", justify="right")
    table.add_column("dropped", justify="right")
    for h in health:
        table.add_row(
            Text(h.url),
            Text(h.state.value, style=_STATE_STYLES.get(h.state, "")),
            Text(h.last_error or "-"),
            str(h.messages_sent),
            str(h.messages_received),
            str(h.messages_dropped),
        )
    return table
