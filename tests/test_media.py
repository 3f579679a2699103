"""Media between Python rooms on loopback: streams and tracks with metadata, renegotiation
over the data channel (including glare), replace/remove, fan-out, shared connections, and
what a misbehaving peer cannot do. Receivers decode real frames (VP8 and Opus round trips).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from peermesh import PeerStream, PeerUnavailableError, Room, RoomClosedError, UsageError
from peermesh._media import TrackFanout
from peermesh._wire import actions as wire
from peermesh._wire.frames import encode_room_frame
from peermesh.media import MediaStream, PatternVideoTrack, ToneTrack, audio_level, matches_pattern
from tests._wire.test_media import transplant
from tests.rooms import JoinFactory, connected_pair, eventually, peer_ids

pytestmark = pytest.mark.slow

#: decoded frames that count as "the media flows"
FRAMES = 10
NOT_SILENT = 0.05


class Inbox:
    """Collects ``on_peer_stream`` / ``on_peer_track`` calls of one room."""

    def __init__(self, room: Room) -> None:
        self.streams: asyncio.Queue[tuple[MediaStream, str, Any]] = asyncio.Queue()
        self.tracks: asyncio.Queue[tuple[MediaStreamTrack, MediaStream, str, Any]] = asyncio.Queue()
        room.on_peer_stream(lambda s, p, m: self.streams.put_nowait((s, p, m)))
        room.on_peer_track(lambda t, s, p, m: self.tracks.put_nowait((t, s, p, m)))

    async def stream(self, timeout: float = 15) -> tuple[MediaStream, str, Any]:
        return await asyncio.wait_for(self.streams.get(), timeout)

    async def track(self, timeout: float = 15) -> tuple[MediaStreamTrack, MediaStream, str, Any]:
        return await asyncio.wait_for(self.tracks.get(), timeout)


async def frames(track: MediaStreamTrack, count: int = FRAMES, timeout: float = 15) -> list[Any]:
    async def read() -> list[Any]:
        return [await track.recv() for _ in range(count)]

    return await asyncio.wait_for(read(), timeout)


async def check_av(stream: MediaStream, size: tuple[int, int]) -> None:
    """``stream`` holds one audio and one video track; the video decodes to frames of
    ``size`` showing PatternVideoTrack's pattern, the audio to a tone (not silence)."""
    await eventually(
        lambda: len(stream.get_audio_tracks()) == len(stream.get_video_tracks()) == 1,
        10,
        "one audio and one video track",
    )
    video = await frames(stream.get_video_tracks()[0])
    assert {(f.width, f.height) for f in video[-3:]} == {size}
    assert matches_pattern(video[-1])
    levels = [audio_level(f) for f in await frames(stream.get_audio_tracks()[0], 25)]
    assert max(levels) > NOT_SILENT


async def ended(track: MediaStreamTrack, timeout: float = 15) -> None:
    """Wait until ``track.recv()`` raises MediaStreamError (the sender removed it)."""

    async def drain() -> None:
        while True:
            await track.recv()

    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(drain(), timeout)


@pytest.fixture
async def streams() -> AsyncIterator[list[MediaStream]]:
    """Streams a test makes; all their tracks are stopped at teardown."""
    made: list[MediaStream] = []
    yield made
    for stream in made:
        stream.stop()


def av(made: list[MediaStream], width: int = 160, height: int = 120) -> MediaStream:
    stream = MediaStream([ToneTrack(), PatternVideoTrack(width, height)])
    made.append(stream)
    return stream


async def test_stream_then_second_stream_replace_and_remove(
    join: JoinFactory, streams: list[MediaStream]
) -> None:
    a, b = await connected_pair(join)
    inbox = Inbox(b)
    first = av(streams)
    await a.add_stream(first, metadata={"name": "camera", "n": [1, 2]})
    stream, peer_id, metadata = await inbox.stream()
    assert (stream.id, peer_id, metadata) == (first.id, a.self_id, {"name": "camera", "n": [1, 2]})
    await check_av(stream, (160, 120))

    second = av(streams, 96, 64)
    await a.add_stream(second, target=b.self_id)  # no metadata: None
    got_second, _, metadata = await inbox.stream()
    assert (got_second.id, metadata) == (second.id, None)
    await check_av(got_second, (96, 64))
    assert await check_still_flowing(stream.get_video_tracks()[0])

    # replace the first stream's video: same receiving track, new frame size, no new stream
    bigger = PatternVideoTrack(224, 160)
    await a.replace_track(first.get_video_tracks()[0], bigger, first)
    assert bigger in first.get_tracks()
    video = stream.get_video_tracks()[0]

    async def resized() -> None:
        while (frame := await video.recv()).width != 224:
            pass
        assert (frame.width, frame.height) == (224, 160)

    await asyncio.wait_for(resized(), 15)
    assert inbox.streams.empty()

    # removing the first stream ends its tracks on the receiver; the second keeps flowing
    await a.remove_stream(first)
    for track in stream.get_tracks() or []:
        await ended(track)
    await eventually(lambda: not stream.get_tracks(), 10, "the removed stream to empty")
    assert await check_still_flowing(got_second.get_video_tracks()[0])
    assert a.counters.malformed_media == b.counters.malformed_media == 0
    assert list(a.get_peers()) == [b.self_id]  # one connection, renegotiated throughout


async def check_still_flowing(track: MediaStreamTrack) -> bool:
    return len(await frames(track, 5)) == 5


async def test_both_sides_add_a_stream_at_the_same_moment(
    join: JoinFactory, streams: list[MediaStream]
) -> None:
    """Glare: both offers cross; the fixed roles resolve it and both get both streams."""
    a, b = await connected_pair(join)
    inbox_a, inbox_b = Inbox(a), Inbox(b)
    from_a, from_b = av(streams, 160, 120), av(streams, 96, 64)
    await asyncio.gather(a.add_stream(from_a, metadata="a"), b.add_stream(from_b, metadata="b"))
    (at_b, _, meta_b), (at_a, _, meta_a) = await asyncio.gather(inbox_b.stream(), inbox_a.stream())
    assert (at_b.id, meta_b, at_a.id, meta_a) == (from_a.id, "a", from_b.id, "b")
    await asyncio.gather(check_av(at_b, (160, 120)), check_av(at_a, (96, 64)))


async def test_add_track_and_its_metadata(join: JoinFactory, streams: list[MediaStream]) -> None:
    a, b = await connected_pair(join)
    inbox = Inbox(b)
    stream = MediaStream(id="mic-and-more")
    streams.append(stream)
    tone = ToneTrack(880)
    stream.add_track(tone)
    await a.add_track(tone, stream, metadata={"label": "mic"})
    track, got_stream, peer_id, metadata = await inbox.track()
    assert (got_stream.id, peer_id, metadata) == ("mic-and-more", a.self_id, {"label": "mic"})
    assert track.kind == "audio"
    assert max(audio_level(f) for f in await frames(track, 25)) > NOT_SILENT
    assert inbox.streams.empty()  # add_track announces a track, not a stream
    await a.remove_track(tone)
    await ended(track)


async def test_one_track_to_two_peers_is_read_once(
    join: JoinFactory, streams: list[MediaStream]
) -> None:
    ids = peer_ids(3)
    a = await join(ids[0])
    b = await join(ids[1])
    c = await join(ids[2])
    await eventually(lambda: set(a.get_peers()) == {ids[1], ids[2]}, 20, "a sees b and c")
    inboxes = [Inbox(b), Inbox(c)]
    stream = av(streams)
    await a.add_stream(stream, metadata="to all")
    received = await asyncio.gather(*(inbox.stream() for inbox in inboxes))
    assert [(s.id, p, m) for s, p, m in received] == [(stream.id, ids[0], "to all")] * 2
    await asyncio.gather(*(check_av(s, (160, 120)) for s, _, _ in received))
    # one reader of each source track, feeding both connections
    assert len(TrackFanout.of(stream.get_video_tracks()[0])._subscribers) == 2

    # removing for one target stops only that peer's copy
    await a.remove_stream(stream, target=ids[1])
    await ended(received[0][0].get_video_tracks()[0])
    assert await check_still_flowing(received[1][0].get_video_tracks()[0])


async def test_events_late_listener_and_leave(
    join: JoinFactory, streams: list[MediaStream]
) -> None:
    a, b = await connected_pair(join)
    events = b.events()
    assert (await anext(events)).peer_id == a.self_id  # PeerJoined replay
    stream = av(streams)
    await a.add_stream(stream, metadata=7)
    event = await asyncio.wait_for(anext(events), 15)
    assert isinstance(event, PeerStream)
    assert (event.stream.id, event.peer_id, event.metadata) == (stream.id, a.self_id, 7)
    late: list[tuple[str, str, Any]] = []
    b.on_peer_stream(lambda s, p, m: late.append((s.id, p, m)))
    assert late == [(stream.id, a.self_id, 7)]  # replayed: the stream is live
    video = event.stream.get_video_tracks()[0]
    await frames(video, 3)
    await a.leave()
    await ended(video)  # the connection closed: received tracks end


async def test_stream_is_announced_only_in_its_room(
    join: JoinFactory, streams: list[MediaStream]
) -> None:
    """Two rooms on one shared connection: the tracks arrive on the connection, but only the
    room the stream was added in reports it."""
    a_id, b_id = peer_ids(2)
    a1 = await join(a_id, room_id="one")
    b1 = await join(b_id, room_id="one")
    await eventually(lambda: b_id in a1.get_peers() and a_id in b1.get_peers(), 20, "room one")
    a2 = await join(a_id, room_id="two")
    b2 = await join(b_id, room_id="two")
    await eventually(lambda: b_id in a2.get_peers() and a_id in b2.get_peers(), 20, "room two")
    assert a1.get_peers()[b_id] is a2.get_peers()[b_id]
    in_one, in_two = Inbox(b1), Inbox(b2)
    stream = av(streams)
    await a2.add_stream(stream, metadata="two")
    got, _, metadata = await in_two.stream()
    assert (got.id, metadata) == (stream.id, "two")
    await check_av(got, (160, 120))
    assert in_one.streams.empty()

    # leaving room two takes the stream off the connection, which room one keeps using
    await a2.leave()
    await ended(got.get_video_tracks()[0])
    assert b_id in a1.get_peers()


async def test_bad_media_input(join: JoinFactory, streams: list[MediaStream]) -> None:
    a, b = await connected_pair(join)
    with pytest.raises(UsageError):
        await a.add_stream("not a stream")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await a.add_stream(av(streams), metadata={1, 2})
    with pytest.raises(PeerUnavailableError):
        await a.add_stream(av(streams), target="X" * 20)
    with pytest.raises(UsageError):
        await a.replace_track(ToneTrack(), PatternVideoTrack())
    with pytest.raises(UsageError):
        MediaStream(id="has space")

    # a peer sending malformed media signalling: dropped and counted, the room goes on
    for name, value in [
        (wire.SIGNAL, {"type": "offer", "sdp": "not sdp"}),
        (wire.SIGNAL, {"type": "bogus", "sdp": ""}),
        (wire.SIGNAL, ["not", "an", "object"]),
        (wire.STREAM, {"no": "key"}),
        (wire.TRACK, "x"),
    ]:
        send_raw(b, a, name, value)
    # a well-formed but unapplicable offer (a data section only after the channel opened:
    # Trystero ignores offers without a=rtpmap) changes nothing either
    send_raw(
        b,
        a,
        wire.SIGNAL,
        {"type": "offer", "sdp": "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"},
        message_id=1,
    )
    await eventually(lambda: a.counters.malformed_media == 5, 10, "five malformed messages")
    assert a.get_peers()[b.self_id].signalingState == "stable"
    inbox = Inbox(b)
    stream = av(streams)
    await a.add_stream(stream)
    got, _, _ = await inbox.stream()
    await check_av(got, (160, 120))

    await a.leave()
    with pytest.raises(RoomClosedError):
        await a.add_stream(stream)


def send_raw(
    sender: Room, receiver: Room, name: str, value: object, *, message_id: int = 0
) -> None:
    """Put an action straight onto ``sender``'s live channel to ``receiver``, past every
    check of the sending side: what a misbehaving peer can do."""
    member = sender._members[receiver.self_id]
    kind, payload = wire.encode_payload(value)
    for chunk in wire.iter_chunks(wire.encode_action_type(name), message_id, kind, payload):
        member.link.send_nowait(encode_room_frame(receiver.token, chunk))


def offer_adding_video(remote_sdp: str, codec: str) -> str:
    """The peer's own SDP (its ICE and DTLS credentials) as an offer that adds a video
    section whose only codec is ``codec`` (e.g. ``"VP8/90000"``). With ``"AV1/90000"``,
    which aiortc lacks, aiortc's setRemoteDescription fails half-way, after it made a
    transceiver for the section and gave it the mid."""
    head, data = remote_sdp.split("\r\nm=", 1)
    transport = [
        line
        for line in data.split("\r\n")
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"))
    ]
    video = [
        "m=video 9 UDP/TLS/RTP/SAVPF 45",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sendrecv",
        "a=msid:offered video",
        "a=rtcp-mux",
        f"a=rtpmap:45 {codec}",
        *transport,
        "a=setup:actpass",
    ]
    head = head.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
    return f"{head}\r\nm={data.rstrip()}\r\n" + "\r\n".join(video) + "\r\n"


async def test_an_offer_we_cannot_apply_is_undone(
    join: JoinFactory, streams: list[MediaStream], caplog: pytest.LogCaptureFixture
) -> None:
    """A renegotiation that fails leaves nothing half-done: aiortc's partial changes (a
    transceiver, a mid) are undone, the failure is logged once at WARNING, the data channel
    keeps working and the next renegotiation succeeds."""
    a, b = await connected_pair(join)
    pc = a.get_peers()[b.self_id]
    offer = offer_adding_video(pc.remoteDescription.sdp, "AV1/90000")
    send_raw(b, a, wire.SIGNAL, {"type": "offer", "sdp": offer})
    await eventually(
        lambda: any("renegotiation failed" in r.getMessage() for r in caplog.records),
        10,
        "the failure to be logged",
    )
    failures = [r for r in caplog.records if "renegotiation failed" in r.getMessage()]
    assert [r.levelname for r in failures] == ["WARNING"]
    assert "could not apply the peer's offer" in failures[0].getMessage()
    assert pc.signalingState == "stable"
    assert pc.getTransceivers() == []  # the half-made transceiver is gone
    assert await a.ping(b.self_id) > 0

    inbox = Inbox(b)
    stream = av(streams)
    await a.add_stream(stream)
    got, _, _ = await inbox.stream()
    await check_av(got, (160, 120))
    assert len(failures) == len(
        [r for r in caplog.records if "renegotiation failed" in r.getMessage()]
    )


async def test_an_offer_with_another_connections_credentials_is_refused(
    join: JoinFactory, streams: list[MediaStream], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13, defect 6: a renegotiation offer that changes the DTLS fingerprint or the
    ICE credentials of an established connection (here to those of another connection of
    the victim) is neither applied nor answered; each refusal is logged once at WARNING and
    the connection goes on carrying actions and media."""
    a_id, b_id, c_id = peer_ids(3)
    a, b = await join(a_id), await join(b_id)
    await join(c_id)
    await eventually(lambda: set(a.get_peers()) == {b_id, c_id}, 20, "a sees b and c")
    await eventually(lambda: a_id in b.get_peers(), 20, "b sees a")
    pc = a.get_peers()[b_id]
    remote, local = pc.remoteDescription.sdp, pc.localDescription.sdp
    foreign = a.get_peers()[c_id].remoteDescription.sdp  # c's credentials, as a knows them
    offer = offer_adding_video(remote, "VP8/90000")  # applied and answered as it is
    bogus = [
        transplant(offer, foreign, "a=fingerprint:"),
        transplant(offer, foreign, "a=ice-ufrag:", "a=ice-pwd:"),
    ]
    for message_id, sdp in enumerate(bogus):
        send_raw(b, a, wire.SIGNAL, {"type": "offer", "sdp": sdp}, message_id=message_id)

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "refused" in r.getMessage()]

    await eventually(lambda: len(refusals()) == 2 or bool(pc.getTransceivers()), 10, "two refusals")
    assert pc.getTransceivers() == []  # not applied, nor answered:
    assert (pc.remoteDescription.sdp, pc.localDescription.sdp) == (remote, local)
    assert pc.signalingState == "stable"
    assert [r.levelname for r in refusals()] == ["WARNING", "WARNING"]
    fingerprint, ice = (r.getMessage() for r in refusals())
    assert "DTLS fingerprint" in fingerprint
    assert "ICE credentials" in ice

    # the connection goes on: actions both ways, then a real renegotiation
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for room in (a, b):
        room.make_action("hi").on_message(lambda data, peer_id, _: got.put_nowait((data, peer_id)))
    await a.make_action("hi").send("from a", b_id)
    await b.make_action("hi").send("from b", a_id)
    received = {await asyncio.wait_for(got.get(), 10) for _ in range(2)}
    assert received == {("from a", a_id), ("from b", b_id)}
    inbox = Inbox(a)
    stream = av(streams)
    await b.add_stream(stream, target=a_id)
    got_stream, _, _ = await inbox.stream()
    await check_av(got_stream, (160, 120))
    assert len(refusals()) == 2
