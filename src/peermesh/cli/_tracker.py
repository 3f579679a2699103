"""``peermesh tracker``: run the embedded WebTorrent tracker until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
from typing import TYPE_CHECKING

from peermesh.servers.tracker import TrackerServer, serve_tracker

from ._arguments import port_number, positive_float
from ._output import EXIT_OK, CliError, stdout
from ._signals import wait_for_stop_signal

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
    tracker = await _start(host, port, args.interval)
    async with tracker:
        stdout.print(f"tracker listening on {tracker.url}", soft_wrap=True)
        stdout.print("press Ctrl-C to stop", style="dim")
        await wait_for_stop_signal()
        stats = tracker.stats()
    stdout.print(
        f"tracker stopped ({stats.messages_in} messages in, {stats.messages_out} out, "
        f"{stats.offers_forwarded} offers and {stats.answers_forwarded} answers relayed)",
        soft_wrap=True,
    )
    return EXIT_OK


async def _start(host: str, port: int, interval: float) -> TrackerServer:
    """Start the tracker, turning bind failures into one-line :class:`CliError`s."""
    try:
        return await serve_tracker(host, port, interval=interval)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"cannot listen on {where}: the port is already in use "
                "(pick another with --port, or --port 0 for a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise CliError(f"cannot listen on {where}: permission denied") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise CliError(f"cannot listen on {where}: no such local address") from None
        reason = exc.strerror or str(exc)
        raise CliError(f"cannot listen on {where}: {reason}") from None
