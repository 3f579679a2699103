"""``room.events()``, ``async for`` over actions, and the bounded queue behind them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from peermesh import ActionMessage, PeerJoined, PeerLeft, RoomEvent
from peermesh._events import EventQueue
from tests.rooms import JoinFactory, connected_pair, eventually, peer_ids


async def test_event_queue_is_bounded_fifo_and_drains_before_ending() -> None:
    queue: EventQueue[int] = EventQueue(3)
    assert [queue.put(i) for i in range(5)] == [True, True, True, False, False]
    assert queue.dropped == 2
    queue.close()
    assert not queue.put(9)
    assert [item async for item in queue] == [0, 1, 2]
    with pytest.raises(ValueError, match="limit"):
        EventQueue(0)


async def test_event_queue_wakes_a_waiting_reader() -> None:
    queue: EventQueue[str] = EventQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not reader.done()
    queue.put("x")
    assert await asyncio.wait_for(reader, 1) == "x"


async def test_room_events_replay_then_follow_joins_and_leaves(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    seen: list[RoomEvent] = []

    async def read() -> None:
        async for event in a.events():
            seen.append(event)

    reader = asyncio.ensure_future(read())
    await eventually(lambda: seen == [PeerJoined(b.self_id)], 5, "the replayed join")
    c = await join(peer_ids(3)[2])
    await eventually(lambda: PeerJoined(c.self_id) in seen, 20, "c's join")
    await b.leave()
    await eventually(lambda: PeerLeft(b.self_id) in seen, 10, "b's leave")
    await a.leave()
    await asyncio.wait_for(reader, 5)  # iteration ends when the room is left
    assert seen.index(PeerJoined(c.self_id)) < seen.index(PeerLeft(b.self_id))


async def test_async_for_over_an_action(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    await a.make_action("chat").send("held before anyone listened")
    got: list[ActionMessage] = []

    async def read() -> None:
        async for message in b.make_action("chat"):
            got.append(message)
            if len(got) == 3:
                break

    reader = asyncio.ensure_future(read())
    await eventually(lambda: len(got) == 1, 5, "the held message")
    await a.make_action("chat").send({"n": 2}, metadata="m")
    await a.make_action("chat").send(b"\x00\x01")
    await asyncio.wait_for(reader, 5)
    assert [tuple(m) for m in got] == [
        ("held before anyone listened", a.self_id, None),
        ({"n": 2}, a.self_id, "m"),
        (b"\x00\x01", a.self_id, None),
    ]
    data, peer_id, metadata = got[1]
    assert (data, peer_id, metadata) == ({"n": 2}, a.self_id, "m")
    await asyncio.sleep(0)  # let the finished generator unsubscribe
    assert not b.make_action("chat")._queues


async def test_a_stalled_iterator_drops_beyond_its_limit_and_others_still_get_all(
    join: JoinFactory,
) -> None:
    a, b = await connected_pair(join)
    action = b.make_action("burst")
    stalled = action.messages(limit=2)
    first = asyncio.ensure_future(anext(stalled))
    callback_got: list[object] = []
    action.on_message(lambda data, peer, meta: callback_got.append(data))
    for i in range(10):
        await a.make_action("burst").send(i)
    await eventually(lambda: len(callback_got) == 10, 10, "all ten by callback")
    assert await first == ActionMessage(0, a.self_id, None)
    (queue,) = action._queues
    assert len(queue) == 2
    assert queue.dropped == 7
    assert [m.data async for m in _take(stalled, 2)] == [1, 2]
    await stalled.aclose()
    assert not action._queues


async def _take(iterator: AsyncIterator[ActionMessage], count: int) -> AsyncIterator[ActionMessage]:
    for _ in range(count):
        yield await anext(iterator)
