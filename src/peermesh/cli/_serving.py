"""Running an embedded server from the command line (``peermesh tracker``, ``relay``)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from peermesh.servers._websocket_server import WebSocketServer

from ._output import EXIT_OK, CliError, stdout
from ._signals import wait_for_stop_signal

__all__ = ["serve_until_stopped"]

S = TypeVar("S", bound=WebSocketServer[Any])


async def serve_until_stopped(
    kind: str,
    host: str,
    port: int,
    start: Callable[[], Awaitable[S]],
    tally: Callable[[S], str],
) -> int:
    """Start a server, print its URL, serve until Ctrl-C or SIGTERM, then print
    ``"<kind> stopped (<tally>)"``. Bind failures become one-line :class:`CliError`s."""
    try:
        server = await start()
    except OSError as exc:
        raise _bind_error(exc, f"{host}:{port}") from None
    async with server:
        # The handlers go in before the URL is printed: whoever reads it may stop us at once.
        stop = asyncio.ensure_future(wait_for_stop_signal())
        try:
            await asyncio.sleep(0)  # the task runs up to its wait: the handlers are in
            stdout.print(f"{kind} listening on {server.url}", soft_wrap=True)
            stdout.print("press Ctrl-C to stop", style="dim")
            await stop
        finally:
            stop.cancel()
        summary = tally(server)
    stdout.print(f"{kind} stopped ({summary})", soft_wrap=True)
    return EXIT_OK


def _bind_error(exc: OSError, where: str) -> CliError:
    if exc.errno == errno.EADDRINUSE:
        return CliError(
            f"cannot listen on {where}: the port is already in use "
            "(pick another with --port, or --port 0 for a free one)"
        )
    if exc.errno == errno.EACCES:
        return CliError(f"cannot listen on {where}: permission denied")
    if exc.errno == errno.EADDRNOTAVAIL:
        return CliError(f"cannot listen on {where}: no such local address")
    return CliError(f"cannot listen on {where}: {exc.strerror or exc}")
