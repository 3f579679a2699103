"""What the interop tests do with a Python peer and a Trystero peer in one room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import peermesh.nostr
import peermesh.torrent
from peermesh import JoinErrorEvent, Room
from tests.interop.jspeer import GeneratedBytes, JsPeer, decode_data, deterministic_bytes
from tests.rooms import LOOPBACK, eventually

MIB = 1024 * 1024


class PyPeer:
    """A Python room plus queues of what it received, for assertions."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.joined: list[str] = []
        self.left: list[str] = []
        self.errors: list[JoinErrorEvent] = []
        self.messages: asyncio.Queue[tuple[object, str, object]] = asyncio.Queue()
        self.progress: list[float] = []
        room.on_peer_join(self.joined.append)
        room.on_peer_leave(self.left.append)
        room.on_join_error(self.errors.append)
        chat = room.make_action("chat")
        chat.on_message(lambda d, p, m: self.messages.put_nowait((d, p, m)))
        chat.on_receive_progress(lambda f, p, m: self.progress.append(f))

    async def message(self, timeout: float = 10) -> tuple[object, str, object]:
        return await asyncio.wait_for(self.messages.get(), timeout)


async def exchange_everything(py: PyPeer, js: JsPeer) -> None:
    """Strings, JSON, 1 MiB of bytes with metadata and progress, both ways; pings."""
    chat = py.room.make_action("chat")
    py_id = py.room.self_id

    await chat.send("hello from python")
    assert decode_data((await js.wait_message("chat", peer_id=py_id))["data"]) == (
        "hello from python"
    )
    await js.send("chat", "hello from trystero")
    assert await py.message() == ("hello from trystero", js.self_id, None)

    await chat.send({"n": [1, 2.5, None], "ok": True})
    got = await js.wait_message("chat", peer_id=py_id)
    assert decode_data(got["data"]) == {"n": [1, 2.5, None], "ok": True}
    await js.send("chat", {"from": "js", "list": [1, "two"]})
    assert await py.message() == ({"from": "js", "list": [1, "two"]}, js.self_id, None)

    blob = deterministic_bytes(MIB, "py->js")
    sent_progress: list[float] = []
    await chat.send(
        blob, metadata={"name": "py.bin"}, on_progress=lambda f, p, m: sent_progress.append(f)
    )
    got = await js.wait_message("chat", peer_id=py_id, timeout=30)
    received = decode_data(got["data"])
    assert (received.length, received.sha256) == (MIB, GeneratedBytes(MIB, "py->js").sha256)
    assert got["metadata"] == {"name": "py.bin"}
    assert sent_progress[-1] == 1.0
    assert len(sent_progress) == 66
    js_progress = [
        e["percent"]
        for e in js.history
        if e["event"] == "progress" and e.get("metadata") == {"name": "py.bin"}
    ]
    assert len(js_progress) >= 60
    assert js_progress == sorted(js_progress)
    assert js_progress[-1] == 1

    py.progress.clear()
    result = await js.send("chat", GeneratedBytes(MIB, "js->py"), metadata={"name": "js.bin"})
    data, sender, meta = await py.message(30)
    assert data == deterministic_bytes(MIB, "js->py")
    assert result["length"] == MIB
    assert (sender, meta) == (js.self_id, {"name": "js.bin"})
    assert len(py.progress) >= 60
    assert py.progress[-1] == 1.0
    assert py.progress == sorted(py.progress)

    assert 0 < await py.room.ping(js.self_id) < 2000
    assert 0 <= await js.ping(py_id) < 2000


SMALL_ID = "0" * 20  # sorts before any Trystero id: Python makes the offer
LARGE_ID = "z" * 20  # sorts after any Trystero id: Python answers

#: name: (Python joins first, Python's id) — every join order × id order.
SCENARIOS = {
    "py-first-py-offers": (True, SMALL_ID),
    "py-first-py-answers": (True, LARGE_ID),
    "js-first-py-offers": (False, SMALL_ID),
    "js-first-py-answers": (False, LARGE_ID),
}


async def share_a_room(
    scenario: str,
    js: JsPeer,
    py_join: Callable[[str], Awaitable[PyPeer]],
    js_join: Callable[[], Awaitable[object]],
    *,
    join_timeout: float,
    stagger: float = 0.0,
) -> None:
    """Run one of :data:`SCENARIOS`: join in that order (``stagger`` seconds apart), check
    both see each other, :func:`exchange_everything`, then one side leaves (Trystero when
    Python joined first, Python otherwise, so both directions are covered) and the other
    must see it within 2 s. ``py_join(peer_id)`` joins the Python peer."""
    py_first, py_id = SCENARIOS[scenario]
    assert js.self_id != py_id
    if py_first:
        py = await py_join(py_id)
        await asyncio.sleep(stagger)
        await js_join()
    else:
        await js_join()
        await asyncio.sleep(stagger)
        py = await py_join(py_id)
    try:
        await eventually(lambda: py.joined == [js.self_id], join_timeout, "Python to see JS")
        await js.wait_event("peer-join", peerId=py_id, timeout=5)
        await exchange_everything(py, js)
        if py_first:
            started = time.monotonic()
            await js.leave()
            await eventually(lambda: py.left == [js.self_id], 2, "Python to see the leave")
            assert time.monotonic() - started < 2
        else:
            await py.room.leave()
            await js.wait_event("peer-leave", peerId=py_id, timeout=2)
        assert py.errors == []
    finally:
        await py.room.leave()


APP = "peermesh-interop"

_PY_JOIN: dict[str, Callable[..., Awaitable[Room]]] = {
    "torrent": peermesh.torrent.join_room,
    "nostr": peermesh.nostr.join_room,
}


@dataclass(frozen=True)
class Medium:
    """A signalling server for one strategy (a fresh local tracker or Nostr relay).

    ``stagger``: seconds to wait after the first peer joins before the second one does, so
    the incumbent is registered (torrent) or past its first announces (topic strategies).
    """

    strategy: str
    url: str
    stagger: float = 1.0

    async def py_room(
        self, room_id: str, peer_id: str = SMALL_ID, *, app_id: str = APP, **kw: Any
    ) -> Room:
        """``peermesh.<strategy>.join_room`` on this server, on loopback."""
        return await _PY_JOIN[self.strategy](
            room_id, app_id=app_id, relay_urls=[self.url], peer_id=peer_id, **LOOPBACK, **kw
        )

    async def py_join(
        self, room_id: str, peer_id: str = SMALL_ID, *, app_id: str = APP, **kw: Any
    ) -> PyPeer:
        return PyPeer(await self.py_room(room_id, peer_id, app_id=app_id, **kw))

    async def js_join(
        self, js: JsPeer, room_id: str, *, app_id: str = APP, **kw: Any
    ) -> dict[str, Any]:
        """``js.join`` on this server (``kw`` as for :meth:`JsPeer.join`); its result."""
        return await js.join(room_id, self.url, app_id=app_id, strategy=self.strategy, **kw)


async def connect(
    medium: Medium,
    js: JsPeer,
    room_id: str,
    *,
    py_id: str = SMALL_ID,
    js_kw: dict[str, Any] | None = None,
    py_kw: dict[str, Any] | None = None,
    timeout: float = 20.0,
) -> PyPeer:
    """Trystero joins, then (after ``medium.stagger``) Python joins as ``py_id``; return once
    both see each other. The smaller id (``SMALL_ID`` by default: Python) makes the offer,
    which is the fast order on every strategy. The caller leaves the Python room."""
    await medium.js_join(js, room_id, **(js_kw or {}))
    await asyncio.sleep(medium.stagger)
    py = await medium.py_join(room_id, py_id, **(py_kw or {}))
    try:
        await eventually(lambda: js.self_id in py.joined, timeout, "Python to see Trystero")
        room = (js_kw or {}).get("room")
        fields = {"peerId": py_id} if room is None else {"peerId": py_id, "room": room}
        await js.wait_event("peer-join", timeout=5, **fields)
    except BaseException:
        await py.room.leave()
        raise
    return py
