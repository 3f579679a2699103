"""MqttRelay against a real mosquitto on loopback, over TCP and over WebSocket."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiomqtt
import pytest

from peermesh._signalling import RelayState, relay_health
from peermesh._signalling.mqtt import (
    DEFAULT_MQTT_BROKERS,
    DEFAULT_REDUNDANCY,
    MAX_PAYLOAD,
    MqttRelay,
    acquire_mqtt_relay,
    parse_mqtt_url,
    payload_text,
)
from peermesh._signalling.websocket import Backoff
from peermesh.errors import RelayProtocolError
from tests.brokers import MosquittoBroker, free_port, start_mosquitto

TOPIC = "0123456789abcdef0123456789abcdef01234567"


def fast_backoff() -> Backoff:
    return Backoff(initial=0.2, maximum=0.8)


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    async with start_mosquitto() as broker:
        yield broker


@pytest.fixture(params=["tcp", "websocket"])
def url(request: pytest.FixtureRequest, broker: MosquittoBroker) -> str:
    if request.param == "tcp":
        return broker.mqtt_url
    assert broker.ws_url is not None
    return broker.ws_url


@pytest.fixture
async def relays() -> AsyncIterator[Callable[..., MqttRelay]]:
    """``relays(url)`` — a private MqttRelay (fast backoff), closed at teardown."""
    made: list[MqttRelay] = []

    def factory(url: str, **kw: object) -> MqttRelay:
        relay = MqttRelay(url, backoff=fast_backoff(), **kw)  # type: ignore[arg-type]
        made.append(relay)
        return relay

    try:
        yield factory
    finally:
        await asyncio.gather(*(relay.close() for relay in made))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def __call__(self, topic: str, text: str) -> None:
        self.messages.append((topic, text))

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.messages]


async def publish_until_received(sender: MqttRelay, inbox: Inbox, text: str) -> None:
    """Publish ``text`` until ``inbox`` has it (the receiver may still be reconnecting)."""
    deadline = time.monotonic() + 8
    while text not in inbox.texts:
        assert time.monotonic() < deadline, f"{text!r} never arrived; got {inbox.texts}"
        await sender.publish(TOPIC, text)
        await asyncio.sleep(0.1)


# -- URLs -------------------------------------------------------------------------------------


def test_parse_urls() -> None:
    u = parse_mqtt_url("wss://public:public@public.cloud.shiftr.io")
    assert (u.scheme, u.host, u.port, u.path) == ("wss", "public.cloud.shiftr.io", 443, "/")
    assert (u.username, u.password, u.transport, u.tls) == ("public", "public", "websockets", True)
    u = parse_mqtt_url("wss://broker.emqx.io:8084/mqtt")
    assert (u.port, u.path, u.username) == (8084, "/mqtt", None)
    u = parse_mqtt_url("mqtt://127.0.0.1")
    assert (u.port, u.transport, u.tls) == (1883, "tcp", False)
    assert parse_mqtt_url("mqtts://h").port == 8883
    assert parse_mqtt_url("ws://h").port == 80
    for bad in ("http://h", "mqtt://", "h:1883", "mqtt://h:99999"):
        with pytest.raises(ValueError, match="MQTT"):
            parse_mqtt_url(bad)
    assert len(DEFAULT_MQTT_BROKERS) == 5
    assert DEFAULT_REDUNDANCY == 4
    for broker_url in DEFAULT_MQTT_BROKERS:
        assert parse_mqtt_url(broker_url).tls


async def test_bad_topics_are_refused_at_once() -> None:
    relay = MqttRelay(f"mqtt://127.0.0.1:{free_port()}", backoff=fast_backoff())
    try:
        for topic in ("", "a/+", "a/#", "a\0b"):
            with pytest.raises(ValueError, match="topic"):
                relay.subscribe(topic, Inbox())
            with pytest.raises(ValueError, match="topic"):
                await relay.publish(topic, "x")
    finally:
        await relay.close()


# -- messages ---------------------------------------------------------------------------------


def test_payload_text_takes_utf8_up_to_the_limit() -> None:
    assert payload_text("é") == "é"
    assert payload_text("é".encode()) == "é"
    assert payload_text(bytearray(b"x" * MAX_PAYLOAD)) == "x" * MAX_PAYLOAD
    for bad, reason in (
        (b"x" * (MAX_PAYLOAD + 1), "oversize"),
        (b"\xff\xfe", "not UTF-8"),
        (b"\xed\xa0\x80", "not UTF-8"),  # an encoded surrogate
        (7, "unexpected payload type int"),
        (None, "unexpected payload type NoneType"),
    ):
        with pytest.raises(RelayProtocolError, match=reason):
            payload_text(bad)


async def test_two_clients_exchange_messages(url: str, relays: Callable[..., MqttRelay]) -> None:
    a, b = relays(url), relays(url)
    inbox_a, inbox_b = Inbox(), Inbox()
    a.subscribe(TOPIC, inbox_a)
    a.subscribe(TOPIC, inbox_a)  # a no-op
    b.subscribe(TOPIC, inbox_b)
    ready = [asyncio.Event(), asyncio.Event()]
    a.on_ready(ready[0].set)
    b.on_ready(ready[1].set)
    await asyncio.wait_for(asyncio.gather(ready[0].wait(), ready[1].wait()), 5)
    assert a.state is RelayState.OPEN
    assert a.subscribed_topics == {TOPIC}

    text = '{"peerId":"abc","offer":"ünïcødé"}'
    assert await a.publish(TOPIC, text)
    await until(lambda: inbox_b.texts == [text], what="b receives a's message")
    # Our own publishes come back too (callers ignore them by peerId); once, not twice.
    await until(lambda: inbox_a.texts == [text], what="a receives its own message")
    assert inbox_b.messages == [(TOPIC, text)]

    assert await b.publish(TOPIC, "second")
    await until(lambda: inbox_a.texts == [text, "second"], what="a receives b's message")
    health = a.health()
    assert health.url == url
    assert health.state is RelayState.OPEN
    assert (health.messages_sent, health.messages_received, health.messages_dropped) == (1, 2, 0)
    assert health.last_error is None

    # on_ready fires at once when already open; the returned function unregisters.
    calls: list[int] = []
    unregister = a.on_ready(lambda: calls.append(1))
    assert calls == [1]
    unregister()
    unregister()


async def test_mqtt5(broker: MosquittoBroker, relays: Callable[..., MqttRelay]) -> None:
    a = relays(broker.mqtt_url, protocol=5)
    inbox = Inbox()
    a.subscribe(TOPIC, inbox)
    await until(lambda: a.synced, what="MQTT 5 subscription")
    assert await a.publish(TOPIC, "v5")
    await until(lambda: inbox.texts == ["v5"], what="MQTT 5 message")


async def test_unsubscribe_stops_delivery(url: str, relays: Callable[..., MqttRelay]) -> None:
    a, b = relays(url), relays(url)
    first, second = Inbox(), Inbox()
    a.subscribe(TOPIC, first)
    a.subscribe(TOPIC, second)
    await until(lambda: a.synced and b.is_open, what="both connected")
    await publish_until_received(b, first, "one")
    assert second.texts == ["one"]

    a.unsubscribe(TOPIC, first)
    assert await b.publish(TOPIC, "two")
    await until(lambda: second.texts == ["one", "two"], what="the remaining handler")
    assert first.texts == ["one"]
    assert a.subscribed_topics == {TOPIC}

    # The last handler gone, the broker-level subscription goes too.
    a.unsubscribe(TOPIC, second)
    a.unsubscribe(TOPIC, second)  # a no-op
    await until(lambda: a.synced, what="the UNSUBACK")
    assert a.subscribed_topics == frozenset()
    received = a.messages_received
    assert await b.publish(TOPIC, "three")
    await asyncio.sleep(0.3)
    assert a.messages_received == received
    assert second.texts == ["one", "two"]

    # Subscribing again works on the same connection.
    again = Inbox()
    a.subscribe(TOPIC, again)
    await until(lambda: a.synced and a.subscribed_topics == {TOPIC}, what="resubscription")
    await publish_until_received(b, again, "four")


async def test_publish_waits_for_pending_subscription(
    broker: MosquittoBroker, relays: Callable[..., MqttRelay]
) -> None:
    """A subscribe followed at once by a publish: the SUBSCRIBE reaches the broker first,
    so the relay's own message comes back (as an announce's replies would)."""
    a = relays(broker.mqtt_url)
    await until(lambda: a.is_open, what="connected")
    inbox = Inbox()
    a.subscribe(TOPIC, inbox)
    assert await a.publish(TOPIC, "right after subscribe")
    await until(lambda: inbox.texts == ["right after subscribe"], what="own message")


# -- faults -----------------------------------------------------------------------------------


async def test_broker_restart_reconnects_and_resubscribes(
    url: str, broker: MosquittoBroker, relays: Callable[..., MqttRelay]
) -> None:
    a, b = relays(url), relays(url)
    inbox = Inbox()
    a.subscribe(TOPIC, inbox)
    b.subscribe("other-topic", Inbox())
    ready_a: list[float] = []
    ready_b: list[float] = []
    a.on_ready(lambda: ready_a.append(time.monotonic()))
    b.on_ready(lambda: ready_b.append(time.monotonic()))
    await until(lambda: len(ready_a) == 1 and len(ready_b) == 1, what="first connection")
    await publish_until_received(b, inbox, "before")

    await broker.restart()
    await until(lambda: len(ready_a) == 2 and len(ready_b) == 2, timeout=8, what="on_ready again")
    assert a.state is RelayState.OPEN
    assert a.subscribed_topics == {TOPIC}
    assert b.subscribed_topics == {"other-topic"}
    assert a.connections == 2
    await publish_until_received(b, inbox, "after")
    assert inbox.texts.count("after") >= 1


async def test_broker_down_backs_off_quietly(
    url: str, broker: MosquittoBroker, relays: Callable[..., MqttRelay]
) -> None:
    a = relays(url)
    a.subscribe(TOPIC, Inbox())
    await until(lambda: a.synced, what="connected")
    await broker.stop()
    await until(lambda: a.state is RelayState.BACKING_OFF, what="backing off")
    assert a.last_error is not None

    started = time.monotonic()
    assert await a.publish(TOPIC, "nobody listens") is False
    assert time.monotonic() - started < 0.1
    assert a.health().state is not RelayState.OPEN

    # Retrying (every ≤ 0.8 s here) costs next to no CPU.
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(2)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert cpu < 0.25 * wall, f"{cpu:.3f} s of CPU in {wall:.2f} s while the broker is down"
    assert a.state in (RelayState.BACKING_OFF, RelayState.CONNECTING)
    assert a.connections == 1


async def test_unreachable_broker_and_prompt_close() -> None:
    relay = MqttRelay(f"mqtt://127.0.0.1:{free_port()}", backoff=fast_backoff())
    try:
        await until(lambda: relay.state is RelayState.BACKING_OFF, what="backing off")
        assert "refused" in (relay.last_error or "").lower()
        assert await relay.publish(TOPIC, "x") is False
    finally:
        started = time.monotonic()
        await relay.close()
        assert time.monotonic() - started < 1
    assert relay.state is RelayState.CLOSED
    await relay.close()  # idempotent


async def test_bad_payloads_are_dropped_and_counted(
    url: str,
    broker: MosquittoBroker,
    relays: Callable[..., MqttRelay],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = relays(url)
    inbox = Inbox()

    def broken(topic: str, text: str) -> None:
        raise RuntimeError("handler bug")

    a.subscribe(TOPIC, broken)
    a.subscribe(TOPIC, inbox)
    await until(lambda: a.synced, what="subscribed")
    caplog.set_level(logging.DEBUG, logger="peermesh._signalling.mqtt")
    async with aiomqtt.Client("127.0.0.1", broker.port) as raw:
        await raw.publish(TOPIC, b"\xff\xfe not utf-8")
        await raw.publish(TOPIC, b"x" * (MAX_PAYLOAD + 1))
        await raw.publish(TOPIC, "x" * MAX_PAYLOAD)
        await raw.publish(TOPIC, "ok")
    await until(lambda: "ok" in inbox.texts, what="the valid messages")
    assert inbox.texts == ["x" * MAX_PAYLOAD, "ok"]
    assert a.messages_dropped == 2
    assert a.messages_received == 4
    assert a.health().messages_dropped == 2
    assert a.state is RelayState.OPEN
    logged = caplog.text
    assert "not UTF-8" in logged
    assert "oversize" in logged
    assert "handler bug" in logged


async def test_acquire_shares_per_url_and_refcounts(broker: MosquittoBroker) -> None:
    first = acquire_mqtt_relay(broker.mqtt_url)
    second = acquire_mqtt_relay(broker.mqtt_url)
    other = acquire_mqtt_relay(broker.ws_url or "")
    try:
        assert first is second
        assert other is not first
        await until(lambda: first.is_open and other.is_open, what="connected")
        urls = [h.url for h in relay_health()]
        assert broker.mqtt_url in urls
        assert broker.ws_url in urls
        await first.release()
        assert first.state is RelayState.OPEN
        assert acquire_mqtt_relay(broker.mqtt_url) is first
        await first.release()
        assert first.state is RelayState.OPEN
        await second.release()
        assert first.state is RelayState.CLOSED
        third = acquire_mqtt_relay(broker.mqtt_url)
        assert third is not first
        await third.release()
        assert third.state is RelayState.CLOSED
    finally:
        await other.release()
    assert other.state is RelayState.CLOSED


async def test_silent_broker_times_out_and_frees_its_socket() -> None:
    """A server that accepts TCP but never answers CONNECT: the attempt is bounded by the
    relay's timeout, its socket is closed, and close() during an attempt is prompt."""
    connections: list[asyncio.StreamReader] = []
    eofs = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal eofs
        connections.append(reader)
        while await reader.read(4096):
            pass
        eofs += 1
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = MqttRelay(f"mqtt://127.0.0.1:{port}", backoff=fast_backoff(), timeout=0.3)
    try:
        await until(lambda: relay.state is RelayState.BACKING_OFF, what="the attempt timing out")
        assert "timed out" in (relay.last_error or "")
        await until(lambda: eofs >= 1, what="the abandoned socket closing")
        await until(lambda: relay.state is RelayState.CONNECTING, what="the next attempt")
        await until(lambda: len(connections) >= 2, what="the next attempt connecting")
        started = time.monotonic()
        await relay.close()
        assert time.monotonic() - started < 0.5
        assert relay.state is RelayState.CLOSED
        await until(lambda: eofs == len(connections), what="every socket closed")
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()
