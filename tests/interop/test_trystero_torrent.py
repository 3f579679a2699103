"""A Python peer and real Trystero 0.25.4 peers (Node, @roamhq/wrtc) in one torrent room.

Run on our embedded tracker and on npm's ``bittorrent-tracker``, in every combination of
who joins first and whose peer id is smaller (the smaller id makes the offer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room
from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import LARGE_ID, SCENARIOS, SMALL_ID, PyPeer, share_a_room
from tests.interop.jspeer import (
    decode_data,
    start_bittorrent_tracker,
)
from tests.rooms import LOOPBACK, eventually

pytestmark = pytest.mark.interop

APP = "peermesh-interop"
MIB = 1024 * 1024


@pytest.fixture(params=["embedded", "bittorrent-tracker"])
async def tracker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Our tracker or npm's, each advertising a 10 s announce interval."""
    if request.param == "embedded":
        server = await serve_tracker("127.0.0.1", 0, interval=10)
        try:
            yield server.url
        finally:
            await server.close()
    else:
        async with start_bittorrent_tracker() as url:
            yield url


async def py_join(url: str, peer_id: str, room_id: str, **kw: Any) -> PyPeer:
    room = await join_room(room_id, app_id=APP, relay_urls=[url], peer_id=peer_id, **LOOPBACK, **kw)
    return PyPeer(room)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_python_and_trystero_share_a_room(
    scenario: str, tracker_url: str, js_peer_factory: JsPeerFactory
) -> None:
    room_id = f"room-{scenario}"
    js = await js_peer_factory()
    # A late joiner with the larger id waits for the incumbent's next announce (10 s).
    await share_a_room(
        scenario,
        js,
        lambda peer_id: py_join(tracker_url, peer_id, room_id),
        lambda: js.join(room_id, tracker_url, app_id=APP, actions=["chat"]),
        join_timeout=25,
    )


async def test_targeted_send_reaches_one_of_two_trystero_peers(
    tracker_url: str, js_peer_factory: JsPeerFactory
) -> None:
    js1, js2 = await js_peer_factory(), await js_peer_factory()
    for js in (js1, js2):
        await js.join("targeted", tracker_url, app_id=APP, actions=["chat"])
    py = await py_join(tracker_url, SMALL_ID, "targeted")
    try:
        await eventually(lambda: len(py.joined) == 2, 25, "both Trystero peers")
        chat = py.room.make_action("chat")
        await chat.send("for js2 only", target=js2.self_id)
        await chat.send("for both")
        assert decode_data((await js2.wait_message("chat", peer_id=SMALL_ID))["data"]) == (
            "for js2 only"
        )
        assert decode_data((await js2.wait_message("chat", peer_id=SMALL_ID))["data"]) == (
            "for both"
        )
        assert decode_data((await js1.wait_message("chat", peer_id=SMALL_ID))["data"]) == (
            "for both"
        )
        await asyncio.sleep(0.2)
        js1_texts = [
            decode_data(e["data"])
            for e in js1.history
            if e["event"] == "message" and e.get("peerId") == SMALL_ID
        ]
        assert js1_texts == ["for both"]
    finally:
        await py.room.leave()


async def test_matching_password_connects(tracker_url: str, js_peer_factory: JsPeerFactory) -> None:
    js = await js_peer_factory()
    await js.join("pw", tracker_url, app_id=APP, password="open sesame", actions=["chat"])
    py = await py_join(tracker_url, SMALL_ID, "pw", password="open sesame")
    try:
        await eventually(lambda: py.joined == [js.self_id], 25, "password peers to meet")
        await js.wait_event("peer-join", peerId=SMALL_ID, timeout=5)
        assert await py.room.ping(js.self_id) > 0
        await js.send("chat", "secret hello")
        assert await py.message() == ("secret hello", js.self_id, None)
    finally:
        await py.room.leave()


@pytest.mark.parametrize("py_id", [SMALL_ID, LARGE_ID], ids=["py-offers", "py-answers"])
async def test_mismatching_password_is_a_join_error_and_no_peer(
    py_id: str, tracker_url: str, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    await js.join("pw-bad", tracker_url, app_id=APP, password="right", actions=["chat"])
    py = await py_join(tracker_url, py_id, "pw-bad", password="wrong")
    try:
        # Whoever receives the other's SDP cannot decrypt it and reports a join error.
        def someone_errored() -> bool:
            js_errors = [e for e in js.history if e["event"] == "join-error"]
            return bool(py.errors or js_errors)

        await eventually(someone_errored, 25, "a join error on either side")
        js_errors = [e["error"] for e in js.history if e["event"] == "join-error"]
        errors = [e.error for e in py.errors] + js_errors
        assert any("incorrect room password" in e for e in errors), errors
        await asyncio.sleep(1)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert await js.peers() == []
    finally:
        await py.room.leave()
