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
from collections import deque
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import call_logged

__all__ = ["Backoff", "OrderedSender", "ReconnectingWebSocket", "SocketState"]

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
                    call_logged(self.url, self._on_open)
                    async for message in ws:
                        self.messages_received += 1
                        if isinstance(message, bytes):
                            message = message.decode("utf-8", "replace")
                        call_logged(self.url, self._on_message, message)
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


_READY = object()
"""Queue marker: everything queued before it for this connection has been written."""


class _Queued:
    __slots__ = ("done", "generation", "item")

    def __init__(
        self, item: str | object, generation: int, done: asyncio.Future[bool] | None
    ) -> None:
        self.item = item
        self.generation = generation
        self.done = done


class OrderedSender:
    """Writes text messages through ``send`` strictly in the order they were queued, one
    connection at a time.

    After :meth:`new_connection`, whatever was queued for the previous connection is
    dropped (a waiting :meth:`send` returns False). :meth:`mark_ready` queues a marker:
    ``on_ready()`` runs once everything queued before it has been written — relays use it
    to announce only after their subscriptions reached the server. At most
    ``max_pending`` :meth:`send` calls wait at once; more return False at once.
    """

    def __init__(
        self,
        url: str,
        send: Callable[[str], Awaitable[bool]],
        on_ready: Callable[[], None],
        *,
        max_pending: int = 256,
    ) -> None:
        self.url = url
        self._send = send
        self._on_ready = on_ready
        self._max_pending = max_pending
        self._generation = 0
        self._queue: deque[_Queued] = deque()
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._writer = asyncio.ensure_future(self._write_loop())

    @property
    def pending(self) -> int:
        """How many :meth:`send` calls are waiting for their message to be written."""
        return self._pending

    def new_connection(self) -> None:
        """Everything queued so far belongs to a connection that is gone."""
        self._generation += 1

    def enqueue(self, text: str) -> None:
        """Queue ``text`` without waiting for it to be written."""
        self._put(text, None)

    def mark_ready(self) -> None:
        """Call ``on_ready()`` once everything queued so far has been written."""
        self._put(_READY, None)

    async def send(self, text: str) -> bool:
        """Queue ``text`` and return whether it was written (False when the connection
        went away first, or too many sends are already waiting)."""
        if self._pending >= self._max_pending:
            logger.debug("%s: %d messages waiting; refused one", self.url, self._pending)
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending += 1
        try:
            self._put(text, done)
            return await done
        finally:
            self._pending -= 1

    def fail_queued(self) -> None:
        """Drop everything queued; waiting senders get False."""
        while self._queue:
            _resolve(self._queue.popleft().done, False)

    async def close(self) -> None:
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self.fail_queued()

    def _put(self, item: str | object, done: asyncio.Future[bool] | None) -> None:
        self._queue.append(_Queued(item, self._generation, done))
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            entry = self._queue.popleft()
            if entry.generation != self._generation:  # queued for a connection now gone
                _resolve(entry.done, False)
                continue
            if entry.item is _READY:
                try:
                    self._on_ready()
                except Exception:
                    logger.exception("%s: ready callback raised", self.url)
                continue
            assert isinstance(entry.item, str)
            try:
                sent = await self._send(entry.item)
            except asyncio.CancelledError:
                _resolve(entry.done, False)
                raise
            except Exception as exc:  # e.g. a lone surrogate that cannot be UTF-8 encoded
                logger.debug("%s: could not send a message: %r", self.url, exc)
                sent = False
            _resolve(entry.done, sent)


def _resolve(done: asyncio.Future[bool] | None, value: bool) -> None:
    if done is not None and not done.done():
        done.set_result(value)
