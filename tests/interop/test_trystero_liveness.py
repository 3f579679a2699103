"""Peers that vanish, give their link up, or keep it busy — with real Trystero 0.25.4 in Node.

- ``test_trystero_gives_up_the_link``: Trystero's data-channel error path (the one a failed
  renegotiation takes too) drops the peer but leaves its RTCPeerConnection open, so the
  link still looks alive to us. The peer must come back on the next announcement — as a
  leave and a join — and messages must flow both ways again. On torrent, with Trystero's
  id the larger (it answers our next offer) and the smaller (it answers none of ours under
  the collision rule; its own offers reach us, and we ping the idle link, which it no
  longer answers); on Nostr, with Python as the leader (Trystero sends a
  counter-announcement) and as the other (Trystero sends an offer).
- ``test_killed_peer_leaves_while_a_flooding_peer_stays``: one Trystero peer floods Python
  with data for 40 s (past the 30 s after which aioice's consent check used to drop a busy
  link) while another is killed with SIGKILL: the killed one is seen leaving
  within 15 s (no packet from it for 10 s, see peermesh._wire.liveness), the busy one is
  never dropped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

import peermesh._signalling.topic as topic_signalling
from tests.interop.conftest import JsPeerFactory, medium_for
from tests.interop.exchange import LARGE_ID, SMALL_ID, Medium, PyPeer, connect
from tests.interop.jspeer import GeneratedBytes, JsPeer, decode_data
from tests.rooms import eventually

pytestmark = pytest.mark.interop

MIB = 1024 * 1024
#: How long the flooding peer keeps Python busy.
FLOOD_SECONDS = 40


@pytest.mark.parametrize(
    ("strategy", "py_id"),
    [("torrent", SMALL_ID), ("torrent", LARGE_ID), ("nostr", SMALL_ID), ("nostr", LARGE_ID)],
    ids=[
        "torrent-trystero-answers",
        "torrent-idle-link-pinged",
        "nostr-python-leads",
        "nostr-trystero-leads",
    ],
)
async def test_trystero_gives_up_the_link(
    js_peer_factory: JsPeerFactory,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    py_id: str,
) -> None:
    # Python's steady announcements (60 s, as Trystero's) are what brings a peer back on
    # topic strategies; the tracker here asks for one every 10 s.
    monkeypatch.setattr(topic_signalling, "ANNOUNCE_INTERVAL", 3.0)
    js = await js_peer_factory()
    room_id = f"giveup-{uuid.uuid4().hex[:10]}"
    async with medium_for(strategy) as medium:
        py = await connect(medium, js, room_id, py_id=py_id, js_kw={"actions": ["chat"]})
        try:
            await comes_back_after_giving_up(py, js)
        finally:
            await py.room.leave()


async def comes_back_after_giving_up(py: PyPeer, js: JsPeer) -> None:
    """Trystero gives the link up; it must join again within 15 s (one leave, then one
    join) and exchange messages both ways on one connection."""
    py_id = py.room.self_id
    state = await js.command({"cmd": "give-up", "peerId": py_id})
    assert state["connectionState"] == "connected"  # Trystero keeps the connection
    await js.wait_event("peer-leave", peerId=py_id, timeout=5)
    given_up = time.monotonic()
    await eventually(lambda: py.joined == [js.self_id] * 2, 20, "Trystero to join again")
    assert py.left == [js.self_id]  # the old link was closed: one leave, then the join
    await js.wait_event("peer-join", peerId=py_id, timeout=10)
    assert time.monotonic() - given_up < 15

    await py.room.make_action("chat").send("after the comeback")
    got = await js.wait_message("chat", peer_id=py_id)
    assert decode_data(got["data"]) == "after the comeback"
    await js.send("chat", "back again", target=py_id)
    assert await py.message() == ("back again", js.self_id, None)
    assert len(await js.connections()) == 1
    assert py.errors == []


@pytest.mark.timeout(150)
async def test_killed_peer_leaves_while_a_flooding_peer_stays(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    flooder = await js_peer_factory(name="flooder")
    victim = await js_peer_factory(name="victim")
    room_id = f"liveness-{uuid.uuid4().hex[:10]}"
    await torrent_medium.js_join(flooder, room_id)
    await torrent_medium.js_join(victim, room_id)
    await asyncio.sleep(torrent_medium.stagger)
    py = await torrent_medium.py_join(room_id)
    received = [0]
    py.room.make_action("flood").on_message(
        lambda data, _peer, _meta: received.__setitem__(0, received[0] + len(data))
    )
    try:
        await eventually(
            lambda: {flooder.self_id, victim.self_id} <= set(py.joined), 20, "both peers"
        )
        await flooder.wait_event("peer-join", peerId=py.room.self_id, timeout=10)
        sent = 0
        started = time.monotonic()

        async def flood() -> None:
            nonlocal sent
            seed = 0
            while time.monotonic() - started < FLOOD_SECONDS:
                seed += 1
                data = GeneratedBytes(16 * MIB, seed)
                await flooder.send("flood", data, target=py.room.self_id, progress=False)
                sent += data.length

        flooding = asyncio.ensure_future(flood())
        await asyncio.sleep(5)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        await eventually(lambda: victim.self_id in py.left, 16, "the killed peer to leave")
        seen_after = time.monotonic() - killed
        assert seen_after <= 15
        await flooding
        await eventually(lambda: received[0] == sent, 10, "the last messages")
        assert py.left == [victim.self_id]  # the busy peer was never dropped
        assert flooder.self_id in py.room.get_peers()
        assert sent >= 5 * MIB * FLOOD_SECONDS  # it really was kept busy: at least 5 MiB/s
        print(f"killed peer seen leaving after {seen_after:.1f} s; {sent / MIB:.0f} MiB flooded")
    finally:
        await py.room.leave()
