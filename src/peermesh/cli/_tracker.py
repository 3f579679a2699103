"""``peermesh tracker``: run the embedded WebTorrent tracker until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from peermesh.servers.tracker import TrackerServer, serve_tracker

from ._arguments import port_number, positive_float
from ._serving import serve_until_stopped

if TYPE_CHECKING:
    from ._app import SubParsers

__all__ = ["register", "run_tracker"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_INTERVAL = 120.0


def register(subparsers: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add the ``tracker`` subcommand."""
    parser = subparsers.add_parser(
        "tracker",
        parents=[common],
        help="run a WebTorrent tracker (signalling server) for peermesh and Trystero peers",
        description="Run the embedded WebTorrent tracker until Ctrl-C or SIGTERM. Point "
        "peers at it with join_room(..., relay_urls=[URL]) or Trystero's relayConfig.",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one and prints it)",
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"announce interval advertised to clients (default {DEFAULT_INTERVAL:g}; "
        "Trystero clamps it to 10-120)",
    )
    parser.set_defaults(handler=run_tracker)


async def run_tracker(args: argparse.Namespace) -> int:
    """Serve until a stop signal; print the URL on start and a one-line tally on stop."""
    host: str = args.host
    port: int = args.port

    def tally(tracker: TrackerServer) -> str:
        stats = tracker.stats()
        return (
            f"{stats.messages_in} messages in, {stats.messages_out} out, "
            f"{stats.offers_forwarded} offers and {stats.answers_forwarded} answers relayed"
        )

    return await serve_until_stopped(
        "tracker", host, port, lambda: serve_tracker(host, port, interval=args.interval), tally
    )
