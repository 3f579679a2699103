"""A WebSocket client that keeps reconnecting, shared by the WebSocket-based strategies.

Reconnection follows Trystero (wire notes §3): after a close, wait a random time in
``[0, period)``; the period starts at 3.333 s and doubles up to 60 s; a successful open
resets it. Unlike Trystero we never give up while someone still uses the socket — at 60 s a
retry costs nothing measurable — so a relay that returns after an hour is used again.

The socket's health is observable through :attr:`ReconnectingWebSocket.state`,
``last_error`` and the message counters.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

__all__ = ["Backoff", "ReconnectingWebSocket", "SocketState"]

logger = logging.getLogger(__name__)


class Backoff:
    """Jittered exponential backoff: ``next_delay()`` is uniform in ``[0, period)``."""

    def __init__(
        self,
        *,
        initial: float = 3.333,
        maximum: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.period = initial
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.period)
        self.period = min(self.period * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.period = self.initial


class SocketState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing off"
    CLOSED = "closed"


class ReconnectingWebSocket:
    """A text WebSocket to ``url`` that reconnects until :meth:`close` is called.

    ``on_open()`` runs after every successful (re)connection; ``on_message(text)`` for every
    message, synchronously, in order. Incoming messages over ``max_size`` bytes close the
    connection (and count as an error); a reconnect follows. ``backoff`` replaces the default
    reconnection schedule (tests use a short one).
    """

    def __init__(
        self,
        url: str,
        *,
        on_open: Callable[[], None],
        on_message: Callable[[str], None],
        max_size: int = 256 * 1024,
        open_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.state = SocketState.CONNECTING
        self.last_error: str | None = None
        self.messages_sent = 0
        self.messages_received = 0
        self._on_open = on_open
        self._on_message = on_message
        self._max_size = max_size
        self._open_timeout = open_timeout
        self._backoff = backoff or Backoff()
        self._ws: ClientConnection | None = None
        self._closing = False
        self._task = asyncio.ensure_future(self._run())

    def __repr__(self) -> str:
        return f"<ReconnectingWebSocket {self.url} {self.state.value}>"

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self.state is SocketState.OPEN

    async def send(self, text: str) -> bool:
        """Send a message if the socket is open; return whether it was sent."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(text)
        except ConnectionClosed:
            return False
        self.messages_sent += 1
        return True

    async def close(self) -> None:
        """Close for good. Idempotent."""
        self._closing = True
        self.state = SocketState.CLOSED
        self._task.cancel()
        ws = self._ws
        if ws is not None:
            await ws.close()
        await asyncio.gather(self._task, return_exceptions=True)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("%s: handler %r raised", self.url, callback)

    async def _run(self) -> None:
        while not self._closing:
            self.state = SocketState.CONNECTING
            try:
                async with connect(
                    self.url,
                    max_size=self._max_size,
                    open_timeout=self._open_timeout,
                    close_timeout=2,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    self.state = SocketState.OPEN
                    self._backoff.reset()
                    logger.debug("%s: connected", self.url)
                    self._call(self._on_open)
                    async for message in ws:
                        self.messages_received += 1
                        if isinstance(message, bytes):
                            message = message.decode("utf-8", "replace")
                        self._call(self._on_message, message)
                    self.last_error = "closed by the relay"
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.debug("%s: %s", self.url, self.last_error)
            except InvalidURI as exc:
                self.last_error = f"invalid URL: {exc}"
                logger.warning("%s: %s; not retrying", self.url, self.last_error)
                self.state = SocketState.CLOSED
                return
            finally:
                self._ws = None
            if self._closing:
                break
            self.state = SocketState.BACKING_OFF
            await asyncio.sleep(self._backoff.next_delay())
        self.state = SocketState.CLOSED
