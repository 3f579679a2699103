"""The embedded ws-relay server (wire notes §3.7), driven by raw WebSocket clients on
127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.rooms import eventually
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from peermesh.errors import UsageError
from peermesh.servers import RelayServer, RelayStats, serve_relay

pytestmark = pytest.mark.timeout(30)

T = "peermesh-tests@room"
T2 = "peermesh-tests@other"


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    async with await serve_relay(port=0) as server:
        yield server


@contextlib.asynccontextmanager
async def client(server: RelayServer, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with connect(server.url, **kwargs) as ws:
        yield ws


def frame(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


async def subscribe(ws: ClientConnection, server: RelayServer, topic: str, count: int) -> None:
    """Subscribe and wait until the server has ``count`` subscribers on ``topic``."""
    await ws.send(frame(type="subscribe", topic=topic))
    await eventually(lambda: server.subscriber_count(topic) == count, 3, "subscription")


async def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    value = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(value, dict)
    return value


async def silent(ws: ClientConnection, timeout: float = 0.3) -> None:
    try:
        got = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return
    pytest.fail(f"unexpected message {got!r}")


async def test_publish_reaches_every_subscriber_including_the_sender(relay: RelayServer) -> None:
    async with client(relay) as a, client(relay) as b, client(relay) as c:
        await subscribe(a, relay, T, 1)
        await subscribe(b, relay, T, 2)
        await subscribe(c, relay, T2, 1)
        payload = json.dumps({"peerId": "abc"}, separators=(",", ":"))
        await a.send(frame(type="publish", topic=T, payload=payload))
        expected = {"topic": T, "payload": payload}
        assert await recv(a) == expected  # the sender gets its own message
        assert await recv(b) == expected
        await silent(c)  # another topic
    stats = relay.stats()
    assert stats.published == 1
    assert stats.delivered == 2


async def test_wire_format_is_compact_json_with_topic_then_payload(relay: RelayServer) -> None:
    async with client(relay) as a:
        await subscribe(a, relay, T, 1)
        await a.send('{"type":"publish","topic":"' + T + '","payload":"{\\"peerId\\":\\"x\\"}"}')
        raw = await asyncio.wait_for(a.recv(), 3)
    assert raw == '{"topic":"' + T + '","payload":"{\\"peerId\\":\\"x\\"}"}'


async def test_any_json_payload_is_relayed_as_is(relay: RelayServer) -> None:
    async with client(relay) as a:
        await subscribe(a, relay, T, 1)
        for payload in ({"peerId": "x", "offer": "y"}, [1, 2], 3, None, True):
            await a.send(frame(type="publish", topic=T, payload=payload))
            assert await recv(a) == {"topic": T, "payload": payload}


async def test_publishing_needs_no_subscription_and_reaches_nobody_without_subscribers(
    relay: RelayServer,
) -> None:
    async with client(relay) as a, client(relay) as b:
        await subscribe(b, relay, T, 1)
        await a.send(frame(type="publish", topic=T, payload="hi"))
        assert await recv(b) == {"topic": T, "payload": "hi"}
        await silent(a)
        await a.send(frame(type="publish", topic=T2, payload="nobody"))
        await silent(b)
    assert relay.stats().published == 2


async def test_unsubscribe_stops_delivery_and_forgets_the_topic(relay: RelayServer) -> None:
    async with client(relay) as a, client(relay) as b:
        await subscribe(a, relay, T, 1)
        await subscribe(b, relay, T, 2)
        await subscribe(a, relay, T, 2)  # subscribing twice is a no-op
        assert relay.stats().subscriptions == 2
        await a.send(frame(type="unsubscribe", topic=T))
        await eventually(lambda: relay.subscriber_count(T) == 1, 3, "unsubscribe")
        await b.send(frame(type="publish", topic=T, payload="after"))
        assert await recv(b) == {"topic": T, "payload": "after"}
        await silent(a)
        await b.send(frame(type="unsubscribe", topic=T))
        await b.send(frame(type="unsubscribe", topic="never-subscribed"))
        await eventually(lambda: relay.stats().topics == 0, 3, "topic forgotten")
        assert relay.stats().subscriptions == 0


async def test_closing_a_socket_drops_its_subscriptions(relay: RelayServer) -> None:
    async with client(relay) as a:
        await subscribe(a, relay, T, 1)
        await subscribe(a, relay, T2, 1)
        assert relay.stats() == RelayStats(
            connections=1,
            topics=2,
            subscriptions=2,
            messages_in=2,
            messages_out=0,
            published=0,
            delivered=0,
            dropped_malformed=0,
            dropped_oversize=0,
            dropped_backpressure=0,
            rejected_subscriptions=0,
            closed_for_limits=0,
            rejected_connections=0,
        )
    await eventually(lambda: relay.stats().connections == 0, 3, "disconnect")
    assert relay.stats().topics == 0
    assert relay.stats().subscriptions == 0


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "[1,2,3]",
        '"a string"',
        "{}",
        '{"type":"subscribe"}',
        '{"type":"subscribe","topic":5}',
        '{"type":"publish","topic":"' + T + '"}',
        '{"type":"dance","topic":"' + T + '"}',
        '{"topic":"' + T + '","payload":"no type"}',
        "[" * 30_000 + "]" * 30_000,
        b"\xff\xfe binary",
    ],
)
async def test_malformed_frames_are_dropped_and_counted_and_the_connection_survives(
    relay: RelayServer, garbage: str | bytes
) -> None:
    async with client(relay, max_size=None) as a:
        await a.send(garbage)
        await eventually(lambda: relay.stats().dropped_malformed == 1, 3, "drop counted")
        await subscribe(a, relay, T, 1)
        await a.send(frame(type="publish", topic=T, payload="still here"))
        assert await recv(a) == {"topic": T, "payload": "still here"}
    assert relay.stats().published == 1


async def test_binary_utf8_frames_are_accepted(relay: RelayServer) -> None:
    async with client(relay) as a:
        await a.send(frame(type="subscribe", topic=T).encode())
        await eventually(lambda: relay.subscriber_count(T) == 1, 3, "subscription")
        await a.send(frame(type="publish", topic=T, payload="bin").encode())
        assert await recv(a) == {"topic": T, "payload": "bin"}


async def test_oversize_frame_closes_only_that_client() -> None:
    async with await serve_relay(port=0, max_message_size=1024) as relay:
        async with client(relay) as big, client(relay) as other:
            await subscribe(other, relay, T, 1)
            await big.send(frame(type="publish", topic=T, payload="x" * 2000))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(big.recv(), 3)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
            await other.send(frame(type="publish", topic=T, payload="y" * 900))
            assert await recv(other) == {"topic": T, "payload": "y" * 900}
        assert relay.stats().dropped_oversize == 1
        assert relay.stats().published == 1


async def test_too_many_topics_or_too_long_a_topic_closes_with_1008() -> None:
    async with await serve_relay(port=0, max_topics_per_connection=2, max_topic_length=10) as relay:
        async with client(relay) as a:
            await subscribe(a, relay, "t1", 1)
            await subscribe(a, relay, "t2", 1)
            await a.send(frame(type="subscribe", topic="t3"))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(a.recv(), 3)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "subscription limit exceeded"
        async with client(relay) as b:
            await b.send(frame(type="publish", topic="x" * 11, payload="p"))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(b.recv(), 3)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "topic too long"
        await eventually(lambda: relay.stats().connections == 0, 3, "disconnects")
        stats = relay.stats()
        assert stats.closed_for_limits == 2
        assert stats.subscriptions == 0
        assert stats.topics == 0
        assert stats.published == 0


async def test_a_full_topic_refuses_further_subscribers() -> None:
    relay = await serve_relay(port=0, max_subscribers_per_topic=1)
    async with relay, client(relay) as a, client(relay) as b:
        await subscribe(a, relay, T, 1)
        await b.send(frame(type="subscribe", topic=T))
        await eventually(lambda: relay.stats().rejected_subscriptions == 1, 3, "refusal")
        await b.send(frame(type="publish", topic=T, payload="p"))
        assert await recv(a) == {"topic": T, "payload": "p"}
        await silent(b)
        await subscribe(b, relay, T2, 1)  # b's connection is still fine


async def test_connections_beyond_the_limit_get_http_503() -> None:
    async with await serve_relay(port=0, max_connections=1) as relay:
        async with client(relay):
            await eventually(lambda: relay.stats().connections == 1, 3, "first connection")
            with pytest.raises(InvalidStatus) as refused:
                async with client(relay):
                    pass
            assert refused.value.response.status_code == 503
        assert relay.stats().rejected_connections == 1
        await eventually(lambda: relay.stats().connections == 0, 3, "disconnect")
        async with client(relay) as again:
            await subscribe(again, relay, T, 1)


async def test_a_slow_reader_does_not_stall_other_subscribers() -> None:
    """One subscriber never reads; another must still get every message, in order, while
    the slow one's queue overflows (dropped and counted)."""
    size = 512 * 1024
    relay = await serve_relay(port=0, max_message_size=size + 1024)
    async with (
        relay,
        client(relay, max_queue=1, max_size=None) as slow,
        client(relay, max_size=None) as fast,
        client(relay, max_size=None) as publisher,
    ):
        await subscribe(slow, relay, T, 1)
        await subscribe(fast, relay, T, 2)
        sent = 0
        while relay.stats().dropped_backpressure == 0:
            assert sent < 200, "the slow reader's queue never overflowed"
            payload = f"{sent:08d}" + "z" * size
            await publisher.send(frame(type="publish", topic=T, payload=payload))
            got = await recv(fast, timeout=5)
            assert got["payload"][:8] == f"{sent:08d}"
            sent += 1
        # Keep going a little: the fast subscriber is unaffected.
        for n in range(sent, sent + 5):
            await publisher.send(frame(type="publish", topic=T, payload=f"{n:08d}"))
            assert (await recv(fast))["payload"] == f"{n:08d}"
        stats = relay.stats()
        slow.transport.abort()  # a closing handshake would wait behind megabytes
    assert stats.dropped_backpressure >= 1
    assert stats.published == sent + 5


async def test_close_is_idempotent_and_disconnects_clients() -> None:
    relay = await serve_relay(port=0)
    async with client(relay) as a:
        await subscribe(a, relay, T, 1)
        await relay.close()
        await relay.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 3)
    assert relay.stats().topics == 0


async def test_serve_forever_returns_after_close() -> None:
    relay = await serve_relay(port=0)
    forever = asyncio.ensure_future(relay.serve_forever())
    await asyncio.sleep(0.05)
    assert not forever.done()
    await relay.close()
    await asyncio.wait_for(forever, 3)


async def test_url_and_port_report_the_bound_port() -> None:
    async with await serve_relay("127.0.0.1", 0) as relay:
        assert relay.port > 0
        assert relay.url == f"ws://127.0.0.1:{relay.port}"
        assert relay.host == "127.0.0.1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_size": 0},
        {"max_topics_per_connection": -1},
        {"max_subscribers_per_topic": 0},
        {"max_connections": 0},
        {"max_topic_length": 0},
        {"max_connections": 1.5},
    ],
)
async def test_invalid_limits_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        await serve_relay(port=0, **kwargs)
