"""Alice sends a camera-like stream (a test pattern and a tone) with metadata; Bob gets it
in ``on_peer_stream``, looks at the decoded frames and records two seconds to a file.

Runs offline on loopback. Swap the synthetic tracks for a real source with
``peermesh.media.open_media("movie.mp4")`` or ``open_media("/dev/video0", format="v4l2")``.

    python examples/video_call.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import av

from peermesh.media import (
    MediaStream,
    PatternVideoTrack,
    StreamRecorder,
    ToneTrack,
    audio_level,
    matches_pattern,
)
from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        async with (
            await join_room("call", peer_id="alice".ljust(20, "0"), **options) as alice,
            await join_room("call", peer_id="bob".ljust(20, "0"), **options) as bob,
        ):
            arrived: asyncio.Queue[tuple[MediaStream, object]] = asyncio.Queue()
            bob.on_peer_stream(lambda stream, peer_id, meta: arrived.put_nowait((stream, meta)))
            joined = asyncio.Event()
            alice.on_peer_join(lambda peer_id: joined.set())
            await asyncio.wait_for(joined.wait(), 20)

            camera = MediaStream([ToneTrack(440), PatternVideoTrack(320, 240)])
            await alice.add_stream(camera, metadata={"label": "camera"})
            stream, metadata = await asyncio.wait_for(arrived.get(), 20)
            print(f"bob: stream from alice, metadata {metadata}")

            video = await asyncio.wait_for(stream.get_video_tracks()[0].recv(), 10)
            assert matches_pattern(video)
            audio = stream.get_audio_tracks()[0]
            levels = [audio_level(await asyncio.wait_for(audio.recv(), 10)) for _ in range(25)]
            assert max(levels) > 0.05  # half a second of audio: a tone, not silence
            print(f"bob: video {video.width}x{video.height}, the pattern; audio is a tone")

            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "alice.mkv"
                async with StreamRecorder(stream, str(path)):
                    await asyncio.sleep(2)
                with av.open(str(path)) as recording:
                    frames = sum(1 for _ in recording.decode(video=0))
                print(f"bob: recorded {'enough' if frames >= 20 else 'too few'} frames")

            await alice.remove_stream(camera)
            camera.stop()
        print("done")


if __name__ == "__main__":
    asyncio.run(main())
