"""The embedded WebTorrent tracker, driven by raw WebSocket clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from peermesh._wire.tracker import (
    TrackerOffer,
    encode_announce,
    encode_answer,
    encode_passive_announce,
)
from peermesh.errors import UsageError
from peermesh.servers import TrackerServer, TrackerStats, serve_tracker
from peermesh.servers import tracker as tracker_module

pytestmark = pytest.mark.timeout(30)

IH = "e4j3c5a3g5x3f5isv4t6"
IH2 = "i" * 20
A, B, C, D = ("A" * 20, "B" * 20, "C" * 20, "D" * 20)


def pid(n: int) -> str:
    return f"peer{n:016d}"


def oid(n: int) -> str:
    return f"offer{n:015d}"


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    async with await serve_tracker(port=0, interval=30) as server:
        yield server


@contextlib.asynccontextmanager
async def client(server: TrackerServer, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with connect(server.url, **kwargs) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    text = await asyncio.wait_for(ws.recv(), timeout)
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


async def silent(ws: ClientConnection, timeout: float = 0.3) -> None:
    """Assert nothing arrives within ``timeout``."""
    try:
        got = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return
    pytest.fail(f"unexpected message {got!r}")


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def join(ws: ClientConnection, peer_id: str, info_hash: str = IH) -> dict[str, Any]:
    """Announce with no offers and return the tracker's reply."""
    await ws.send(encode_announce(info_hash, peer_id, []))
    return await recv(ws)


# ---------------------------------------------------------------------- announce


async def test_announce_reply_is_bittorrent_tracker_shape(tracker: TrackerServer) -> None:
    async with client(tracker) as ws:
        await ws.send(encode_announce(IH, A, []))
        text = await asyncio.wait_for(ws.recv(), 3)
    assert text == (
        '{"action":"announce","interval":30,"info_hash":"e4j3c5a3g5x3f5isv4t6",'
        '"complete":0,"incomplete":1}'
    )
    assert tracker.url == f"ws://127.0.0.1:{tracker.port}"
    assert tracker.port > 0


async def test_interval_is_advertised_as_configured() -> None:
    async with await serve_tracker(port=0, interval=12.5) as server, client(server) as ws:
        assert (await join(ws, A))["interval"] == 12.5
    async with await serve_tracker(port=0) as server, client(server) as ws:
        assert (await join(ws, A))["interval"] == 120


async def test_offer_goes_to_other_peer_with_offer_as_received(tracker: TrackerServer) -> None:
    async with client(tracker) as wa, client(tracker) as wb:
        await join(wa, A)
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(1), "sealed-sdp")]))
        reply = await recv(wb)
        assert (reply["complete"], reply["incomplete"]) == (0, 2)
        text = await asyncio.wait_for(wa.recv(), 3)
        assert text == (
            '{"action":"announce","offer":{"type":"offer","sdp":"sealed-sdp"},'
            f'"offer_id":"{oid(1)}","peer_id":"{B}","info_hash":"{IH}"}}'
        )
        await silent(wb)  # never to the sender itself
    assert tracker.stats().offers_forwarded == 1


async def test_offer_object_is_forwarded_verbatim_including_unknown_keys(
    tracker: TrackerServer,
) -> None:
    offer = {"type": "offer", "sdp": "v=0\r\né", "x": [1, None, {"y": True}]}
    async with client(tracker) as wa, client(tracker) as wb:
        await join(wa, A)
        await wb.send(
            json.dumps(
                {
                    "action": "announce",
                    "info_hash": IH,
                    "peer_id": B,
                    "offers": [{"offer": offer, "offer_id": "x"}],
                }
            ).encode()  # a binary frame, as some clients send
        )
        await recv(wb)
        relayed = await recv(wa)
    assert relayed["offer"] == offer
    assert relayed["offer_id"] == "x"


async def test_each_offer_goes_to_a_distinct_peer(tracker: TrackerServer) -> None:
    async with contextlib.AsyncExitStack() as stack:
        others = [await stack.enter_async_context(client(tracker)) for _ in range(3)]
        for i, ws in enumerate(others):
            await join(ws, pid(i))
        async with client(tracker) as sender:
            offers = [TrackerOffer(oid(i), f"sdp{i}") for i in range(3)]
            await sender.send(encode_announce(IH, D, offers))
            await recv(sender)
            got = [await recv(ws) for ws in others]
            assert sorted(m["offer_id"] for m in got) == [oid(0), oid(1), oid(2)]
            assert all(m["peer_id"] == D for m in got)
            for ws in others:
                await silent(ws, 0.1)

            # numwant=1 limits the fan-out to one peer
            await sender.send(encode_announce(IH, D, offers, numwant=1))
            await recv(sender)
            await until(lambda: tracker.stats().offers_forwarded == 4)
            await asyncio.sleep(0.1)
            assert tracker.stats().offers_forwarded == 4


class LastPicks:
    """Stands in for the tracker's ``random``: ``sample`` takes the last ``k`` of the pool
    (the newest peers), so which peer gets a "random" offer is known."""

    @staticmethod
    def sample(pool: list[Any], k: int) -> list[Any]:
        return pool[len(pool) - k :]


async def test_offers_go_back_first_to_the_peers_that_offered(
    tracker: TrackerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reciprocity: after B's offer reached A, A's next offer goes to B rather than to a
    random one of the other ten peers, once; A's announces after that go to the random
    pick again (here the newest peer, never B)."""
    monkeypatch.setattr(tracker_module, "random", LastPicks)
    async with contextlib.AsyncExitStack() as stack:
        wa = await stack.enter_async_context(client(tracker))
        wb = await stack.enter_async_context(client(tracker))
        await join(wa, A)
        await join(wb, B)
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(1), "from-b")]))
        await recv(wb)
        assert (await recv(wa))["peer_id"] == B  # the only other peer
        crowd = [await stack.enter_async_context(client(tracker)) for _ in range(10)]
        for i, ws in enumerate(crowd):
            await join(ws, pid(i))
        for attempt in range(3):
            await wa.send(encode_announce(IH, A, [TrackerOffer(oid(10 + attempt), "from-a")]))
            await recv(wa)
            if attempt == 0:
                assert (await recv(wb))["offer_id"] == oid(10)
            await asyncio.sleep(0.05)
        assert tracker.stats().offers_forwarded == 4
        # the second and third went to the random pick, not to B again
        await silent(wb, 0.2)
        assert (await recv(crowd[-1]))["offer_id"] == oid(11)
        assert (await recv(crowd[-1]))["offer_id"] == oid(12)


async def test_more_offers_than_peers_and_lone_peer(tracker: TrackerServer) -> None:
    async with client(tracker) as wa, client(tracker) as wb:
        await wa.send(encode_announce(IH, A, [TrackerOffer(oid(1), "s")]))
        await recv(wa)  # alone in the swarm: nobody to send it to
        await join(wb, B)
        await wa.send(encode_announce(IH, A, [TrackerOffer(oid(i), "s") for i in range(3)]))
        await recv(wa)
        assert (await recv(wb))["offer_id"] in {oid(0), oid(1), oid(2)}
        await silent(wb)
    assert tracker.stats().offers_forwarded == 1


async def test_answer_is_routed_to_to_peer_id_without_reply(tracker: TrackerServer) -> None:
    async with client(tracker) as wa, client(tracker) as wb, client(tracker) as wc:
        await join(wa, A)
        await join(wc, C)
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(7), "offer-sdp")]))
        await recv(wb)
        # B's offer went to A or C; whoever got it answers.
        got_a = await _maybe_recv(wa)
        answerer, name = (wa, A) if got_a is not None else (wc, C)
        if got_a is None:
            await recv(wc)
        await answerer.send(encode_answer(IH, name, to_peer_id=B, offer_id=oid(7), sdp="ans"))
        text = await asyncio.wait_for(wb.recv(), 3)
        assert text == (
            '{"action":"announce","answer":{"type":"answer","sdp":"ans"},'
            f'"offer_id":"{oid(7)}","peer_id":"{name}","info_hash":"{IH}"}}'
        )
        await silent(answerer)  # bittorrent-tracker does not reply to an answer
        await silent(wa if answerer is wc else wc, 0.1)

        # an answer for a peer that is not in the swarm is dropped and counted
        await wa.send(encode_answer(IH, A, to_peer_id=D, offer_id=oid(1), sdp="x"))
        await until(lambda: tracker.stats().answers_unroutable == 1)
    assert tracker.stats().answers_forwarded == 1


async def _maybe_recv(ws: ClientConnection) -> dict[str, Any] | None:
    try:
        return await recv(ws, 0.5)
    except TimeoutError:
        return None


async def test_seeders_and_scrape(tracker: TrackerServer) -> None:
    async with client(tracker) as wa, client(tracker) as wb, client(tracker) as wc:
        await wa.send(encode_passive_announce(IH, A))  # left:0 -> seeder
        assert (await recv(wa))["complete"] == 1
        reply = await join(wb, B)
        assert (reply["complete"], reply["incomplete"]) == (1, 1)
        await join(wb, B, IH2)

        await wc.send(json.dumps({"action": "scrape", "info_hash": [IH, C]}))
        text = await asyncio.wait_for(wc.recv(), 3)
        assert text == (
            '{"action":"scrape","files":{'
            f'"{IH}":{{"complete":1,"incomplete":1,"downloaded":1}},'
            f'"{C}":{{"complete":0,"incomplete":0,"downloaded":0}}}},'
            '"flags":{"min_request_interval":30}}'
        )
        await wc.send('{"action":"scrape"}')  # all swarms
        assert set((await recv(wc))["files"]) == {IH, IH2}
        await wc.send(json.dumps({"action": "scrape", "info_hash": IH2}))
        assert (await recv(wc))["files"] == {IH2: {"complete": 0, "incomplete": 1, "downloaded": 0}}

        # a seeder that announces without `left` becomes a leecher again (Trystero's
        # passive -> active transition); `event: completed` makes a seeder
        await join(wa, A)
        await wb.send(json.dumps({"action": "announce", "info_hash": IH, "peer_id": B,
                                  "event": "completed"}))  # fmt: skip
        reply = await recv(wb)
        assert (reply["complete"], reply["incomplete"]) == (1, 1)


# ---------------------------------------------------------------------- peer lifetime


async def test_peer_removed_when_socket_closes(tracker: TrackerServer) -> None:
    async with client(tracker) as wb, client(tracker) as wc:
        async with client(tracker) as wa:
            await join(wa, A)
            await join(wa, A, IH2)
            await join(wb, B)
            assert tracker.stats().peers == 3
        await until(lambda: tracker.stats().peers == 1)
        assert tracker.stats().swarms == 1  # IH2 is gone with its last peer
        await wc.send(encode_announce(IH, C, [TrackerOffer(oid(i), "s") for i in range(3)]))
        reply = await recv(wc)
        assert (reply["complete"], reply["incomplete"]) == (0, 2)
        assert (await recv(wb))["peer_id"] == C  # the only other peer left
        await silent(wb)


async def test_stopped_event_removes_peer(tracker: TrackerServer) -> None:
    async with client(tracker) as wa, client(tracker) as wb:
        await join(wa, A)
        await join(wb, B)
        await wa.send(
            json.dumps({"action": "announce", "info_hash": IH, "peer_id": A, "event": "stopped"})
        )
        reply = await recv(wa)
        assert (reply["complete"], reply["incomplete"]) == (0, 1)
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(1), "s")]))
        await recv(wb)
        await silent(wa)


async def test_peer_forgotten_after_peer_timeout() -> None:
    async with (
        await serve_tracker(port=0, peer_timeout=0.3) as server,
        client(server) as wa,
        client(server) as wb,
    ):
        await join(wa, A)
        await join(wb, B)
        for _ in range(6):  # B keeps announcing, A goes quiet (Trystero left the room)
            await asyncio.sleep(0.1)
            await join(wb, B)
        await until(lambda: server.stats().peers_expired == 1)
        assert server.stats().peers == 1
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(1), "s")]))
        reply = await recv(wb)
        assert reply["incomplete"] == 1
        await silent(wa, 0.1)
        # announcing again brings A back
        assert (await join(wb, B))["incomplete"] == 1
        assert (await join(wa, A))["incomplete"] == 2


async def test_same_peer_id_moving_to_a_new_socket(tracker: TrackerServer) -> None:
    async with client(tracker) as wb, client(tracker) as new:
        async with client(tracker) as old:
            await join(old, A)
            await join(new, A)  # e.g. a reconnect before the old socket was noticed dead
            assert tracker.stats().peers == 1
        await asyncio.sleep(0.2)  # the old socket closing must not remove the peer
        assert tracker.stats().peers == 1
        await wb.send(encode_announce(IH, B, [TrackerOffer(oid(1), "s")]))
        await recv(wb)
        assert (await recv(new))["peer_id"] == B


# ---------------------------------------------------------------------- limits


async def test_oversize_message_closes_only_that_client() -> None:
    async with await serve_tracker(port=0, max_message_size=1024) as server:
        async with client(server) as good, client(server) as bad:
            await join(good, A)
            await bad.send(encode_announce(IH, B, [TrackerOffer(oid(1), "x" * 2000)]))
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(bad.recv(), 3)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1009
            # the other client is unaffected
            assert (await join(good, A))["incomplete"] == 1
            assert (await join(good, C))["incomplete"] == 2
        stats = server.stats()
        assert stats.dropped_oversize == 1
        assert stats.offers_forwarded == 0


async def test_swarm_full_is_refused() -> None:
    async with await serve_tracker(port=0, max_peers_per_swarm=2) as server:
        async with client(server) as wa, client(server) as wb, client(server) as wc:
            await join(wa, A)
            await join(wb, B)
            await wc.send(encode_announce(IH, C, [TrackerOffer(oid(1), "s")]))
            text = await asyncio.wait_for(wc.recv(), 3)
            assert text == (
                f'{{"action":"announce","failure reason":"swarm is full","info_hash":"{IH}"}}'
            )
            await silent(wa, 0.1)
            await silent(wb, 0.1)
            assert (await join(wa, A))["incomplete"] == 2  # members can still re-announce
            assert (await join(wc, C, IH2))["incomplete"] == 1  # other swarms still open
        assert server.stats().rejected_full == 1


async def test_too_many_swarms_is_refused() -> None:
    async with await serve_tracker(port=0, max_swarms=1) as server, client(server) as ws:
        await join(ws, A)
        reply = await join(ws, A, IH2)
        assert reply == {"action": "announce", "failure reason": reply["failure reason"],
                         "info_hash": IH2}  # fmt: skip
        assert "swarm" in reply["failure reason"]
        assert server.stats().swarms == 1


async def test_too_many_peers_on_one_connection_is_refused() -> None:
    async with await serve_tracker(port=0, max_peers_per_connection=2) as server:
        async with client(server) as ws, client(server) as other:
            await join(ws, A)
            await join(ws, B)  # a second peer_id on the same socket (shared socket pool)
            assert (await join(ws, A))["incomplete"] == 2  # re-announcing is fine
            reply = await join(ws, C, IH2)
            assert reply["failure reason"] == "too many peers on this connection"
            assert (await join(other, C, IH2))["incomplete"] == 1  # others unaffected
        assert server.stats().rejected_full == 1


async def test_too_many_offers_are_truncated() -> None:
    async with (
        await serve_tracker(port=0, max_offers_per_announce=2) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        others = [await stack.enter_async_context(client(server)) for _ in range(4)]
        for i, ws in enumerate(others):
            await join(ws, pid(i))
        async with client(server) as sender:
            offers = [TrackerOffer(oid(i), "s") for i in range(5)]
            await sender.send(encode_announce(IH, D, offers, numwant=5))
            await recv(sender)
            await until(lambda: server.stats().offers_forwarded == 2)
            received = [m for m in [await _maybe_recv(ws) for ws in others] if m is not None]
        assert sorted(m["offer_id"] for m in received) == [oid(0), oid(1)]
        assert server.stats().offers_truncated == 3


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        b"\xff\x00binary",
        "[]",
        '{"action":"announce","info_hash":"short","peer_id":"AAAAAAAAAAAAAAAAAAAA"}',
        '{"action":"connect"}',
        '{"action":"announce","info_hash":"e4j3c5a3g5x3f5isv4t6",'
        '"peer_id":"AAAAAAAAAAAAAAAAAAAA","offers":[{"offer":{"sdp":"x"}}]}',
    ],
)
async def test_malformed_messages_get_failure_and_are_counted(
    tracker: TrackerServer, garbage: str | bytes
) -> None:
    async with client(tracker) as bad, client(tracker) as good:
        await join(good, B)
        await bad.send(garbage)
        reply = await recv(bad)
        assert list(reply) == ["failure reason"]
        assert tracker.stats().dropped_malformed == 1
        assert tracker.stats().peers == 1  # nothing was recorded for the bad message
        # both the offending connection and the others keep working
        assert (await join(bad, A))["incomplete"] == 2
        await bad.send(encode_announce(IH, A, [TrackerOffer(oid(1), "s")]))
        await recv(bad)
        assert (await recv(good))["offer_id"] == oid(1)


async def test_slow_reader_does_not_stall_others() -> None:
    """A client that stops reading gets messages dropped; everyone else is served."""
    async with await serve_tracker(port=0) as server:
        slow = await connect(server.url, max_queue=1)  # stops reading once 1 frame is queued
        try:
            await join(slow, A)
            async with client(server) as flood, client(server) as other:
                drained = 0

                async def drain() -> None:
                    nonlocal drained
                    async for _ in flood:
                        drained += 1

                drainer = asyncio.create_task(drain())
                big = "s" * 60_000
                sent = 0
                while server.stats().dropped_backpressure == 0 and sent < 2000:
                    await flood.send(encode_announce(IH, B, [TrackerOffer(oid(sent), big)]))
                    sent += 1
                assert server.stats().dropped_backpressure > 0, "the slow reader never backed up"
                # while the slow reader is stuck, another client is answered at once
                started = time.monotonic()
                assert (await join(other, C, IH2))["incomplete"] == 1
                assert time.monotonic() - started < 1.0
                await until(lambda: drained == sent)  # the flooder got every reply
                drainer.cancel()
        finally:
            slow.transport.abort()
        await until(lambda: server.stats().connections == 0)


# ---------------------------------------------------------------------- lifecycle


async def test_close_disconnects_clients_and_is_idempotent() -> None:
    server = await serve_tracker(port=0)
    async with client(server) as ws:
        await join(ws, A)
        await server.close()
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
    await server.close()
    assert server.stats() == TrackerStats(
        connections=0,
        swarms=0,
        peers=0,
        messages_in=1,
        messages_out=1,
        offers_forwarded=0,
        answers_forwarded=0,
        answers_unroutable=0,
        offers_truncated=0,
        dropped_malformed=0,
        dropped_oversize=0,
        dropped_backpressure=0,
        rejected_full=0,
        peers_expired=0,
    )
    with pytest.raises(ConnectionRefusedError):
        await connect(server.url, open_timeout=2)


async def test_serve_forever_stops_on_cancel() -> None:
    server = await serve_tracker(port=0)
    task = asyncio.create_task(server.serve_forever())
    async with client(server) as ws:
        await join(ws, A)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"interval": float("nan")},
        {"max_message_size": 0},
        {"max_peers_per_swarm": 0},
        {"max_swarms": -1},
        {"max_offers_per_announce": -1},
        {"peer_timeout": 0},
    ],
)
async def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        await serve_tracker(port=0, **kwargs)


async def test_port_in_use_raises_oserror(tracker: TrackerServer) -> None:
    with pytest.raises(OSError, match=r"(?i)address already in use"):
        await serve_tracker(port=tracker.port)
