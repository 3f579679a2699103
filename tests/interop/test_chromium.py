"""Python peers with real Trystero 0.25.4 in headless Chromium (browserpeer.mjs: Debian's
Chromium through playwright-core, fake camera and microphone), torrent on our tracker.

- ``test_glare_in_chromium``: issue 20. Both peers add a camera stream the moment they meet,
  so both media offers cross. Chromium 143+ refuses an offer that rebinds an RTP
  header-extension id it used, even in its own rolled-back offer; peermesh's offers used
  aiortc's numbering and Chromium dropped the peer. Five fresh rooms per join order, each
  must end with both streams flowing both ways.
  Python then leaves, and Chromium must report no peer error (it did: aiortc closed the
  connection with an SCTP ABORT on the open channel).
- ``test_chromium_gives_up_the_link``: Chromium's data channel fails (its ``error`` event,
  the path Trystero takes for a failed renegotiation too): Trystero drops the peer but keeps
  the RTCPeerConnection open. The two must meet again on the next announce, as a leave then
  a join, and exchange messages both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import pytest

from peermesh import JoinErrorEvent
from peermesh.media import MediaStream, PatternVideoTrack, ToneTrack
from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import Medium, PyPeer
from tests.interop.jspeer import JsPeer, JsPeerCommandError, decode_data
from tests.interop.test_trystero_media import decode_video, until
from tests.rooms import eventually

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.interop

#: Decoded frames (video) or received packets (audio) that count as "flowing".
ENOUGH = 15
ROOMS_PER_ORDER = 5


async def start_chromium(factory: JsPeerFactory) -> JsPeer:
    return await factory(script="browserpeer.mjs", name="chromium", ready_timeout=40)


def fresh_id() -> str:
    return uuid.uuid4().hex[:20]


async def chromium_receives(js: JsPeer, peer_id: str, width: int, height: int) -> None:
    """Wait until Chromium decodes ENOUGH frames of ``width``×``height`` video and receives
    ENOUGH audio packets from ``peer_id``."""

    async def check() -> Any:
        tracks = (await js.command({"cmd": "media-status"})).get(peer_id, [])
        video = [t for t in tracks if t["kind"] == "video" and t["frames"] >= ENOUGH]
        audio = [t for t in tracks if t["kind"] == "audio" and t["frames"] >= ENOUGH]
        sized = [t for t in video if (t["width"], t["height"]) == (width, height)]
        return (sized and audio) or None

    await until(check, 20, f"Chromium to receive {width}x{height} video and audio")


def handshakes_lost(py: PyPeer) -> list[JoinErrorEvent]:
    """The handshake timeouts among ``py``'s join errors; fails on any other error.

    Now and then (3 of 17 glare runs, 1 of ~10 give-up runs seen) Python loses its first
    handshake with Chromium: Chromium counts us as joined but never sends @_hsready on the
    connection (instrumented: its first frame there was a room frame with no presence
    frame before it, dropped by us as sent before admission), so we time out after 10 s
    and close; Chromium sees us leave, and the next connection meets. Not yet explained:
    logged, not failed, and only that much is allowed."""
    lost = [e for e in py.errors if e.error.startswith("handshake timed out")]
    if lost:
        logger.warning("first handshake with Chromium lost: %s", lost)
    assert [e for e in py.errors if e not in lost] == []
    return lost


async def one_glare(medium: Medium, js: JsPeer, *, py_first: bool, stagger: float = 2.0) -> None:
    room_id = f"glare-{uuid.uuid4().hex[:10]}"
    mine = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    streams: asyncio.Queue[MediaStream] = asyncio.Queue()
    adding: set[asyncio.Task[None]] = set()
    py: PyPeer | None = None

    async def py_join() -> PyPeer:
        joined = await medium.py_join(room_id, fresh_id())
        joined.room.on_peer_stream(lambda stream, _peer, _meta: streams.put_nowait(stream))

        def add_stream(peer_id: str) -> None:  # as an app starting a call does
            adding.add(asyncio.ensure_future(joined.room.add_stream(mine, target=peer_id)))

        joined.room.on_peer_join(add_stream)
        return joined

    async def js_join() -> None:
        await medium.js_join(js, room_id)
        await js.command(
            {
                "cmd": "media-add",
                "name": "cam",
                "video": {"width": 320, "height": 240},
                "metadata": "chromium",
                "onPeerJoin": True,
            }
        )

    try:
        if py_first:
            py = await py_join()
            await asyncio.sleep(stagger)
            await js_join()
        else:
            await js_join()
            await asyncio.sleep(stagger)
            py = await py_join()
        py_id = py.room.self_id
        await eventually(lambda: js.self_id in py.joined, 20, "Python to see Chromium")
        stream = await asyncio.wait_for(streams.get(), 20)
        await eventually(lambda: len(stream.get_tracks()) == 2, 10, "Chromium's two tracks")
        frames = await decode_video(stream.get_video_tracks()[0], ENOUGH)
        assert {(f.width, f.height) for f in frames[-3:]} == {(320, 240)}
        await chromium_receives(js, py_id, 160, 120)
        assert py.left == []
        lost = handshakes_lost(py)
        await asyncio.gather(*adding)
        leaves = [e for e in js.history if e["event"] == "peer-leave"]
        assert len(leaves) <= len(lost), leaves
        assert not [e for e in js.history if e["event"] == "join-error"]
        assert not [e for e in js.history if "peer error" in e.get("text", "")]

        # Leaving after a good session is a clean close for Chromium: our data channel is
        # reset before the connection goes (an SCTP ABORT on an open channel was reported
        # as "Trystero peer error: OperationError").
        await py.room.leave()
        await js.wait_event("peer-leave", peerId=py_id, timeout=5)
        await js.command({"cmd": "peers"})  # a round trip through the page after it
        await asyncio.sleep(0.3)  # the channel's close or error follows the leave frame
        assert not [e for e in js.history if "peer error" in e.get("text", "")]
    finally:
        mine.stop()
        if py is not None:
            await py.room.leave()
        with contextlib.suppress(JsPeerCommandError):
            await js.command({"cmd": "leave"})
        js.history.clear()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("py_first", [True, False], ids=["python-first", "chromium-first"])
async def test_glare_in_chromium(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory, py_first: bool
) -> None:
    js = await start_chromium(js_peer_factory)
    for _ in range(ROOMS_PER_ORDER):
        await one_glare(torrent_medium, js, py_first=py_first)


@pytest.mark.timeout(120)
async def test_chromium_gives_up_the_link(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await start_chromium(js_peer_factory)
    room_id = f"giveup-{uuid.uuid4().hex[:10]}"
    await torrent_medium.js_join(js, room_id, actions=["chat"])
    await asyncio.sleep(torrent_medium.stagger)
    py = await torrent_medium.py_join(room_id, fresh_id())
    try:
        py_id = py.room.self_id
        await eventually(lambda: js.self_id in py.joined, 20, "Python to see Chromium")
        await js.wait_event("peer-join", peerId=py_id, timeout=10)
        state = await js.command({"cmd": "give-up", "peerId": py_id})
        assert state["connectionState"] == "connected"  # Trystero keeps the connection
        await js.wait_event("peer-leave", peerId=py_id, timeout=5)
        given_up = time.monotonic()

        await eventually(lambda: py.left == [js.self_id], 30, "Python to see Chromium leave")
        await eventually(lambda: py.joined == [js.self_id] * 2, 30, "Chromium to join again")
        await js.wait_event("peer-join", peerId=py_id, timeout=10)
        back_after = time.monotonic() - given_up
        # The next announce brings them together: ours, which Chromium answers, or, when
        # Chromium has the smaller id and answers none of ours, its own every 10 s (our
        # tracker's interval), whose offer makes us ping the idle link (3 s at most).
        assert back_after < 15

        await py.room.make_action("chat").send("after the comeback")
        got = await js.wait_event("message", action="chat", peerId=py_id, timeout=10)
        assert decode_data(got["data"]) == "after the comeback"
        await js.send("chat", "back again", target=py_id)
        assert await py.message() == ("back again", js.self_id, None)
        handshakes_lost(py)
    finally:
        await py.room.leave()
