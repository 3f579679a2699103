"""The ws-relay client (wire notes §3.7) against the embedded relay server and against
scripted servers on 127.0.0.1: fan-out, subscription bookkeeping, reconnects, sharing,
and garbage from a rogue server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from peermesh._signalling import RelayState, TopicRelay, relay_health
from peermesh._signalling.websocket import Backoff
from peermesh._signalling.ws_relay import WsRelay, acquire_ws_relay
from peermesh.servers import RelayServer, serve_relay
from tests.rooms import eventually

pytestmark = pytest.mark.timeout(30)

ROOT = "peermesh-tests@room"
SELF = "peermesh-tests@room@0123456789abcdefghij"


class Inbox:
    """A topic handler recording ``(topic, text)``."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, topic: str, text: str) -> None:
        self.got.append((topic, text))

    def texts(self, topic: str = ROOT) -> list[str]:
        return [text for t, text in self.got if t == topic]


def fast_backoff() -> Backoff:
    return Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
async def server() -> AsyncIterator[RelayServer]:
    async with await serve_relay(port=0) as relay:
        yield relay


@pytest.fixture
async def relays() -> AsyncIterator[Callable[[str], WsRelay]]:
    """``make(url)``: an unshared WsRelay with a fast backoff, released at teardown."""
    made: list[WsRelay] = []

    def make(url: str) -> WsRelay:
        relay = WsRelay(url, backoff=fast_backoff())
        made.append(relay)
        return relay

    yield make
    for relay in made:
        await relay.release()


async def ready(relay: WsRelay) -> None:
    await eventually(lambda: relay.is_ready, 5, f"{relay.url} ready")


# -- a scripted server that records frames and can send anything ----------------------------

Script = Callable[[ServerConnection], Awaitable[None]]


class Scripted:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.frames: list[dict[str, object]] = []
        self.sockets: list[ServerConnection] = []
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def of_type(self, kind: str) -> list[str]:
        return [str(f["topic"]) for f in self.frames if f.get("type") == kind]

    async def _handle(self, ws: ServerConnection) -> None:
        self.sockets.append(ws)
        if self.script is not None:
            await self.script(ws)
        async for message in ws:
            self.frames.append(json.loads(message))


@contextlib.asynccontextmanager
async def scripted(script: Script | None = None) -> AsyncIterator[Scripted]:
    fake = Scripted(script)
    fake._server = await serve(fake._handle, "127.0.0.1", 0, compression=None, close_timeout=0.5)
    fake.port = fake._server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        fake._server.close()
        await fake._server.wait_closed()


# -- against the embedded server ------------------------------------------------------------


async def test_two_relays_exchange_messages_and_the_sender_hears_itself(
    server: RelayServer, relays: Callable[[str], WsRelay]
) -> None:
    a, b = relays(server.url), relays(server.url)
    as_topic_relay: TopicRelay = a  # what the topic signaller holds
    assert as_topic_relay.url == server.url
    inbox_a, inbox_b = Inbox(), Inbox()
    a.subscribe(ROOT, inbox_a)
    b.subscribe(ROOT, inbox_b)
    b.subscribe(SELF, inbox_b)
    await ready(a)
    await ready(b)
    await eventually(lambda: server.subscriber_count(ROOT) == 2, 3, "subscriptions")
    announce = '{"peerId":"0123456789abcdefghij"}'
    assert await a.publish(ROOT, announce)
    await eventually(lambda: inbox_b.texts() == [announce], 3, "b hears a")
    await eventually(lambda: inbox_a.texts() == [announce], 3, "a hears itself")
    assert await a.publish(SELF, '{"peerId":"x","offer":"sealed"}')
    await eventually(lambda: inbox_b.texts(SELF) == ['{"peerId":"x","offer":"sealed"}'], 3)
    assert inbox_a.texts(SELF) == []
    health = a.health()
    assert health in relay_health()  # visible process-wide
    assert health.state is RelayState.OPEN
    assert health.url == server.url
    assert health.messages_sent == 3  # subscribe + 2 publishes
    assert health.messages_received == 1
    assert health.messages_dropped == 0
    assert server.stats().dropped_malformed == 0


async def test_subscribe_then_publish_at_once_reaches_the_server_in_order(
    server: RelayServer, relays: Callable[[str], WsRelay]
) -> None:
    relay = relays(server.url)
    await ready(relay)
    inbox = Inbox()
    relay.subscribe(ROOT, inbox)  # queued before the publish: the echo must come back
    assert await relay.publish(ROOT, "first")
    await eventually(lambda: inbox.texts() == ["first"], 3, "echo")


async def test_handlers_are_shared_per_topic_on_the_wire(
    relays: Callable[[str], WsRelay],
) -> None:
    async with scripted() as fake:
        relay = relays(fake.url)
        await ready(relay)
        one, two = Inbox(), Inbox()
        relay.subscribe(ROOT, one)
        relay.subscribe(ROOT, two)
        relay.subscribe(ROOT, one)  # the same handler twice: a no-op
        await eventually(lambda: fake.of_type("subscribe") == [ROOT], 3, "one subscribe")
        await fake.sockets[0].send(json.dumps({"topic": ROOT, "payload": "both"}))
        await eventually(lambda: one.got == two.got == [(ROOT, "both")], 3, "delivery")
        relay.unsubscribe(ROOT, one)
        relay.unsubscribe(ROOT, one)
        assert await relay.publish(ROOT, "marker")  # flushes the queue behind it
        await eventually(lambda: len(fake.of_type("publish")) == 1, 3, "publish")
        assert fake.of_type("unsubscribe") == []
        relay.unsubscribe(ROOT, two)
        await eventually(lambda: fake.of_type("unsubscribe") == [ROOT], 3, "unsubscribe")
        assert fake.frames[1] == {"type": "publish", "topic": ROOT, "payload": "marker"}
        await fake.sockets[0].send(json.dumps({"topic": ROOT, "payload": "late"}))
        assert await relay.publish(ROOT, "flush")
        await asyncio.sleep(0.05)
        assert one.got == two.got == [(ROOT, "both")]
        assert relay.health().messages_dropped == 0  # a late message is not "malformed"


async def test_publish_frames_double_encode_the_payload(
    relays: Callable[[str], WsRelay],
) -> None:
    raw: list[str] = []

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            raw.append(str(message))

    async with scripted(record) as fake:
        relay = relays(fake.url)
        await ready(relay)
        assert await relay.publish(ROOT, '{"peerId":"abc"}')
        await eventually(lambda: len(raw) == 1, 3, "frame")
    assert raw == ['{"type":"publish","topic":"' + ROOT + '","payload":"{\\"peerId\\":\\"abc\\"}"}']


async def test_reconnect_resubscribes_and_fires_on_ready_again(
    relays: Callable[[str], WsRelay],
) -> None:
    first = await serve_relay(port=0)
    port = first.port
    relay = relays(first.url)
    inbox = Inbox()
    relay.subscribe(ROOT, inbox)
    relay.subscribe(SELF, inbox)
    readies: list[bool] = []
    sent_before_ready: list[int] = []
    announces: set[asyncio.Future[bool]] = set()

    def on_ready() -> None:
        # Announce, as the topic signaller does. The subscriptions were queued first, so
        # the server must echo this back to us on every new connection.
        readies.append(relay.is_ready)
        sent_before_ready.append(relay.health().messages_sent)
        announces.add(asyncio.ensure_future(relay.publish(ROOT, f"ready {len(readies)}")))

    unregister = relay.on_ready(on_ready)
    await eventually(lambda: inbox.texts() == ["ready 1"], 5, "first ready")
    assert first.stats().subscriptions == 2
    await first.close()
    await eventually(lambda: relay.health().state is not RelayState.OPEN, 5, "noticed")
    assert not await relay.publish(ROOT, "while down")
    assert relay.health().last_error is not None

    async with await serve_relay(port=port) as second:
        await eventually(lambda: inbox.texts() == ["ready 1", "ready 2"], 10, "ready again")
        assert readies == [True, True]
        # Both subscriptions were written before each on_ready: 2, then 2 + "ready 1" + 2.
        assert sent_before_ready == [2, 5]
        assert second.subscriber_count(ROOT) == 1
        assert second.subscriber_count(SELF) == 1
        assert relay.health().state is RelayState.OPEN
        assert await relay.publish(SELF, "after restart")
        await eventually(lambda: inbox.texts(SELF) == ["after restart"], 3, "delivery")
        unregister()
        unregister()  # idempotent
        await second.close()
        await eventually(lambda: relay.health().state is not RelayState.OPEN, 5, "noticed")
    async with await serve_relay(port=port) as third:
        await eventually(lambda: third.stats().subscriptions == 2, 10, "third subscribed")
        await ready(relay)
    assert readies == [True, True]  # unregistered: not called on the third connection
    assert all(await asyncio.gather(*announces))


async def test_on_ready_is_called_at_once_when_already_ready(
    server: RelayServer, relays: Callable[[str], WsRelay]
) -> None:
    relay = relays(server.url)
    calls: list[str] = []
    relay.on_ready(lambda: calls.append("early"))
    await ready(relay)
    await eventually(lambda: calls == ["early"], 3, "early")
    relay.on_ready(lambda: calls.append("late"))
    assert calls == ["early", "late"]


async def test_unreachable_relay_backs_off_and_publish_returns_false(
    relays: Callable[[str], WsRelay],
) -> None:
    async with await serve_relay(port=0) as probe:
        url = probe.url  # a port that is certainly closed once this block exits
    relay = relays(url)
    await eventually(lambda: relay.health().last_error is not None, 5, "a failed attempt")
    assert relay.health().state in (RelayState.CONNECTING, RelayState.BACKING_OFF)
    assert not await relay.publish(ROOT, "nobody")
    assert not relay.is_ready


async def test_invalid_url_is_retired() -> None:
    relay = WsRelay("not a websocket url", backoff=fast_backoff())
    try:
        await eventually(lambda: relay.health().state is RelayState.RETIRED, 5, "retired")
        assert relay.health().last_error is not None
        assert not await relay.publish(ROOT, "x")
    finally:
        await relay.release()
    assert relay.health().state is RelayState.CLOSED


# -- sharing --------------------------------------------------------------------------------


async def test_acquire_shares_one_connection_per_url_until_the_last_release(
    server: RelayServer,
) -> None:
    first = acquire_ws_relay(server.url)
    second = acquire_ws_relay(server.url)
    try:
        assert first is second
        await ready(first)
        assert server.stats().connections == 1
        await first.release()
        assert not first.is_closed
        assert first.health().state is RelayState.OPEN
    finally:
        await second.release()
    assert first.is_closed
    assert first.health().state is RelayState.CLOSED
    await eventually(lambda: server.stats().connections == 0, 3, "closed")
    await first.release()  # extra releases are harmless
    third = acquire_ws_relay(server.url)
    try:
        assert third is not first
        await ready(third)
    finally:
        await third.release()


async def test_release_fails_a_pending_publish_instead_of_hanging(
    relays: Callable[[str], WsRelay],
) -> None:
    async def never_read(ws: ServerConnection) -> None:
        await ws.wait_closed()  # never consumes a frame: the TCP buffers fill up

    async with scripted(never_read) as fake:
        relay = WsRelay(fake.url, backoff=fast_backoff())
        await ready(relay)
        big = "x" * 200_000
        # The server never reads: sends eventually block on the full TCP buffers.
        pending = [asyncio.ensure_future(relay.publish(ROOT, big)) for _ in range(100)]
        await asyncio.sleep(0.3)
        assert not all(p.done() for p in pending)
        await relay.release()
        results = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert False in results


# -- a rogue server ---------------------------------------------------------------------------


GARBAGE = [
    "not json",
    "[1,2]",
    "null",
    '"text"',
    "{}",
    '{"topic":5,"payload":"x"}',
    '{"topic":"' + ROOT + '"}',
    '{"topic":"' + ROOT + '","payload":5}',
    '{"topic":"' + ROOT + '","payload":["a"]}',
    "[" * 5000 + "]" * 5000,
]


async def test_garbage_from_a_rogue_server_is_dropped_and_counted(
    relays: Callable[[str], WsRelay],
) -> None:
    async def rogue(ws: ServerConnection) -> None:
        for text in GARBAGE:
            await ws.send(text)
        await ws.send(json.dumps({"topic": ROOT, "payload": "good"}))
        await ws.send(json.dumps({"topic": ROOT, "payload": {"peerId": "obj"}}))

    async with scripted(rogue) as fake:
        relay = relays(fake.url)
        inbox = Inbox()
        relay.subscribe(ROOT, inbox)
        await eventually(lambda: len(inbox.got) == 2, 5, "good messages")
        assert inbox.texts() == ["good", '{"peerId":"obj"}']
        health = relay.health()
        assert health.messages_dropped == len(GARBAGE)
        assert health.messages_received == len(GARBAGE) + 2
        assert health.state is RelayState.OPEN
        assert len(fake.sockets) == 1  # garbage never cost the connection


async def test_oversize_frames_from_a_relay_close_the_connection_and_it_reconnects() -> None:
    connections: list[int] = []

    async def huge_first(ws: ServerConnection) -> None:
        connections.append(1)
        payload = "x" * 5000 if len(connections) == 1 else "small"
        await ws.send(json.dumps({"topic": ROOT, "payload": payload}))

    async with scripted(huge_first) as fake:
        relay = WsRelay(fake.url, backoff=fast_backoff(), max_message_size=1024)
        try:
            inbox = Inbox()
            relay.subscribe(ROOT, inbox)
            await eventually(lambda: inbox.texts() == ["small"], 5, "second connection")
            assert len(fake.sockets) == 2
        finally:
            await relay.release()


async def test_a_raising_handler_does_not_stop_delivery(
    server: RelayServer, relays: Callable[[str], WsRelay], caplog: pytest.LogCaptureFixture
) -> None:
    relay = relays(server.url)
    inbox = Inbox()

    def broken(topic: str, text: str) -> None:
        raise RuntimeError("handler bug")

    relay.subscribe(ROOT, broken)
    relay.subscribe(ROOT, inbox)

    def broken_ready() -> None:
        raise RuntimeError("on_ready bug")

    relay.on_ready(broken_ready)  # a raising on_ready callback, too
    await ready(relay)
    assert await relay.publish(ROOT, "one")
    assert await relay.publish(ROOT, "two")
    await eventually(lambda: inbox.texts() == ["one", "two"], 3, "delivery")
    assert relay.health().state is RelayState.OPEN
    assert "handler bug" in caplog.text
    assert "on_ready bug" in caplog.text
