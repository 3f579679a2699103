"""Several strategies in one room: one connection and one join per peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import peermesh
from peermesh import Mqtt, Room, Torrent, UsageError, WsRelay
from peermesh.servers import serve_relay
from peermesh.servers.tracker import TrackerServer
from tests.brokers import start_mosquitto
from tests.rooms import LOOPBACK, eventually, peer_ids


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    server = await serve_relay("127.0.0.1", 0)
    try:
        yield server.url
    finally:
        await server.close()


async def test_peers_reached_three_ways_get_one_connection_and_one_join(
    tracker: TrackerServer, relay_url: str
) -> None:
    async with start_mosquitto() as broker:
        strategies = [Torrent([tracker.url]), Mqtt([broker.ws_url]), WsRelay([relay_url])]
        rooms: list[Room] = []
        joins: dict[str, list[str]] = {}
        try:
            for peer_id in peer_ids(2, "m"):
                room = await peermesh.join_room(
                    "three-ways",
                    app_id="strategies",
                    peer_id=peer_id,
                    strategies=strategies,
                    **LOOPBACK,
                )
                joins[peer_id] = []
                room.on_peer_join(joins[peer_id].append)
                rooms.append(room)
            a, b = rooms
            await eventually(lambda: joins[a.self_id] == [b.self_id], 15, "a sees b")
            await eventually(lambda: joins[b.self_id] == [a.self_id], 5, "b sees a")
            await asyncio.sleep(2.5)  # every strategy's announces and offers play out
            assert joins == {a.self_id: [b.self_id], b.self_id: [a.self_id]}
            for room, other in ((a, b), (b, a)):
                assert list(room._shared.links) == [other.self_id]
                assert len([link for link in room._shared._info if link.is_open]) == 1
            assert a.get_peers()[b.self_id].connectionState == "connected"
            got: asyncio.Queue[object] = asyncio.Queue()
            b.make_action("x").on_message(lambda d, p, m: got.put_nowait(d))
            await a.make_action("x").send("once")
            assert await asyncio.wait_for(got.get(), 5) == "once"
            await asyncio.sleep(0.2)
            assert got.empty()
        finally:
            for room in rooms:
                await room.leave()


async def test_a_peer_on_one_strategy_meets_a_peer_on_several(
    tracker: TrackerServer, relay_url: str
) -> None:
    a_id, b_id = peer_ids(2, "n")
    a = await peermesh.join_room(
        "mixed",
        app_id="strategies",
        peer_id=a_id,
        strategies=[Torrent([tracker.url]), WsRelay([relay_url])],
        **LOOPBACK,
    )
    b = await peermesh.relay.join_room(
        "mixed", app_id="strategies", relay_urls=[relay_url], peer_id=b_id, **LOOPBACK
    )
    try:
        await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 15, "meet")
    finally:
        await a.leave()
        await b.leave()


async def test_join_room_checks_its_strategy_arguments() -> None:
    with pytest.raises(UsageError):
        await peermesh.join_room("r", app_id="a", strategies=[])
    with pytest.raises(UsageError):
        await peermesh.join_room(
            "r", app_id="a", relay_urls=["ws://127.0.0.1:1"], strategies=[Torrent()]
        )
    with pytest.raises(UsageError):
        WsRelay()  # ws-relay has no default relays
    with pytest.raises(UsageError):
        Mqtt(["http://127.0.0.1:1"])
    with pytest.raises(UsageError):
        await peermesh.join_room(
            "r", app_id="a", peer_id="short", strategies=[Torrent(["ws://127.0.0.1:1"])]
        )
