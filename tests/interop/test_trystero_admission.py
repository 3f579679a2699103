"""Admission between a Python peer and a real Trystero 0.25.4 peer: the user handshake hook
(``on_peer_handshake`` / ``onPeerHandshake``) accepting and rejecting on either side, and
passive peers (``passive=True`` / ``passive: true``), on torrent and nostr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import SMALL_ID, Medium, PyPeer
from tests.interop.jspeer import JsPeer, decode_data, handshake_spec
from tests.rooms import eventually

pytestmark = pytest.mark.interop

Receive = Callable[[], Awaitable[tuple[Any, Any]]]
Send = Callable[..., Awaitable[None]]


def js_events(js: JsPeer, name: str) -> list[dict[str, Any]]:
    return [e for e in js.history if e["event"] == name]


async def join_both(
    medium: Medium,
    js: JsPeer,
    room_id: str,
    *,
    js_kw: dict[str, Any] | None = None,
    py_kw: dict[str, Any] | None = None,
) -> PyPeer:
    await medium.js_join(js, room_id, **(js_kw or {}))
    await asyncio.sleep(medium.stagger)
    return await medium.py_join(room_id, SMALL_ID, **(py_kw or {}))


# -- handshake hook --------------------------------------------------------------------------


async def test_handshake_accept_both_ways(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    """Both hooks exchange a value with metadata; neither side reports the join until both
    hooks have returned (each side is held until the test releases it)."""
    js = await js_peer_factory()
    py_got: list[tuple[str, bool, Any, Any]] = []
    py_release = asyncio.Event()
    py_done: list[str] = []

    async def hook(peer_id: str, send: Send, receive: Receive, is_initiator: bool) -> None:
        await send({"token": "py-secret"}, metadata={"from": "python"})
        data, metadata = await receive()
        py_got.append((peer_id, is_initiator, data, metadata))
        await py_release.wait()
        py_done.append(peer_id)

    py = await join_both(
        signal_medium,
        js,
        "hs-accept",
        js_kw={
            "handshake": handshake_spec(
                "accept", send={"token": "js-secret"}, metadata={"from": "trystero"}, hold=True
            ),
            "actions": ["chat"],
        },
        py_kw={"on_peer_handshake": hook},
    )
    try:
        ev = await js.wait_event("handshake", peerId=SMALL_ID, timeout=20)
        assert decode_data(ev["data"]) == {"token": "py-secret"}
        assert ev["metadata"] == {"from": "python"}
        # the smaller id is the initiator on both sides
        assert ev["isInitiator"] is (js.self_id < SMALL_ID) is False
        await js.wait_event("handshake-hold", peerId=SMALL_ID, timeout=5)
        await eventually(lambda: bool(py_got), 5, "the Python hook to receive")
        assert py_got == [(js.self_id, True, {"token": "js-secret"}, {"from": "trystero"})]

        # both hooks are still running: nobody has joined
        await asyncio.sleep(0.5)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert js_events(js, "peer-join") == []
        assert await js.peers() == []

        # Python's hook returns: it still waits for Trystero's readiness
        py_release.set()
        await eventually(lambda: py_done == [js.self_id], 5, "the Python hook to return")
        await asyncio.sleep(0.5)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert js_events(js, "peer-join") == []

        # Trystero's hook returns: now both join
        await js.release_handshake(SMALL_ID)
        await eventually(lambda: py.joined == [js.self_id], 5, "Python to see the join")
        await js.wait_event("peer-join", peerId=SMALL_ID, timeout=5)
        done = js_events(js, "handshake-done")
        assert [e["peerId"] for e in done] == [SMALL_ID]

        # and the room works
        await js.send("chat", "after the handshake")
        assert await py.message() == ("after the handshake", js.self_id, None)
        assert await py.room.ping(js.self_id) > 0
        assert py.errors == []
        assert js_events(js, "join-error") == []
    finally:
        await py.room.leave()


async def test_handshake_rejected_by_trystero(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    py_calls: list[str] = []

    async def hook(peer_id: str, send: Send, receive: Receive, is_initiator: bool) -> None:
        py_calls.append(peer_id)
        await send("let me in")
        await receive()  # Trystero never answers: it rejects

    py = await join_both(
        signal_medium,
        js,
        "hs-js-rejects",
        js_kw={
            "handshake": handshake_spec("reject", message="go away, python"),
            "handshake_timeout_ms": 3000,
        },
        py_kw={"on_peer_handshake": hook, "handshake_timeout": 3},
    )
    try:
        err = await js.wait_event("join-error", peerId=SMALL_ID, timeout=20)
        assert err["error"] == "go away, python"
        assert py_calls
        assert set(py_calls) == {js.self_id}
        # Python gives up by its own timeout at the latest; it never reports a join
        await eventually(lambda: bool(py.errors), 8, "Python's join error")
        assert all(e.peer_id == js.self_id for e in py.errors)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert js_events(js, "peer-join") == []
        assert await js.peers() == []
    finally:
        await py.room.leave()


async def test_handshake_rejected_by_python(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()

    async def hook(peer_id: str, send: Send, receive: Receive, is_initiator: bool) -> None:
        data, _metadata = await receive()
        raise PermissionError(f"not you: {data['who']}")

    py = await join_both(
        signal_medium,
        js,
        "hs-py-rejects",
        js_kw={
            "handshake": handshake_spec("accept", send={"who": "trystero"}, metadata={"v": 1}),
            "handshake_timeout_ms": 3000,
        },
        py_kw={"on_peer_handshake": hook, "handshake_timeout": 3},
    )
    try:
        await eventually(lambda: bool(py.errors), 20, "Python's join error")
        assert py.errors[0].error == "not you: trystero"
        assert py.errors[0].peer_id == js.self_id
        assert py.errors[0].room_id == "hs-py-rejects"
        await js.wait_event("handshake-start", peerId=SMALL_ID, timeout=5)
        # Trystero never reports a join (it times out or sees the connection go)
        await asyncio.sleep(3.5)
        assert js_events(js, "peer-join") == []
        assert await js.peers() == []
        assert py.joined == []
        assert py.room.get_peers() == {}
    finally:
        await py.room.leave()


# -- passive peers ---------------------------------------------------------------------------


async def test_passive_trystero_meets_active_python(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    result = await signal_medium.js_join(js, "passive-js", passive=True, actions=["chat"])
    assert result["isPassive"] is True
    assert (await js.status())["isPassive"] is True
    await asyncio.sleep(signal_medium.stagger)
    py = await signal_medium.py_join("passive-js", SMALL_ID)
    try:
        assert py.room.is_passive is False
        await eventually(lambda: py.joined == [js.self_id], 20, "Python to see passive JS")
        await js.wait_event("peer-join", peerId=SMALL_ID, timeout=5)
        await js.send("chat", "from a passive peer")
        assert await py.message() == ("from a passive peer", js.self_id, None)
        assert await py.room.ping(js.self_id) > 0
    finally:
        await py.room.leave()


async def test_passive_python_meets_active_trystero(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    py = await signal_medium.py_join("passive-py", SMALL_ID, passive=True)
    try:
        assert py.room.is_passive is True
        await asyncio.sleep(signal_medium.stagger)
        await signal_medium.js_join(js, "passive-py", actions=["chat"])
        assert (await js.status())["isPassive"] is False
        await eventually(lambda: py.joined == [js.self_id], 20, "passive Python to see JS")
        await js.wait_event("peer-join", peerId=SMALL_ID, timeout=5)
        await py.room.make_action("chat").send("from a passive peer")
        got = await js.wait_message("chat", peer_id=SMALL_ID)
        assert decode_data(got["data"]) == "from a passive peer"
        assert await js.ping(SMALL_ID) >= 0
    finally:
        await py.room.leave()


async def test_two_passive_peers_do_not_connect(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    await signal_medium.js_join(js, "passive-both", passive=True)
    await asyncio.sleep(signal_medium.stagger)
    py = await signal_medium.py_join("passive-both", SMALL_ID, passive=True)
    try:
        await asyncio.sleep(4)
        assert py.joined == []
        assert py.room.get_peers() == {}
        assert py.errors == []
        assert js_events(js, "peer-join") == []
        assert js_events(js, "join-error") == []
        assert await js.peers() == []
    finally:
        await py.room.leave()
