"""NostrRelay against a real Nostr relay (npm @nostr-relay/core) and rogue relays on loopback
(wire notes §3.1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve

from peermesh._signalling import RelayState
from peermesh._signalling.nostr import NostrRelay, acquire_nostr_relay, process_key
from peermesh._signalling.websocket import Backoff
from peermesh._wire.nostr import NostrKey, build_event, encode_event_message
from peermesh._wire.topics import nostr_kind
from tests.interop.nostr_relay import INTEROP_DIR, NostrRelaySetupError, start_nostr_relay
from tests.rooms import eventually

T1 = "731p275e6u4l455l3849481dl46536q3g1r6h5y"
T2 = "27o2f60266d2h3d1h6x2s1a6q2o6k3cv4u5v4a"
OTHER_KEY = NostrKey.from_secret("02" * 32)


def fast() -> Backoff:
    return Backoff(initial=0.05, maximum=0.2)


class Inbox:
    """A topic handler that records what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, topic: str, text: str) -> None:
        self.got.append((topic, text))


class Ready:
    """An on_ready callback that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@contextlib.asynccontextmanager
async def real_relay(port: int = 0) -> AsyncIterator[str]:
    try:
        async with start_nostr_relay(port=port) as url:
            yield url
    except NostrRelaySetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., NostrRelay]]:
    made: list[NostrRelay] = []

    def factory(url: str, **kw: Any) -> NostrRelay:
        kw.setdefault("backoff", fast())
        relay = NostrRelay(url, **kw)
        made.append(relay)
        return relay

    yield factory
    for relay in made:
        await relay.release()


async def ready(relay: NostrRelay, what: str = "relay ready") -> None:
    await eventually(lambda: relay.is_ready, 10, what)


# -- against the real relay -----------------------------------------------------------------


async def test_two_clients_exchange_messages_by_topic(
    clients: Callable[..., NostrRelay],
) -> None:
    async with real_relay() as url:
        a = clients(url, key=NostrKey.generate())
        b = clients(url, key=NostrKey.generate())
        a_in, b_in, b_in2 = Inbox(), Inbox(), Inbox()
        a.subscribe(T1, a_in)
        b.subscribe(T1, b_in)
        b.subscribe(T2, b_in2)
        b.subscribe(T2, b_in2)  # a no-op
        await ready(a)
        await ready(b)

        assert await a.publish(T1, '{"peerId":"A"}')
        await eventually(lambda: b_in.got == [(T1, '{"peerId":"A"}')], 5, "b gets T1")
        await eventually(lambda: a_in.got == [(T1, '{"peerId":"A"}')], 5, "a gets its own")
        assert await a.publish(T2, "to b")
        await eventually(lambda: b_in2.got == [(T2, "to b")], 5, "b gets T2")
        assert b_in.got == [(T1, '{"peerId":"A"}')]
        assert await b.publish(T1, "from b")
        await eventually(lambda: (T1, "from b") in a_in.got, 5, "a gets b's message")
        await eventually(lambda: len(b_in.got) == 2, 5, "b gets its own message")

        # Unsubscribed topics are no longer delivered; with no topic left, CLOSE.
        b.unsubscribe(T1, b_in)
        b.unsubscribe(T2, b_in2)
        await asyncio.sleep(0.05)
        assert b.subscription_ids == ()
        assert await a.publish(T1, "late")
        await eventually(lambda: (T1, "late") in a_in.got, 5, "a gets late")
        await asyncio.sleep(0.1)
        assert b_in.got == [(T1, '{"peerId":"A"}'), (T1, "from b")]

        health = a.health()
        assert health.url == url
        assert health.state is RelayState.OPEN
        assert health.messages_sent >= 4
        assert health.messages_received >= 3
        assert health.messages_dropped == 0
        assert a.forged_events == 0


async def test_subscriptions_survive_a_relay_restart(clients: Callable[..., NostrRelay]) -> None:
    async with real_relay() as url:
        port = int(url.rsplit(":", 1)[1])
        a = clients(url)
        b = clients(url)
        b_in = Inbox()
        b.subscribe(T1, b_in)
        b_ready = Ready()
        b.on_ready(b_ready)
        await ready(a)
        await ready(b)
        assert b_ready.count == 1
        first_ids = b.subscription_ids
    await eventually(lambda: not b.is_ready and not a.is_ready, 5, "both see the relay go")
    assert not await a.publish(T1, "nobody hears this")
    async with real_relay(port) as url2:
        assert url2 == url
        await eventually(lambda: b_ready.count == 2, 10, "on_ready fires again")
        await ready(a)
        assert b.subscription_ids == first_ids
        assert await a.publish(T1, "after restart")
        await eventually(lambda: b_in.got == [(T1, "after restart")], 5, "b re-subscribed")


async def test_the_real_relay_refuses_forgeries(clients: Callable[..., NostrRelay]) -> None:
    async with real_relay() as url:
        b = clients(url)
        b_in = Inbox()
        b.subscribe(T1, b_in)
        await ready(b)
        event = build_event(OTHER_KEY, topic=T1, content="genuine", created_at=_now())
        forged = dict(event, content="forged")
        async with connect(url) as raw:
            await raw.send(encode_event_message(forged))
            reply = json.loads(await asyncio.wait_for(raw.recv(), 5))
            assert reply[:3] == ["OK", forged["id"], False]
            await raw.send(encode_event_message(event))
            reply = json.loads(await asyncio.wait_for(raw.recv(), 5))
            assert reply[:3] == ["OK", event["id"], True]
        await eventually(lambda: b_in.got == [(T1, "genuine")], 5, "genuine event delivered")


# -- against rogue relays -------------------------------------------------------------------

OnMessage = Callable[[ServerConnection, list[Any]], Awaitable[None]]


class Rogue:
    """A WebSocket server on 127.0.0.1 speaking just enough Nostr to misbehave: it records
    every client message and hands it to ``on_message(ws, parsed)``."""

    def __init__(self, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.received: list[list[Any]] = []
        self.connections = 0
        self.disconnects = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Rogue:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            async for text in ws:
                message = json.loads(text)
                self.received.append(message)
                await self.on_message(ws, message)
        except Exception:
            pass
        finally:
            self.disconnects += 1

    def sent(self, kind: str) -> list[list[Any]]:
        return [m for m in self.received if m[0] == kind]


def _now() -> int:
    import time

    return int(time.time())


def _ok(reply: Callable[[dict[str, Any]], tuple[bool, str]]) -> OnMessage:
    async def on_message(ws: ServerConnection, message: list[Any]) -> None:
        if message[0] == "EVENT":
            accepted, reason = reply(message[1])
            await ws.send(json.dumps(["OK", message[1]["id"], accepted, reason]))

    return on_message


async def test_forged_duplicate_and_malformed_events_are_dropped(
    clients: Callable[..., NostrRelay], caplog: pytest.LogCaptureFixture
) -> None:
    genuine = build_event(OTHER_KEY, topic=T1, content="genuine", created_at=_now())
    forged_content = dict(genuine, content="forged")
    forged_sig = dict(genuine, sig=genuine["sig"][:-4] + "0000")
    reid = build_event(OTHER_KEY, topic=T1, content="x", created_at=_now())
    forged_id = dict(reid, id=genuine["id"].replace(genuine["id"][0], "f", 1))
    other_topic = build_event(OTHER_KEY, topic=T2, content="not ours", created_at=_now())
    second = build_event(OTHER_KEY, topic=T1, content="second", created_at=_now())

    async def on_message(ws: ServerConnection, message: list[Any]) -> None:
        if message[0] != "REQ":
            return
        sub = message[1]
        for event in (forged_content, forged_sig, forged_id):
            await ws.send(json.dumps(["EVENT", sub, event]))
        await ws.send(json.dumps(["EVENT", sub, genuine]))
        await ws.send(json.dumps(["EVENT", sub, genuine]))  # duplicate
        await ws.send(json.dumps(["EVENT", "someone-else", second]))  # not our sub id
        await ws.send(json.dumps(["EVENT", sub, other_topic]))  # topic not subscribed
        await ws.send("not json")
        await ws.send(json.dumps(["EVENT", sub, {"id": "nope"}]))
        await ws.send(json.dumps(["EOSE", sub]))
        await ws.send(json.dumps(["NOTICE", "hello"]))
        await ws.send(json.dumps(["EVENT", sub, second]))

    async with Rogue(on_message) as rogue:
        b = clients(rogue.url)
        b_in = Inbox()
        b.subscribe(T1, b_in)
        await eventually(lambda: len(b_in.got) == 2, 5, "genuine events delivered")
        assert b_in.got == [(T1, "genuine"), (T1, "second")]
        assert b.forged_events == 3
        assert b.malformed_messages == 2
        assert b.duplicate_events == 1
        health = b.health()
        assert health.messages_dropped == 5
        # the first of each kind is a warning, the rest debug: a relay cannot flood the log
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len([w for w in warnings if "signature is invalid" in w]) == 1
        assert len([w for w in warnings if "malformed relay message" in w]) == 1
        assert health.state is RelayState.OPEN
        req = rogue.sent("REQ")[0]
        assert req[2]["kinds"] == [nostr_kind(T1)]
        assert req[2]["#x"] == [T1]
        assert abs(req[2]["since"] - _now()) <= 2
        assert len(req[1]) == 64


async def test_rate_limits_back_off_and_acks_clear_the_backoff(
    clients: Callable[..., NostrRelay],
) -> None:
    mode = {"accept": False}

    def reply(event: dict[str, Any]) -> tuple[bool, str]:
        if mode["accept"]:
            return True, ""
        return False, "rate-limited: slow down"

    async with Rogue(_ok(reply)) as rogue:
        a = clients(rogue.url, rate_limit_backoff=0.3, max_rate_limit_backoff=0.5)
        await ready(a)
        assert await a.publish(T1, "one")
        await eventually(lambda: a.backing_off, 5, "backing off after rate-limited")
        health = a.health()
        assert health.state is RelayState.BACKING_OFF
        assert health.last_error == "rate-limited: slow down"
        assert not await a.publish(T1, "held back")
        assert len(rogue.sent("EVENT")) == 1
        await eventually(lambda: not a.backing_off, 5, "backoff over")
        assert a.health().state is RelayState.OPEN
        assert await a.publish(T1, "two")
        await eventually(lambda: a.backing_off, 5, "backing off again")
        assert a._backoff_delay == pytest.approx(0.5)  # doubled, capped
        await eventually(lambda: not a.backing_off, 5, "second backoff over")
        mode["accept"] = True
        assert await a.publish(T1, "three")
        await eventually(lambda: a._backoff_delay == 0, 5, "an OK true resets the backoff")
        assert a.health().state is RelayState.OPEN
        assert not a.is_retired


@pytest.mark.parametrize(
    ("reason", "retired"),
    [
        ("blocked: go away", True),
        ("invalid: bad signature", True),
        ("", True),
        ("duplicate: already have it", False),
    ],
)
async def test_ok_false_retires_the_relay_unless_duplicate(
    clients: Callable[..., NostrRelay], reason: str, retired: bool
) -> None:
    async with Rogue(_ok(lambda event: (False, reason))) as rogue:
        a = clients(rogue.url)
        await ready(a)
        assert await a.publish(T1, "one")
        if retired:
            await eventually(lambda: a.health().state is RelayState.RETIRED, 5, "retired")
            assert a.health().last_error == f"OK false: {reason}"
            await eventually(lambda: rogue.disconnects == 1, 5, "socket closed")
            assert not await a.publish(T1, "two")
            assert not a.is_ready
            await asyncio.sleep(0.3)
            assert rogue.connections == 1  # no reconnection once retired
        else:
            await asyncio.sleep(0.2)
            assert a.health().state is RelayState.OPEN
            assert await a.publish(T1, "two")


async def test_closed_retires_the_relay(clients: Callable[..., NostrRelay]) -> None:
    async def on_message(ws: ServerConnection, message: list[Any]) -> None:
        if message[0] == "REQ":
            await ws.send(json.dumps(["CLOSED", message[1], "restricted: no ephemeral"]))

    async with Rogue(on_message) as rogue:
        a = clients(rogue.url)
        ready_calls = Ready()
        a.on_ready(ready_calls)
        a.subscribe(T1, Inbox())
        await eventually(lambda: a.is_retired, 5, "retired")
        health = a.health()
        assert health.state is RelayState.RETIRED
        assert health.last_error == "CLOSED: restricted: no ephemeral"
        assert not await a.publish(T1, "x")
        await asyncio.sleep(0.3)
        assert rogue.connections == 1
        await a.release()
        assert a.health().state is RelayState.CLOSED


async def test_req_batching(clients: Callable[..., NostrRelay]) -> None:
    async def ignore(ws: ServerConnection, message: list[Any]) -> None:
        return None

    async with Rogue(ignore) as rogue:
        a = clients(rogue.url)
        await ready(a)
        handler = Inbox()
        topics = [f"topic-{i}" for i in range(300)]
        for topic in topics:
            a.subscribe(topic, handler)
        await eventually(lambda: len(rogue.sent("REQ")) == 2, 5, "two REQs")
        first, second = rogue.sent("REQ")
        assert first[2]["#x"] == topics[:250]
        assert second[2]["#x"] == topics[250:]
        assert first[2]["kinds"] == list(dict.fromkeys(nostr_kind(t) for t in topics[:250]))
        sub_ids = a.subscription_ids
        assert [first[1], second[1]] == list(sub_ids)

        # Down to one batch: the surplus subscription is CLOSEd, the first re-sent.
        for topic in topics[10:]:
            a.unsubscribe(topic, handler)
        await eventually(lambda: len(rogue.sent("REQ")) == 3, 5, "re-flushed REQ")
        assert rogue.sent("CLOSE") == [["CLOSE", sub_ids[1]]]
        assert rogue.sent("REQ")[2][1] == sub_ids[0]
        assert rogue.sent("REQ")[2][2]["#x"] == topics[:10]

        # Nothing left: CLOSE.
        for topic in topics[:10]:
            a.unsubscribe(topic, handler)
        await eventually(lambda: len(rogue.sent("CLOSE")) == 2, 5, "CLOSE when empty")
        assert rogue.sent("CLOSE")[1] == ["CLOSE", sub_ids[0]]
        assert a.subscription_ids == ()


async def test_on_ready_fires_after_the_req_is_written(
    clients: Callable[..., NostrRelay],
) -> None:
    async def ignore(ws: ServerConnection, message: list[Any]) -> None:
        return None

    async with Rogue(ignore) as rogue:
        a = clients(rogue.url)
        a.subscribe(T1, Inbox())
        published: list[asyncio.Task[bool]] = []
        a.on_ready(lambda: published.append(asyncio.ensure_future(a.publish(T1, "announce"))))
        await eventually(lambda: len(rogue.received) == 2, 5, "REQ and EVENT")
        assert [m[0] for m in rogue.received] == ["REQ", "EVENT"]
        assert await published[0]
        event = rogue.received[1][1]
        assert list(event) == ["kind", "tags", "created_at", "content", "pubkey", "id", "sig"]
        assert event["tags"] == [["x", T1]]
        assert event["kind"] == nostr_kind(T1)
        assert event["pubkey"] == process_key().pubkey
        # Registered while ready: called at once.
        late = Ready()
        unregister = a.on_ready(late)
        assert late.count == 1
        unregister()


async def test_handler_exceptions_do_not_stop_delivery(
    clients: Callable[..., NostrRelay], caplog: pytest.LogCaptureFixture
) -> None:
    events = [
        build_event(OTHER_KEY, topic=T1, content=f"m{i}", created_at=_now()) for i in range(2)
    ]

    async def on_message(ws: ServerConnection, message: list[Any]) -> None:
        if message[0] == "REQ":
            for event in events:
                await ws.send(json.dumps(["EVENT", message[1], event]))

    def boom(topic: str, text: str) -> None:
        raise RuntimeError("handler bug")

    async with Rogue(on_message) as rogue:
        a = clients(rogue.url)
        good = Inbox()
        a.subscribe(T1, boom)
        a.subscribe(T1, good)
        await eventually(lambda: len(good.got) == 2, 5, "both delivered")
        assert a.health().state is RelayState.OPEN
        assert rogue.connections == 1
        assert "handler bug" in caplog.text


async def test_shared_per_url() -> None:
    async with Rogue(_ok(lambda event: (True, ""))) as rogue:
        one = acquire_nostr_relay(rogue.url)
        two = acquire_nostr_relay(rogue.url)
        assert one is two
        await ready(one)
        await one.release()
        assert one.is_ready
        await two.release()
        assert one.is_closed
        assert one.health().state is RelayState.CLOSED
        assert not await one.publish(T1, "x")
        three = acquire_nostr_relay(rogue.url)
        try:
            assert three is not one
        finally:
            await three.release()


# -- with Trystero's own message builders ---------------------------------------------------

_TRYSTERO_CLIENT = """
import { createEvent, subscribe } from "@trystero-p2p/nostr";
import WebSocket from "ws";
const [url, topic, content] = process.argv.slice(1);
const ws = new WebSocket(url);
ws.on("message", (data) => process.stdout.write(data.toString() + "\\n"));
ws.on("open", async () => {
  ws.send(subscribe("t".repeat(64), topic));
  process.stdout.write(JSON.stringify(["SUBSCRIBED"]) + "\\n");
  process.stdin.on("data", async () => ws.send(await createEvent(topic, content)));
});
process.stdin.on("end", () => process.exit(0));
"""


async def test_interoperates_with_trystero_event_builders(
    clients: Callable[..., NostrRelay],
) -> None:
    """Trystero 0.25.4's ``subscribe``/``createEvent`` and NostrRelay, through the real relay."""
    async with real_relay() as url:
        a = clients(url)
        a_in = Inbox()
        a.subscribe(T1, a_in)
        await ready(a)
        proc = await asyncio.create_subprocess_exec(
            "node",
            "--input-type=module",
            "-e",
            _TRYSTERO_CLIENT,
            url,
            T1,
            '{"peerId":"FromTrystero"}',
            cwd=str(INTEROP_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None

        async def next_message() -> list[Any]:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line, "the Trystero client exited"
            return list(json.loads(line))

        try:
            assert await next_message() == ["SUBSCRIBED"]
            assert (await next_message())[0] == "EOSE"
            # Ours reaches Trystero's subscription ...
            assert await a.publish(T1, '{"peerId":"FromPython"}')
            got = await next_message()
            assert got[0] == "EVENT"
            assert got[1] == "t" * 64
            assert got[2]["content"] == '{"peerId":"FromPython"}'
            # ... and Trystero's reaches ours, with a signature that verifies.
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            await eventually(
                lambda: (T1, '{"peerId":"FromTrystero"}') in a_in.got, 10, "Trystero's event"
            )
            assert a.forged_events == 0
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 2)
            except TimeoutError:
                proc.kill()
                await proc.wait()
