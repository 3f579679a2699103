"""A Python peer and a real Trystero 0.25.4 peer in several rooms of one app id at once: they
hold ONE RTCPeerConnection multiplexed by room frames and presence frames (wire notes §6.1,
§6.2, §9.1); messages stay in their room, and leaving one room leaves the others intact.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import SMALL_ID, Medium, PyPeer, connect
from tests.interop.jspeer import JsPeer, decode_data
from tests.rooms import eventually

pytestmark = pytest.mark.interop

ROOM_IDS = {"a": "shared-a", "b": "shared-b", "c": "shared-c"}


async def exchange_in(label: str, py: PyPeer, js: JsPeer) -> None:
    """A message each way and a ping each way in room ``label`` only."""
    await py.room.make_action("chat").send(f"py in {label}")
    got = await js.wait_message("chat", peer_id=SMALL_ID, room=label)
    assert decode_data(got["data"]) == f"py in {label}"
    await js.send("chat", f"js in {label}", room=label, progress=False)
    assert await py.message() == (f"js in {label}", js.self_id, None)
    assert await py.room.ping(js.self_id) > 0
    assert await js.ping(SMALL_ID, room=label) >= 0


def assert_no_crosstalk(rooms: dict[str, PyPeer], js: JsPeer) -> None:
    """Every message each side received arrived in the room it was sent in."""
    for label, py in rooms.items():
        assert py.messages.empty(), f"stray message in Python room {label}"
    for ev in js.history:
        if ev["event"] == "message" and ev.get("peerId") == SMALL_ID:
            assert decode_data(ev["data"]) == f"py in {ev['room']}"


async def assert_one_connection(rooms: dict[str, PyPeer], js: JsPeer) -> None:
    pcs = [py.room.get_peers()[js.self_id] for py in rooms.values()]
    assert all(pc is pcs[0] for pc in pcs), "Python uses more than one RTCPeerConnection"
    serials = {label: (await js.connections(room=label))[SMALL_ID] for label in rooms}
    assert len(set(serials.values())) == 1, f"Trystero uses several connections: {serials}"


async def test_rooms_share_one_connection(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    rooms: dict[str, PyPeer] = {}
    try:
        # room a: a fresh connection
        rooms["a"] = await connect(
            signal_medium, js, ROOM_IDS["a"], js_kw={"room": "a", "actions": ["chat"]}
        )

        # room b: Trystero joins first, then Python; it binds onto the same connection
        await signal_medium.js_join(js, ROOM_IDS["b"], room="b", actions=["chat"])
        rooms["b"] = await signal_medium.py_join(ROOM_IDS["b"])
        await eventually(lambda: rooms["b"].joined == [js.self_id], 15, "Python to join b")
        await js.wait_event("peer-join", peerId=SMALL_ID, room="b", timeout=5)
        await assert_one_connection(rooms, js)
        for label, py in rooms.items():
            await exchange_in(label, py, js)
        assert_no_crosstalk(rooms, js)

        # room c: Python joins first this time
        rooms["c"] = await signal_medium.py_join(ROOM_IDS["c"])
        await asyncio.sleep(signal_medium.stagger)
        await signal_medium.js_join(js, ROOM_IDS["c"], room="c", actions=["chat"])
        await eventually(lambda: rooms["c"].joined == [js.self_id], 15, "Python to join c")
        await js.wait_event("peer-join", peerId=SMALL_ID, room="c", timeout=5)
        await assert_one_connection(rooms, js)
        for label, py in rooms.items():
            await exchange_in(label, py, js)
        assert_no_crosstalk(rooms, js)
        pc = rooms["a"].room.get_peers()[js.self_id]

        # Trystero leaves b: Python sees a leave in b only; a and c keep working
        await js.leave(room="b")
        await eventually(lambda: rooms["b"].left == [js.self_id], 5, "Python to see b's leave")
        assert rooms["b"].room.get_peers() == {}
        await asyncio.sleep(0.5)
        for label in ("a", "c"):
            assert rooms[label].left == [], f"Python saw a leave in {label}"
            await exchange_in(label, rooms[label], js)
        left_b = rooms.pop("b")
        await left_b.room.leave()
        await assert_one_connection(rooms, js)
        assert rooms["a"].room.get_peers()[js.self_id] is pc

        # Python leaves c: Trystero sees a leave in c only; a keeps working
        await rooms["c"].room.leave()
        await js.wait_event("peer-leave", peerId=SMALL_ID, room="c", timeout=5)
        await asyncio.sleep(0.5)
        leaves = [e["room"] for e in js.history if e["event"] == "peer-leave"]
        assert leaves == ["c"]
        del rooms["c"]
        await exchange_in("a", rooms["a"], js)
        assert rooms["a"].room.get_peers()[js.self_id] is pc
        assert await js.peers(room="a") == [SMALL_ID]
        assert_no_crosstalk(rooms, js)
        for py in rooms.values():
            assert py.errors == []
        assert [e for e in js.history if e["event"] == "join-error"] == []
    finally:
        for py in rooms.values():
            await py.room.leave()
