"""A Python peer and real Trystero 0.25.4 peers on the topic strategies: Nostr (through a
real local Nostr relay), MQTT (through real mosquitto, over WebSocket as browsers do) and
ws-relay (through our embedded relay). Trystero's ws-relay package is not published on npm,
so its JS side is real Trystero core with a protocol adapter (tests/interop/ws-relay-strategy.mjs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

import peermesh.mqtt
import peermesh.nostr
import peermesh.relay
from peermesh.servers import serve_relay
from tests.brokers import start_mosquitto
from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import LARGE_ID, SCENARIOS, SMALL_ID, PyPeer, share_a_room
from tests.interop.jspeer import decode_data
from tests.interop.nostr_relay import start_nostr_relay
from tests.rooms import LOOPBACK, eventually

pytestmark = pytest.mark.interop

APP = "peermesh-interop"
MODULES: dict[str, ModuleType] = {
    "nostr": peermesh.nostr,
    "mqtt": peermesh.mqtt,
    "ws-relay": peermesh.relay,
}


@pytest.fixture(params=["nostr", "mqtt", "ws-relay"])
async def medium(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(strategy name, relay URL) of a fresh local relay or broker."""
    if request.param == "nostr":
        async with start_nostr_relay() as url:
            yield "nostr", url
    elif request.param == "mqtt":
        async with start_mosquitto() as broker:
            yield "mqtt", broker.ws_url
    else:
        async with await serve_relay("127.0.0.1", 0) as relay:
            yield "ws-relay", relay.url


async def py_join(strategy: str, url: str, peer_id: str, room_id: str, **kw: Any) -> PyPeer:
    room = await MODULES[strategy].join_room(
        room_id, app_id=APP, relay_urls=[url], peer_id=peer_id, **LOOPBACK, **kw
    )
    return PyPeer(room)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_python_and_trystero_share_a_room(
    scenario: str, medium: tuple[str, str], js_peer_factory: JsPeerFactory
) -> None:
    strategy, url = medium
    room_id = f"room-{scenario}"
    js = await js_peer_factory()
    await share_a_room(
        scenario,
        js,
        lambda peer_id: py_join(strategy, url, peer_id, room_id),
        lambda: js.join(room_id, url, app_id=APP, strategy=strategy, actions=["chat"]),
        join_timeout=15,
        stagger=1.5,  # past the incumbent's first announces: it is found as such
    )


async def test_targeted_send_reaches_one_of_two_trystero_peers(
    medium: tuple[str, str], js_peer_factory: JsPeerFactory
) -> None:
    strategy, url = medium
    js1, js2 = await js_peer_factory(), await js_peer_factory()
    for js in (js1, js2):
        await js.join("targeted", url, app_id=APP, strategy=strategy, actions=["chat"])
    py = await py_join(strategy, url, SMALL_ID, "targeted")
    try:
        await eventually(lambda: len(py.joined) == 2, 15, "both Trystero peers")
        chat = py.room.make_action("chat")
        await chat.send("for js2 only", target=js2.self_id)
        await chat.send("for both")
        got = await js2.wait_message("chat", peer_id=SMALL_ID)
        assert decode_data(got["data"]) == "for js2 only"
        got = await js2.wait_message("chat", peer_id=SMALL_ID)
        assert decode_data(got["data"]) == "for both"
        got = await js1.wait_message("chat", peer_id=SMALL_ID)
        assert decode_data(got["data"]) == "for both"
        await asyncio.sleep(0.2)
        js1_texts = [
            decode_data(e["data"])
            for e in js1.history
            if e["event"] == "message" and e.get("peerId") == SMALL_ID
        ]
        assert js1_texts == ["for both"]
    finally:
        await py.room.leave()


async def test_matching_password_connects(
    medium: tuple[str, str], js_peer_factory: JsPeerFactory
) -> None:
    strategy, url = medium
    js = await js_peer_factory()
    await js.join("pw", url, app_id=APP, strategy=strategy, password="s3", actions=["chat"])
    py = await py_join(strategy, url, SMALL_ID, "pw", password="s3")
    try:
        await eventually(lambda: py.joined == [js.self_id], 15, "password peers to meet")
        assert await py.room.ping(js.self_id) > 0
        await js.send("chat", "secret hello")
        assert await py.message() == ("secret hello", js.self_id, None)
    finally:
        await py.room.leave()


@pytest.mark.parametrize("py_id", [SMALL_ID, LARGE_ID], ids=["py-offers", "py-answers"])
async def test_mismatching_password_is_a_join_error_and_no_peer(
    py_id: str, medium: tuple[str, str], js_peer_factory: JsPeerFactory
) -> None:
    strategy, url = medium
    js = await js_peer_factory()
    await js.join("pw-bad", url, app_id=APP, strategy=strategy, password="right")
    py = await py_join(strategy, url, py_id, "pw-bad", password="wrong")
    try:

        def someone_errored() -> bool:
            return bool(py.errors) or any(e["event"] == "join-error" for e in js.history)

        await eventually(someone_errored, 15, "a join error on either side")
        js_errors = [e["error"] for e in js.history if e["event"] == "join-error"]
        errors = [e.error for e in py.errors] + js_errors
        assert any("incorrect room password" in e for e in errors), errors
        await asyncio.sleep(1)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert await js.peers() == []
    finally:
        await py.room.leave()
