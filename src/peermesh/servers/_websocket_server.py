"""What the embedded tracker and relay servers share: an asyncio WebSocket server whose
clients each get a bounded send queue drained by their own writer task, so one slow client
never stalls the others, and a message handler that can never take a connection down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

__all__ = ["Client", "WebSocketServer"]

_log = logging.getLogger(__name__)

#: Messages and bytes queued for one client before further messages to it are dropped.
MAX_QUEUED_MESSAGES = 256
MAX_QUEUED_BYTES = 1024 * 1024
#: The websockets write buffer per connection.
WRITE_LIMIT = 64 * 1024


class Client:
    """One connected client and its bounded send queue."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.queue: deque[str] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.closed = False


C = TypeVar("C", bound=Client)


class WebSocketServer(Generic[C]):
    """Base of :class:`~peermesh.servers.TrackerServer` and
    :class:`~peermesh.servers.RelayServer`; subclasses handle messages."""

    #: What the server is, for log lines ("tracker", "relay").
    kind = "server"

    def __init__(self, *, host: str, max_message_size: int) -> None:
        self._host = host
        self._port = 0
        self._max_message_size = max_message_size
        self._connections: set[C] = set()
        self._server: Server | None = None
        self._closed = asyncio.Event()
        self._close_lock = asyncio.Lock()
        self._messages_in = 0
        self._messages_out = 0
        self._dropped_oversize = 0
        self._dropped_backpressure = 0

    # -- to implement ---------------------------------------------------------------------

    def _new_client(self, ws: ServerConnection) -> C:
        raise NotImplementedError

    def _on_message(self, conn: C, message: str | bytes) -> None:
        raise NotImplementedError

    def _forget_connection(self, conn: C) -> None:
        """The client is gone: drop everything it registered."""

    async def _on_close(self) -> None:
        """Called once by :meth:`close`, before the listening socket closes."""

    def _on_closed(self) -> None:
        """Called once by :meth:`close`, after every connection handler has finished."""

    # -- public face ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host the server was asked to bind."""
        return self._host

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when ``port=0`` was requested)."""
        return self._port

    @property
    def url(self) -> str:
        """The URL to give clients, e.g. ``ws://127.0.0.1:8000``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self._port}"

    async def close(self) -> None:
        """Stop accepting connections, close open ones (code 1001) and forget all state.

        Idempotent; returns once every connection handler has finished.
        """
        async with self._close_lock:
            if self._closed.is_set():
                return
            await self._on_close()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            self._on_closed()
            self._closed.set()
            _log.info("%s on %s closed", self.kind, self.url)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called or this coroutine is cancelled (which
        closes the server)."""
        try:
            await self._closed.wait()
        finally:
            await asyncio.shield(self.close())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connections ----------------------------------------------------------------------

    async def _listen(
        self,
        port: int,
        *,
        process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    ) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            port,
            process_request=process_request,
            compression=None,  # as bittorrent-tracker and Trystero's relay: no deflate
            max_size=self._max_message_size,
            max_queue=16,
            write_limit=WRITE_LIMIT,
            close_timeout=5,
        )
        sockets = self._server.sockets
        self._port = int(sockets[0].getsockname()[1]) if sockets else port
        _log.info("%s listening on %s", self.kind, self.url)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = self._new_client(ws)
        self._connections.add(conn)
        writer = asyncio.create_task(self._write_loop(conn))
        try:
            async for message in ws:
                self._messages_in += 1
                try:
                    self._on_message(conn, message)
                except Exception:  # a bug here must not take the connection down
                    _log.exception("%s failed to handle a message", self.kind)
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self._dropped_oversize += 1
                _log.debug("closed %s: message larger than %d bytes", ws.id, self._max_message_size)
        finally:
            conn.closed = True
            self._connections.discard(conn)
            self._forget_connection(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write_loop(self, conn: C) -> None:
        while True:
            while not conn.queue:
                conn.wakeup.clear()
                await conn.wakeup.wait()
            text = conn.queue.popleft()
            conn.queued_bytes -= len(text)
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                return
            self._messages_out += 1

    def _send(self, conn: C, text: str) -> bool:
        """Queue ``text`` (ASCII JSON, so len == bytes) for ``conn`` without blocking;
        return whether it was queued (a full queue drops it and counts the drop)."""
        if conn.closed:
            return False
        if conn.queue and (
            len(conn.queue) >= MAX_QUEUED_MESSAGES
            or conn.queued_bytes + len(text) > MAX_QUEUED_BYTES
        ):
            self._dropped_backpressure += 1
            _log.debug("send queue of %s full; message dropped", conn.ws.id)
            return False
        conn.queue.append(text)
        conn.queued_bytes += len(text)
        conn.wakeup.set()
        return True
