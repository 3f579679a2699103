"""peermesh.media: MediaStream, synthetic sources, file helpers, and renegotiation of real
aiortc connections on loopback driven by peermesh._wire.media (including glare)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import VideoStreamTrack

from peermesh._ice import host_addresses
from peermesh._media import emulate_rollback
from peermesh._wire.media import (
    NegotiationTracker,
    SignalType,
    Step,
    decide,
    encode_signal,
    has_media_codecs,
    media_sections,
    parse_signal,
)
from peermesh.errors import UsageError
from peermesh.media import (
    MediaStream,
    PatternVideoTrack,
    StreamRecorder,
    ToneTrack,
    audio_level,
    matches_pattern,
    open_media,
)
from tests.rooms import eventually

ADDRESSES = ("127.0.0.1",)


def test_media_stream_holds_tracks() -> None:
    tone, video = ToneTrack(), PatternVideoTrack()
    stream = MediaStream([tone, video, tone], id="my-stream")
    assert stream.id == "my-stream"
    assert stream.get_tracks() == [tone, video]
    assert stream.get_audio_tracks() == [tone]
    assert stream.get_video_tracks() == [video]
    assert stream.get_track_by_id(video.id) is video
    stream.remove_track(tone)
    assert stream.get_tracks() == [video]
    assert MediaStream().id != MediaStream().id
    stream.stop()
    assert video.readyState == "ended"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, 5])
def test_media_stream_rejects_bad_ids(bad: Any) -> None:
    with pytest.raises(UsageError):
        MediaStream(id=bad)


def test_media_stream_rejects_non_tracks() -> None:
    with pytest.raises(UsageError):
        MediaStream(["not a track"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [{"frequency": 30000.0}, {"amplitude": 0.0}, {"amplitude": 2.0}, {"sample_rate": 100}],
)
def test_tone_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        ToneTrack(**kwargs)


@pytest.mark.parametrize("size", [(15, 240), (320, 7), (4000, 240)])
def test_pattern_rejects_bad_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(UsageError):
        PatternVideoTrack(*size)


async def test_synthetic_sources_produce_recognisable_frames() -> None:
    tone = ToneTrack(amplitude=0.5)
    frames = [await tone.recv() for _ in range(3)]
    assert [f.samples for f in frames] == [960, 960, 960]
    assert [f.pts for f in frames] == [0, 960, 1920]
    # RMS of a sine is amplitude / sqrt(2)
    assert audio_level(frames[1]) == pytest.approx(0.5 / 2**0.5, rel=0.02)
    video = PatternVideoTrack(64, 48)
    frame = await video.recv()
    assert (frame.width, frame.height) == (64, 48)
    assert matches_pattern(frame)
    assert not matches_pattern(await VideoStreamTrack().recv())  # aiortc's green frames
    tone.stop()
    video.stop()


async def test_record_and_play_back_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "out.mkv")
    source = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    async with StreamRecorder(source, path):
        await asyncio.sleep(1.0)
    source.stop()
    played = open_media(path)
    audio, video = played.get_audio_tracks()[0], played.get_video_tracks()[0]
    frame = await asyncio.wait_for(video.recv(), 10)
    assert (frame.width, frame.height) == (160, 120)
    assert matches_pattern(frame)
    levels = [audio_level(await asyncio.wait_for(audio.recv(), 10)) for _ in range(3)]
    assert max(levels) > 0.05
    played.stop()


def test_file_helpers_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_media(str(tmp_path / "missing.mp4"))
    with pytest.raises(UsageError):
        StreamRecorder(MediaStream(), str(tmp_path / "x.mkv"))


# -- renegotiation over a data channel, as the room's media layer will do it ------------------


class Side:
    """One aiortc connection doing Trystero-style in-band renegotiation with the rules of
    peermesh._wire.media: a lock, NegotiationTracker, decide() and emulate_rollback()."""

    def __init__(self, polite: bool) -> None:
        self.polite = polite
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: RTCDataChannel | None = None
        self.lock = asyncio.Lock()
        self.tracker = NegotiationTracker()
        self.applying: dict[str, str | None] = {}
        self.received: dict[str, dict[str, Any]] = {}  # stream id -> {kind: stats}
        self.steps: list[Step] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def add_stream(self, stream: MediaStream) -> None:
        for track in stream.get_tracks():
            sender = self.pc.addTransceiver(track, "sendrecv").sender
            sender._stream_id = stream.id
        self.tracker.changed()

    async def negotiate(self) -> None:
        async with self.lock:
            if not self.tracker.needs_offer(self.pc.signalingState):
                return
            self.tracker.offer_made()
            with host_addresses(ADDRESSES):
                await self.pc.setLocalDescription(await self.pc.createOffer())
            self._send(SignalType.OFFER)

    def _send(self, kind: SignalType) -> None:
        assert self.channel is not None
        self.channel.send(json.dumps(encode_signal(kind, self.pc.localDescription.sdp)))

    async def on_signal(self, raw: str) -> None:
        signal = parse_signal(json.loads(raw))
        async with self.lock:
            step = decide(
                signal.type,
                polite=self.polite,
                signaling_state=self.pc.signalingState,
                has_media=has_media_codecs(signal.sdp),
            )
            self.steps.append(step)
            if step is Step.ROLLBACK_THEN_APPLY_OFFER:
                assert emulate_rollback(self.pc)
            if step in (Step.APPLY_OFFER, Step.ROLLBACK_THEN_APPLY_OFFER, Step.APPLY_ANSWER):
                self.applying = {s.mid: s.stream_id for s in media_sections(signal.sdp)}
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(signal.sdp, signal.type.value)
                )
            if step is Step.APPLY_ANSWER:
                self.tracker.answer_applied()
            elif step is not Step.IGNORE:
                with host_addresses(ADDRESSES):
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                self._send(SignalType.ANSWER)
        await self.negotiate()

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
        stats: dict[str, Any] = {"frames": 0}
        self.received.setdefault(str(self.applying.get(mid)), {})[track.kind] = stats
        self.tasks.append(asyncio.ensure_future(self._read(track, stats)))

    async def _read(self, track: MediaStreamTrack, stats: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                stats["frames"] += 1
                if track.kind == "video":
                    stats["size"] = (frame.width, frame.height)
                    stats["pattern"] = matches_pattern(frame)
                else:
                    stats["level"] = max(stats.get("level", 0.0), audio_level(frame))

    def decoded(self, stream: MediaStream, size: tuple[int, int]) -> bool:
        got = self.received.get(stream.id, {})
        video, audio = got.get("video", {}), got.get("audio", {})
        return bool(
            video.get("size") == size and video.get("pattern") and audio.get("level", 0) > 0.05
        )


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Side, Side]]:
    """Initiator (impolite) and answerer (polite), data channel open."""
    a, b = Side(polite=False), Side(polite=True)
    opened = asyncio.Event()

    def attach(side: Side, channel: RTCDataChannel) -> None:
        side.channel = channel
        channel.on("message", lambda m: side.tasks.append(asyncio.ensure_future(side.on_signal(m))))

    channel = a.pc.createDataChannel("data")
    channel.on("open", opened.set)
    attach(a, channel)
    b.pc.on("datachannel", lambda ch: attach(b, ch))
    with host_addresses(ADDRESSES):
        await a.pc.setLocalDescription(await a.pc.createOffer())
    await b.pc.setRemoteDescription(a.pc.localDescription)
    with host_addresses(ADDRESSES):
        await b.pc.setLocalDescription(await b.pc.createAnswer())
    await a.pc.setRemoteDescription(b.pc.localDescription)
    await asyncio.wait_for(opened.wait(), 10)
    yield a, b
    for side in (a, b):
        for task in side.tasks:
            task.cancel()
        await side.pc.close()


@pytest.mark.parametrize("sender", [0, 1])
async def test_renegotiated_streams_decode(pair: tuple[Side, Side], sender: int) -> None:
    tx, rx = pair[sender], pair[1 - sender]
    first = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    tx.add_stream(first)
    await tx.negotiate()
    await eventually(lambda: rx.decoded(first, (160, 120)), 10, "first stream")
    second = MediaStream([ToneTrack(), PatternVideoTrack(96, 64)])
    tx.add_stream(second)
    await tx.negotiate()
    await eventually(lambda: rx.decoded(second, (96, 64)), 10, "second stream")
    first.stop()
    second.stop()


async def test_glare_both_sides_end_with_both_streams(pair: tuple[Side, Side]) -> None:
    a, b = pair
    from_a = MediaStream([ToneTrack(), PatternVideoTrack(160, 120)])
    from_b = MediaStream([ToneTrack(), PatternVideoTrack(96, 64)])
    a.add_stream(from_a)
    b.add_stream(from_b)
    await asyncio.gather(a.negotiate(), b.negotiate())  # both offers cross on the wire
    await eventually(
        lambda: b.decoded(from_a, (160, 120)) and a.decoded(from_b, (96, 64)), 10, "both streams"
    )
    # the collision really happened and was resolved by the fixed roles
    assert Step.IGNORE in a.steps
    assert Step.ROLLBACK_THEN_APPLY_OFFER in b.steps
    from_a.stop()
    from_b.stop()
