"""``peermesh relay``: run the embedded ws-relay server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
from typing import TYPE_CHECKING

from peermesh.servers.relay import RelayServer, serve_relay

from ._arguments import port_number
from ._output import EXIT_OK, CliError, stdout
from ._signals import wait_for_stop_signal

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
    relay = await _start(host, port)
    async with relay:
        stdout.print(f"relay listening on {relay.url}", soft_wrap=True)
        stdout.print("press Ctrl-C to stop", style="dim")
        await wait_for_stop_signal()
        stats = relay.stats()
    stdout.print(
        f"relay stopped ({stats.messages_in} messages in, {stats.messages_out} out, "
        f"{stats.published} published)",
        soft_wrap=True,
    )
    return EXIT_OK


async def _start(host: str, port: int) -> RelayServer:
    """Start the relay, turning bind failures into one-line :class:`CliError`s."""
    try:
        return await serve_relay(host, port)
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
