"""``peermesh relay``: run the embedded ws-relay server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from peermesh.servers.relay import RelayServer, serve_relay

from ._arguments import port_number
from ._serving import serve_until_stopped

if TYPE_CHECKING:
    from ._app import SubParsers

__all__ = ["register", "run_relay"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def register(subparsers: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add the ``relay`` subcommand."""
    parser = subparsers.add_parser(
        "relay",
        parents=[common],
        help="run a ws-relay (WebSocket pub/sub) signalling server for peermesh and Trystero",
        description="Run the embedded ws-relay server until Ctrl-C or SIGTERM. Point peers "
        "at it with peermesh.relay.join_room(..., relay_urls=[URL]) or Trystero's ws-relay "
        "strategy (relayUrls).",
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
    parser.set_defaults(handler=run_relay)


async def run_relay(args: argparse.Namespace) -> int:
    """Serve until a stop signal; print the URL on start and a one-line tally on stop."""
    host: str = args.host
    port: int = args.port

    def tally(relay: RelayServer) -> str:
        stats = relay.stats()
        return (
            f"{stats.messages_in} messages in, {stats.messages_out} out, "
            f"{stats.published} published"
        )

    return await serve_until_stopped("relay", host, port, lambda: serve_relay(host, port), tally)
