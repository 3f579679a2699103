"""Waiting for the signals that ask a long-running command to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = ["wait_for_stop_signal"]


async def wait_for_stop_signal() -> signal.Signals:
    """Return the signal received, SIGINT (Ctrl-C) or SIGTERM, once one arrives.

    The handlers are removed again on return or cancellation. Where asyncio cannot
    install signal handlers (Windows), Ctrl-C still ends the program through
    ``KeyboardInterrupt``; this then waits forever.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)

    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)
    try:
        return await received
    finally:
        for signum in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
