"""Media streams between real Trystero 0.25.4 peers (Node, @roamhq/wrtc through
``rtc-polyfill.mjs``) and Python peers, over the embedded torrent tracker.

Trystero's ``addStream`` sends ``@_stream {k, s, m}`` and then adds the tracks, which
renegotiates in-band over the data channel (``@_signal``, wire notes §5.4, §8). The JS peers
send a synthetic stream (a 660 Hz tone and 320×240-ish frames, dark left half, bright right
half) and measure what they receive with wrtc's RTCVideoSink / RTCAudioSink
(``media-status``); the Python side sends ``ToneTrack`` + ``PatternVideoTrack``.

- ``test_js_to_js_streams``: the harness alone (Node ⇄ Node), both directions, then a removal.
- ``test_python_stream_to_js`` / ``test_js_stream_to_python``: each direction with Python.
- ``test_glare_with_trystero``: both add a stream at the same moment, Python impolite
  (initiator) and polite; both end with both streams.
- ``test_a_renegotiation_trystero_cannot_apply`` / ``test_an_unanswered_offer_is_rolled_back_once``:
  Trystero's setRemoteDescription fails on our offer (issue 20): it comes back as a leave
  and a join and the stream flows; without a tracker to come back through, our offer is
  rolled back once, logged at WARNING, not re-sent, and the data channel stays.
- ``test_glare_on_join_with_trystero``: each adds a stream from its peer-join callback, in
  both join orders (issue 20's scenario; Chromium's own test is in test_chromium.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import peermesh._media
from peermesh.media import (
    MediaStream,
    PatternVideoTrack,
    ToneTrack,
    audio_level,
    matches_pattern,
)
from peermesh.servers.tracker import serve_tracker
from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import LARGE_ID, SMALL_ID, Medium, PyPeer, connect
from tests.interop.jspeer import JsPeer
from tests.rooms import eventually

pytestmark = pytest.mark.interop

#: frames / audio chunks a receiver must have decoded before we call the media flowing
ENOUGH = 15
#: RMS of the 0.4-amplitude tone is ~0.28; an Opus round trip keeps it well above this
NOT_SILENT = 0.05


def room_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def until(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll the async ``check`` until it returns something truthy (returned); fail after
    ``timeout`` s, quoting the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last}")
        await asyncio.sleep(interval)


def kinds(tracks: list[dict[str, Any]]) -> list[str]:
    return sorted(t["kind"] for t in tracks)


async def js_receives(
    js: JsPeer, peer_id: str, stream_id: str, width: int, height: int, timeout: float = 20
) -> dict[str, dict[str, Any]]:
    """Wait until ``js`` decodes ENOUGH video frames of ``width``×``height`` and ENOUGH
    non-silent audio chunks of stream ``stream_id`` from ``peer_id``; return them by kind."""

    async def check() -> dict[str, dict[str, Any]] | None:
        tracks = await js.remote_tracks(peer_id=peer_id, stream_id=stream_id)
        by_kind = {t["kind"]: t for t in tracks}
        video, audio = by_kind.get("video"), by_kind.get("audio")
        if (
            video
            and audio
            and video["frames"] >= ENOUGH
            and (video["width"], video["height"]) == (width, height)
            and audio["frames"] >= ENOUGH
            and audio["maxLevel"] > NOT_SILENT
        ):
            return by_kind
        return None

    result: dict[str, dict[str, Any]] = await until(
        check, timeout, f"{js.name} to decode {width}x{height} video and a tone from {peer_id}"
    )
    return result


async def join_js_pair(medium: Medium, a: JsPeer, b: JsPeer, room: str) -> None:
    # the larger id joins first, so the smaller one finds it and makes the offer at once
    first, second = sorted((a, b), key=lambda p: p.self_id, reverse=True)
    await medium.js_join(first, room)
    await asyncio.sleep(medium.stagger)
    await medium.js_join(second, room)
    await first.wait_event("peer-join", peerId=second.self_id, timeout=20)
    await second.wait_event("peer-join", peerId=first.self_id, timeout=5)


async def test_js_to_js_streams(torrent_medium: Medium, js_peer_factory: JsPeerFactory) -> None:
    """Node ⇄ Node: Trystero's in-band renegotiation works through rtc-polyfill.mjs in both
    directions (each side offers once), metadata arrives with ``onPeerStream``, frames of
    the right size and a non-silent tone are decoded, and a removed stream stops."""
    a = await js_peer_factory(name="a")
    b = await js_peer_factory(name="b")
    await join_js_pair(torrent_medium, a, b, room_name("media-js"))

    sent = await a.media_add(
        "cam-a", video={"width": 320, "height": 240}, metadata={"from": "a", "n": 1}
    )
    ev = await b.wait_event("peer-stream", peerId=a.self_id, timeout=15)
    assert ev["metadata"] == {"from": "a", "n": 1}
    assert ev["streamId"] == sent["streamId"]
    got = await js_receives(b, a.self_id, sent["streamId"], 320, 240)
    left, right = got["video"]["luma"]
    assert left < 70 < 180 < right  # JS's pattern: dark left, bright right

    # the other direction renegotiates the same connection, offered by the other side
    sent_b = await b.media_add(
        "cam-b", video={"width": 160, "height": 120}, audio={"frequency": 440}, metadata="b!"
    )
    ev = await a.wait_event("peer-stream", peerId=b.self_id, timeout=15)
    assert (ev["metadata"], ev["streamId"]) == ("b!", sent_b["streamId"])
    await js_receives(a, b.self_id, sent_b["streamId"], 160, 120)
    assert list(await a.connections()) == [b.self_id]  # still the same, live connection
    assert list(await b.connections()) == [a.self_id]

    # removing a's stream renegotiates again; b stops receiving it (b's own stream goes on)
    await a.media_remove("cam-a")

    async def stopped() -> int | None:
        tracks = await b.remote_tracks(peer_id=a.self_id, stream_id=sent["streamId"])
        frames = sum(t["frames"] for t in tracks)
        await asyncio.sleep(0.5)
        tracks = await b.remote_tracks(peer_id=a.self_id, stream_id=sent["streamId"])
        return frames if sum(t["frames"] for t in tracks) == frames else None

    await until(stopped, 10, "b to stop receiving a's removed stream")
    still = await js_receives(a, b.self_id, sent_b["streamId"], 160, 120)
    before = still["video"]["frames"]
    await asyncio.sleep(0.5)
    after = await a.remote_tracks(peer_id=b.self_id, stream_id=sent_b["streamId"])
    assert next(t["frames"] for t in after if t["kind"] == "video") > before
    assert [e for e in a.history if e["event"] == "join-error"] == []
    assert [e for e in b.history if e["event"] == "join-error"] == []


# -- Python ⇄ Trystero -----------------------------------------------------------------------


async def test_python_stream_to_js(torrent_medium: Medium, js_peer_factory: JsPeerFactory) -> None:
    """Python ``add_stream`` (tone + pattern, with metadata) → Trystero's ``onPeerStream``
    with that metadata and stream id, then decoded frames of the right size showing
    peermesh's pattern and a non-silent tone; ``remove_stream`` stops them."""
    js = await js_peer_factory()
    py = await connect(torrent_medium, js, room_name("media-py2js"))
    stream = MediaStream([ToneTrack(), PatternVideoTrack(320, 240)])
    try:
        await py.room.add_stream(stream, metadata={"from": "python", "n": [1, 2]})
        ev = await js.wait_event("peer-stream", peerId=SMALL_ID, timeout=15)
        assert ev["metadata"] == {"from": "python", "n": [1, 2]}
        assert ev["streamId"] == stream.id
        got = await js_receives(js, SMALL_ID, stream.id, 320, 240)
        left, right = got["video"]["luma"]
        assert left > 180 > 70 > right  # PatternVideoTrack: bright left, dark right
        assert got["audio"]["sampleRate"] == 48000

        await maybe_await(py.room.remove_stream(stream))

        async def stopped() -> bool:
            before = await js.remote_tracks(peer_id=SMALL_ID, stream_id=stream.id)
            await asyncio.sleep(0.5)
            after = await js.remote_tracks(peer_id=SMALL_ID, stream_id=stream.id)
            return [t["frames"] for t in before] == [t["frames"] for t in after]

        await until(stopped, 10, "Trystero to stop receiving the removed stream")
        assert py.errors == []
        assert [e for e in js.history if e["event"] == "join-error"] == []
    finally:
        stream.stop()
        await py.room.leave()


async def test_js_stream_to_python(torrent_medium: Medium, js_peer_factory: JsPeerFactory) -> None:
    """Trystero ``addStream`` (targeted, with metadata) → Python's ``on_peer_stream`` with the
    metadata and stream id; the tracks decode to frames of the sent size (dark left, bright
    right) and a non-silent tone."""
    js = await js_peer_factory()
    py = await connect(torrent_medium, js, room_name("media-js2py"))
    streams: asyncio.Queue[tuple[MediaStream, str, Any]] = asyncio.Queue()
    py.room.on_peer_stream(lambda s, p, m: streams.put_nowait((s, p, m)))
    try:
        sent = await js.media_add(
            "cam",
            video={"width": 240, "height": 180},
            metadata={"from": "trystero", "ok": True},
            target=SMALL_ID,
        )
        stream, peer_id, metadata = await asyncio.wait_for(streams.get(), 15)
        assert (peer_id, metadata) == (js.self_id, {"from": "trystero", "ok": True})
        assert stream.id == sent["streamId"]
        await eventually(
            lambda: len(stream.get_audio_tracks()) == len(stream.get_video_tracks()) == 1,
            10,
            "the stream to hold one audio and one video track",
        )
        video = await decode_video(stream.get_video_tracks()[0], ENOUGH)
        assert {(f.width, f.height) for f in video} == {(240, 180)}
        left, right = luma_left_right(video[-1])
        assert left < 70 < 180 < right  # jspeer's pattern: dark left, bright right
        assert not matches_pattern(video[-1])
        levels = await decode_audio_levels(stream.get_audio_tracks()[0], 50)
        assert max(levels) > NOT_SILENT
        assert streams.empty()  # one addStream of audio + video: one on_peer_stream
        assert py.errors == []
    finally:
        await py.room.leave()


@pytest.mark.parametrize("py_id", [SMALL_ID, LARGE_ID], ids=["py-impolite", "py-polite"])
async def test_glare_with_trystero(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory, py_id: str
) -> None:
    """Python and Trystero add a stream at the same moment, so both offers cross on the
    data channel. With Python as the initiator it ignores Trystero's offer and Trystero
    rolls back; as the answerer Python emulates the rollback. Either way both decode both."""
    js = await js_peer_factory()
    py = await connect(torrent_medium, js, room_name("media-glare"), py_id=py_id)
    streams: asyncio.Queue[tuple[MediaStream, str, Any]] = asyncio.Queue()
    py.room.on_peer_stream(lambda s, p, m: streams.put_nowait((s, p, m)))
    mine = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    try:
        sent, _ = await asyncio.gather(
            js.media_add("cam", video={"width": 240, "height": 180}, metadata="js"),
            py.room.add_stream(mine, metadata="py"),
        )
        stream, peer_id, metadata = await asyncio.wait_for(streams.get(), 20)
        assert (stream.id, peer_id, metadata) == (sent["streamId"], js.self_id, "js")
        ev = await js.wait_event("peer-stream", peerId=py_id, timeout=20)
        assert (ev["streamId"], ev["metadata"]) == (mine.id, "py")
        await js_receives(js, py_id, mine.id, 160, 120)
        await eventually(lambda: len(stream.get_video_tracks()) == 1, 10, "Trystero's video")
        video = await decode_video(stream.get_video_tracks()[0], ENOUGH)
        assert (video[-1].width, video[-1].height) == (240, 180)
        assert py.errors == []
        assert [e for e in js.history if e["event"] == "join-error"] == []
    finally:
        mine.stop()
        await py.room.leave()


@pytest.mark.parametrize("py_first", [True, False], ids=["python-first", "trystero-first"])
async def test_glare_on_join_with_trystero(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory, py_first: bool
) -> None:
    """Issue 20's scenario in Node: each side adds a stream the moment it sees the other
    (from its peer-join callback), in both join orders; both decode both."""
    js = await js_peer_factory()
    room_id = room_name("media-glare-join")
    mine = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    streams: asyncio.Queue[MediaStream] = asyncio.Queue()
    adding: set[asyncio.Task[None]] = set()

    async def py_join() -> PyPeer:
        py = await torrent_medium.py_join(room_id, uuid.uuid4().hex[:20])
        py.room.on_peer_stream(lambda stream, _peer, _meta: streams.put_nowait(stream))
        py.room.on_peer_join(
            lambda peer_id: adding.add(
                asyncio.ensure_future(py.room.add_stream(mine, target=peer_id))
            )
        )
        return py

    async def js_join() -> dict[str, Any]:
        await torrent_medium.js_join(js, room_id)
        sent: dict[str, Any] = await js.media_add(
            "cam", video={"width": 240, "height": 180}, on_peer_join=True
        )
        return sent

    if py_first:
        py = await py_join()
        await asyncio.sleep(torrent_medium.stagger)
        sent = await js_join()
    else:
        sent = await js_join()
        await asyncio.sleep(torrent_medium.stagger)
        py = await py_join()
    try:
        stream = await asyncio.wait_for(streams.get(), 20)
        assert stream.id == sent["streamId"]
        await js_receives(js, py.room.self_id, mine.id, 160, 120)
        await eventually(lambda: len(stream.get_video_tracks()) == 1, 10, "Trystero's video")
        video = await decode_video(stream.get_video_tracks()[0], ENOUGH)
        assert (video[-1].width, video[-1].height) == (240, 180)
        await asyncio.gather(*adding)
        assert py.errors == []
        assert py.left == []
        assert [e for e in js.history if e["event"] in ("join-error", "peer-leave")] == []
    finally:
        mine.stop()
        await py.room.leave()


async def test_a_renegotiation_trystero_cannot_apply(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Trystero fails to apply our media offer (its setRemoteDescription is made to fail):
    it drops us and keeps the connection open, so the offer is never answered. The peer
    must come back on the next announce (one leave, one join), the app's stream — added
    again from ``on_peer_join``, as Trystero apps do — must then flow, and the unanswered
    offer must not be sent again on the old connection."""
    js = await js_peer_factory()
    py = await connect(torrent_medium, js, room_name("media-fail"))
    mine = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    adding: set[asyncio.Task[None]] = set()
    try:
        await js.command({"cmd": "fail-remote-description", "peerId": SMALL_ID})
        await py.room.add_stream(mine)
        await js.wait_event("peer-leave", peerId=SMALL_ID, timeout=10)
        py.room.on_peer_join(
            lambda peer_id: adding.add(
                asyncio.ensure_future(py.room.add_stream(mine, target=peer_id))
            )
        )
        await eventually(lambda: py.joined == [js.self_id] * 2, 20, "Trystero back")
        assert py.left == [js.self_id]
        await js_receives(js, SMALL_ID, mine.id, 160, 120)
        await asyncio.gather(*adding)
        warnings = [r for r in caplog.records if "renegotiation failed" in r.getMessage()]
        assert len(warnings) <= 1  # the old connection is closed first, or rolled back once
        assert [e for e in js.history if e["event"] == "peer-stream"]
    finally:
        mine.stop()
        await py.room.leave()


async def test_an_unanswered_offer_is_rolled_back_once(
    js_peer_factory: JsPeerFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trystero fails to apply our media offer and, its tracker gone, cannot come back:
    the offer is rolled back after the renegotiation timeout, logged once at WARNING, not
    sent again as it was, and the connection stays open."""
    monkeypatch.setattr(peermesh._media, "RENEGOTIATION_TIMEOUT", 1.0)
    caplog.set_level(logging.DEBUG, logger="peermesh._media")
    js = await js_peer_factory()
    server = await serve_tracker("127.0.0.1", 0, interval=10)
    try:
        py = await connect(Medium("torrent", server.url), js, room_name("media-rollback"))
    finally:
        await server.close()
    mine = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])

    def records(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    try:
        await js.command({"cmd": "fail-remote-description", "peerId": SMALL_ID})
        await py.room.add_stream(mine)
        await eventually(lambda: records("renegotiation failed"), 10, "the rollback")
        await asyncio.sleep(3 * 1.0)  # three more timeouts' worth: nothing is re-sent
        warnings = records("renegotiation failed")
        assert [r.levelname for r in warnings] == ["WARNING"]
        assert "no answer to our media offer" in warnings[0].getMessage()
        assert len(records("sent a media offer")) == 1
        pc = py.room.get_peers()[js.self_id]
        assert pc.signalingState == "stable"
        assert pc.sctp.state == "connected"  # the data channel is kept
    finally:
        mine.stop()
        await py.room.leave()
        await js.close()


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def decode_video(track: Any, count: int, timeout: float = 15) -> list[Any]:
    """``count`` decoded frames from an aiortc video track."""

    async def read() -> list[Any]:
        return [await track.recv() for _ in range(count)]

    return await asyncio.wait_for(read(), timeout)


async def decode_audio_levels(track: Any, count: int, timeout: float = 15) -> list[float]:
    """:func:`audio_level` of ``count`` decoded frames from an aiortc audio track."""

    async def read() -> list[float]:
        return [audio_level(await track.recv()) for _ in range(count)]

    return await asyncio.wait_for(read(), timeout)


def luma_left_right(frame: Any) -> tuple[int, int]:
    """Luma of the middle row at 1/4 and 3/4 of the width (as jspeer.mjs reports it)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    row = bytes(plane)[frame.height // 2 * plane.line_size :]
    return row[frame.width // 4], row[3 * frame.width // 4]
