"""The reconnecting WebSocket shared by the WebSocket strategies, against real servers on
loopback (wire notes §3: jittered backoff from 3.333 s doubling to 60 s, reset on open)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from peermesh._signalling.websocket import Backoff, ReconnectingWebSocket, SocketState
from tests.rooms import eventually

Script = Callable[[ServerConnection, int], Awaitable[None]]


class Relay:
    """A real WebSocket server on 127.0.0.1 that runs ``script(ws, n)`` for its n-th
    connection (counting from 0, across restarts) and records what clients send."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.received: list[str] = []
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        reader = asyncio.ensure_future(self._read(ws))
        try:
            await self.script(ws, index)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                self.received.append(str(message))


async def hold_open(ws: ServerConnection, index: int) -> None:
    await ws.wait_closed()


@contextlib.asynccontextmanager
async def relay(script: Script = hold_open) -> AsyncIterator[Relay]:
    server = Relay(script)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """A ReconnectingWebSocket with a short backoff and recording callbacks."""

    def __init__(self, url: str, **kw: object) -> None:
        self.opens = 0
        self.messages: list[str] = []
        self.socket = ReconnectingWebSocket(
            url,
            on_open=self._opened,
            on_message=self.messages.append,
            backoff=Backoff(initial=0.05, maximum=0.2),
            **kw,  # type: ignore[arg-type]
        )

    def _opened(self) -> None:
        self.opens += 1


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.socket.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Backoff ------------------------------------------------------------------------------


def test_backoff_is_jittered_below_a_doubling_period_capped_at_60s() -> None:
    backoff = Backoff(rng=random.Random(7))
    reference = random.Random(7)
    assert backoff.period == pytest.approx(3.333)
    periods = []
    for _ in range(10):
        period = backoff.period
        periods.append(period)
        delay = backoff.next_delay()
        assert 0 <= delay < period
        assert delay == reference.uniform(0, period)  # uniform jitter over [0, period)
        assert backoff.period == pytest.approx(min(period * 2, 60.0))
    assert periods[:5] == pytest.approx([3.333, 6.666, 13.332, 26.664, 53.328])
    assert periods[5:] == [60.0] * 5
    backoff.reset()
    assert backoff.period == pytest.approx(3.333)


def test_backoff_delays_spread_over_the_whole_period() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert all(0 <= d < 1.0 for d in delays)
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55


# -- ReconnectingWebSocket ------------------------------------------------------------------


async def test_opens_counts_messages_and_reconnects_after_the_server_closes(
    clients: list[Client],
) -> None:
    async def script(ws: ServerConnection, index: int) -> None:
        if index == 0:
            for text in ("one", "two", "three"):
                await ws.send(text)
            await asyncio.sleep(0.1)  # let the client's send arrive first
            await ws.close()
        else:
            await ws.send("again")
            await ws.wait_closed()

    async with relay(script) as server:
        client = Client(server.url)
        clients.append(client)
        await eventually(lambda: client.opens >= 1, 5, "first open")
        assert client.socket.state is SocketState.OPEN
        assert client.socket.is_open
        assert await client.socket.send("hello")
        await eventually(lambda: client.opens == 2, 5, "reconnection")
        await eventually(lambda: client.messages == ["one", "two", "three", "again"], 5, "msgs")
        assert client.socket.messages_received == 4
        assert client.socket.messages_sent == 1
        assert server.received == ["hello"]
        assert server.connections == 2
        assert client.socket.state is SocketState.OPEN


async def test_backs_off_while_the_port_is_closed_and_resumes_on_the_same_port(
    clients: list[Client],
) -> None:
    server = Relay(hold_open)
    await server.start()
    client = Client(server.url)
    clients.append(client)
    await eventually(lambda: client.opens == 1, 5, "first open")
    await server.stop()

    await eventually(lambda: client.socket.state is SocketState.BACKING_OFF, 5, "backoff")
    assert not client.socket.is_open
    assert not await client.socket.send("lost")
    # Several refused attempts happen meanwhile, each recorded as the last error.
    await eventually(
        lambda: "ConnectionRefused" in (client.socket.last_error or ""), 5, "refused error"
    )
    await asyncio.sleep(0.5)
    assert client.socket.state in (SocketState.BACKING_OFF, SocketState.CONNECTING)
    assert client.opens == 1

    await server.start()  # same port
    try:
        await eventually(lambda: client.opens == 2, 5, "reconnection on the same port")
        assert client.socket.state is SocketState.OPEN
        assert server.connections == 2
        assert client.socket._backoff.period == client.socket._backoff.initial  # reset on open
    finally:
        await client.socket.close()
        await server.stop()


async def test_never_reachable_socket_keeps_retrying_with_backoff(clients: list[Client]) -> None:
    client = Client(f"ws://127.0.0.1:{free_port()}")
    clients.append(client)
    await eventually(lambda: client.socket.state is SocketState.BACKING_OFF, 5, "backoff")
    assert client.socket.last_error is not None
    assert client.socket._backoff.period > client.socket._backoff.initial  # it grew
    assert client.opens == 0


async def test_close_is_prompt_and_idempotent_in_every_state() -> None:
    # Open.
    async with relay() as server:
        client = Client(server.url)
        await eventually(lambda: client.opens == 1, 5, "open")
        started = time.monotonic()
        await client.socket.close()
        assert time.monotonic() - started < 1.0
        assert client.socket.state is SocketState.CLOSED
        await client.socket.close()
        assert client.socket.state is SocketState.CLOSED
        assert not await client.socket.send("after close")
        await asyncio.sleep(0.3)
        assert server.connections == 1  # no reconnection after close

    # Backing off (nothing listens on the port), with a long backoff pending.
    client = Client(f"ws://127.0.0.1:{free_port()}")
    client.socket._backoff = Backoff(initial=30.0, maximum=60.0)
    await eventually(lambda: client.socket.state is SocketState.BACKING_OFF, 5, "backoff")
    started = time.monotonic()
    await client.socket.close()
    assert time.monotonic() - started < 1.0
    assert client.socket.state is SocketState.CLOSED

    # Connecting: a TCP server that accepts and never completes the WebSocket handshake.
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    tcp = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        client = Client(f"ws://127.0.0.1:{port}")
        await eventually(lambda: bool(accepted), 5, "TCP accept")
        assert client.socket.state is SocketState.CONNECTING
        started = time.monotonic()
        await client.socket.close()
        assert time.monotonic() - started < 1.0
        assert client.socket.state is SocketState.CLOSED
        await client.socket.close()
    finally:
        for writer in accepted:
            writer.close()
        tcp.close()
        await tcp.wait_closed()


async def test_handler_exceptions_do_not_kill_the_loop(clients: list[Client]) -> None:
    async def script(ws: ServerConnection, index: int) -> None:
        for text in ("ok-1", "boom", "ok-2"):
            await ws.send(text)
        if index == 0:
            await asyncio.sleep(0.1)
            await ws.close()
        else:
            await ws.wait_closed()

    seen: list[str] = []
    opens = 0

    def on_open() -> None:
        nonlocal opens
        opens += 1
        raise RuntimeError("on_open fails")

    def on_message(text: str) -> None:
        seen.append(text)
        if text == "boom":
            raise ValueError("handler fails")

    async with relay(script) as server:
        sock = ReconnectingWebSocket(
            server.url,
            on_open=on_open,
            on_message=on_message,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )
        try:
            await eventually(lambda: len(seen) == 6, 5, "both connections' messages")
            assert seen == ["ok-1", "boom", "ok-2"] * 2
            assert opens == 2
            assert sock.state is SocketState.OPEN
            assert sock.messages_received == 6
        finally:
            await sock.close()


async def test_oversize_message_closes_the_connection_and_reconnects(
    clients: list[Client],
) -> None:
    async def script(ws: ServerConnection, index: int) -> None:
        if index == 0:
            await ws.send("small")
            await ws.send("x" * 5000)
            await ws.send("never delivered")
        else:
            await ws.send("after reconnect")
        await ws.wait_closed()

    async with relay(script) as server:
        client = Client(server.url, max_size=4096)
        clients.append(client)
        await eventually(lambda: client.opens == 2, 5, "reconnection after oversize")
        await eventually(lambda: "after reconnect" in client.messages, 5, "second message")
        assert client.messages == ["small", "after reconnect"]
        assert client.socket.messages_received == 2
        assert client.socket.last_error is not None
        assert "1009" in client.socket.last_error or "too big" in client.socket.last_error
        assert client.socket.state is SocketState.OPEN


async def test_invalid_url_is_not_retried() -> None:
    sock = ReconnectingWebSocket("http://127.0.0.1:1/", on_open=lambda: None, on_message=print)
    await eventually(lambda: sock.state is SocketState.CLOSED, 2, "closed")
    assert sock.last_error is not None
    assert sock.last_error.startswith("invalid URL")
    await sock.close()
