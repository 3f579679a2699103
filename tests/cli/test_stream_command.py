"""``peermesh stream``: one process sends a video file into a room, another records what it
receives; the recording decodes to the file's frames (size and picture) and its tone."""

from __future__ import annotations

import asyncio
import fractions
import math
from pathlib import Path

import av
import pytest

from peermesh.media import audio_level, matches_pattern
from peermesh.servers import serve_tracker

from ._run import run_peermesh, run_peermesh_async

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

WIDTH, HEIGHT, FPS, SECONDS = 160, 120, 15, 4


def make_video(path: Path) -> None:
    """``SECONDS`` of H.264 frames (bright left half, dark right half) and a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        luma = (bytes([235]) * (WIDTH // 2) + bytes([16]) * (WIDTH // 2)) * HEIGHT
        chroma = bytes([128]) * (WIDTH * HEIGHT // 4)
        for index in range(FPS * SECONDS):
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            for plane, data in zip(frame.planes, (luma, chroma, chroma), strict=True):
                plane.update(data)
            frame.pts = index
            frame.time_base = fractions.Fraction(1, FPS)
            container.mux(video.encode(frame))
        samples = 1024
        for index in range(48000 * SECONDS // samples):
            frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
            tone = b"".join(
                int(12000 * math.sin(2 * math.pi * 440 * (index * samples + i) / 48000)).to_bytes(
                    2, "little", signed=True
                )
                for i in range(samples)
            )
            frame.planes[0].update(tone)
            frame.sample_rate, frame.pts = 48000, index * samples
            frame.time_base = fractions.Fraction(1, 48000)
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


async def run(*args: str) -> tuple[int, str, str]:
    """``peermesh stream`` on the torrent strategy, loopback only."""
    loopback = ("--strategy", "torrent", "--no-stun", "--ice-address", "127.0.0.1")
    return await run_peermesh_async("stream", *loopback, *args)


async def test_send_a_file_and_record_it(tmp_path: Path) -> None:
    movie = tmp_path / "movie.mp4"
    make_video(movie)
    records = tmp_path / "records"
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        common = ("--relay-url", tracker.url, "--room", "cinema", "--duration", "8")
        (code_tx, out_tx, err_tx), (code_rx, out_rx, err_rx) = await asyncio.gather(
            run(*common, "--send", str(movie), "--metadata", '{"title": "test"}'),
            run(*common, "--record", str(records)),
        )
    assert code_tx == 0, out_tx + err_tx
    assert code_rx == 0, out_rx + err_rx
    assert "sending audio+video to" in out_tx
    assert 'metadata {"title": "test"}: recording to' in out_rx, out_rx
    (recording,) = records.glob("*.mkv")
    with av.open(str(recording)) as container:
        assert {s.type for s in container.streams} == {"audio", "video"}
        frames = list(container.decode(video=0))
        container.seek(0)
        levels = [audio_level(f) for f in container.decode(audio=0)]
    assert len(frames) >= FPS  # at least a second of the four seconds sent
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    assert matches_pattern(frames[-1])
    assert max(levels) > 0.1


def test_needs_something_to_do() -> None:
    done = run_peermesh("stream", "--room", "x", "--relay-url", "ws://127.0.0.1:1")
    assert done.returncode == 1
    assert "nothing to do" in done.stderr


def test_unreadable_source_is_a_clean_error(tmp_path: Path) -> None:
    done = run_peermesh(
        "stream",
        "--room",
        "x",
        "--strategy",
        "torrent",
        "--relay-url",
        "ws://127.0.0.1:1",
        "--send",
        str(tmp_path / "missing.mp4"),
    )
    assert done.returncode == 1
    assert "cannot open media source" in done.stderr
    assert "Traceback" not in done.stderr
