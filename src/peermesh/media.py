"""Media for peermesh rooms: a small :class:`MediaStream` type, synthetic test sources, and
helpers to stream from a file or device and to record what a peer sends.

A :class:`MediaStream` is what Trystero's ``addStream``/``onPeerStream`` deal in: an id (sent
on the wire as ``@_stream``'s ``s`` and carried in the SDP ``a=msid`` line) and a list of
aiortc :class:`~aiortc.MediaStreamTrack` objects.

Synthetic sources, for tests and demos, produce media that is easy to recognise after a
lossy codec round trip:

* :class:`ToneTrack` — a sine tone (default 440 Hz, 48 kHz mono, 20 ms frames);
  :func:`audio_level` tells a tone from silence.
* :class:`PatternVideoTrack` — frames whose left half is white and right half black;
  :func:`matches_pattern` checks a decoded frame for it.

Both pace themselves in real time, like a microphone or camera, and need no numpy.

:func:`open_media` (aiortc's ``MediaPlayer``) turns a file, URL or capture device into a
:class:`MediaStream`; :class:`StreamRecorder` (aiortc's ``MediaRecorder``) writes a stream to
a file. ``aiortc.contrib.media`` is imported only when these are used.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .errors import UsageError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "MediaStream",
    "PatternVideoTrack",
    "StreamRecorder",
    "ToneTrack",
    "audio_level",
    "matches_pattern",
    "open_media",
]

logger = logging.getLogger(__name__)

#: A stream id travels in ``a=msid:<stream id> <track id>``; keep it a single SDP token.
_STREAM_ID = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")
_KINDS = ("audio", "video")


class MediaStream:
    """A set of audio/video tracks sent or received together, with a stream ``id``.

    ``id`` defaults to a fresh UUID (as browsers make them). It must be 1–64 characters of
    SDP token characters (no spaces); anything else raises :class:`UsageError`. A stream holds
    each track at most once. The stream does not own its tracks: :meth:`stop` is a
    convenience that stops all of them (and the player that feeds them, for
    :func:`open_media` streams).
    """

    def __init__(self, tracks: Iterable[MediaStreamTrack] = (), *, id: str | None = None) -> None:
        stream_id = str(uuid.uuid4()) if id is None else id
        if not isinstance(stream_id, str) or not _STREAM_ID.fullmatch(stream_id):
            raise UsageError(f"stream id {stream_id!r} is not a 1-64 character SDP token")
        self.id = stream_id
        self._tracks: list[MediaStreamTrack] = []
        self._source: Any = None  # a MediaPlayer kept alive for open_media() streams
        for track in tracks:
            self.add_track(track)

    @classmethod
    def _remote(cls, stream_id: str) -> MediaStream:
        """A stream received from a peer: its id is whatever the peer's SDP says."""
        stream = cls.__new__(cls)
        stream.id = stream_id
        stream._tracks = []
        stream._source = None
        return stream

    def __repr__(self) -> str:
        kinds = ",".join(t.kind for t in self._tracks)
        return f"<MediaStream {self.id} [{kinds}]>"

    def get_tracks(self) -> list[MediaStreamTrack]:
        """All tracks, in the order they were added."""
        return list(self._tracks)

    def get_audio_tracks(self) -> list[MediaStreamTrack]:
        return [t for t in self._tracks if t.kind == "audio"]

    def get_video_tracks(self) -> list[MediaStreamTrack]:
        return [t for t in self._tracks if t.kind == "video"]

    def get_track_by_id(self, track_id: str) -> MediaStreamTrack | None:
        return next((t for t in self._tracks if t.id == track_id), None)

    def add_track(self, track: MediaStreamTrack) -> None:
        """Add ``track`` (no-op if already present). Raises :class:`UsageError` for anything
        that is not an audio or video :class:`~aiortc.MediaStreamTrack`."""
        if not isinstance(track, MediaStreamTrack) or track.kind not in _KINDS:
            raise UsageError(f"{track!r} is not an audio or video MediaStreamTrack")
        if track not in self._tracks:
            self._tracks.append(track)

    def remove_track(self, track: MediaStreamTrack) -> None:
        """Remove ``track`` if present (no-op otherwise)."""
        if track in self._tracks:
            self._tracks.remove(track)

    def stop(self) -> None:
        """Stop every track (and the feeding player, if any)."""
        for track in self._tracks:
            track.stop()


# -- synthetic sources ------------------------------------------------------------------------


class ToneTrack(MediaStreamTrack):
    """A live audio track playing a sine tone, paced in real time.

    Frames are ``s16`` mono, ``sample_rate`` Hz, ``frame_ms`` long. Raises
    :class:`UsageError` for a non-positive or non-finite parameter, a frequency at or above
    the Nyquist limit, or an amplitude outside ``(0, 1]``.
    """

    kind = "audio"

    def __init__(
        self,
        frequency: float = 440.0,
        *,
        sample_rate: int = 48000,
        amplitude: float = 0.5,
        frame_ms: int = 20,
    ) -> None:
        super().__init__()
        if not (isinstance(sample_rate, int) and 8000 <= sample_rate <= 192000):
            raise UsageError("sample_rate must be an int between 8000 and 192000")
        if not (math.isfinite(frequency) and 0 < frequency < sample_rate / 2):
            raise UsageError("frequency must be positive and below sample_rate / 2")
        if not (math.isfinite(amplitude) and 0 < amplitude <= 1):
            raise UsageError("amplitude must be in (0, 1]")
        if not (isinstance(frame_ms, int) and 1 <= frame_ms <= 120):
            raise UsageError("frame_ms must be an int between 1 and 120")
        self.frequency = frequency
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self._samples = sample_rate * frame_ms // 1000
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        from av import AudioFrame

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self._samples
            delay = self._start + self._pts / self.sample_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        step = 2 * math.pi * self.frequency / self.sample_rate
        peak = self.amplitude * 32767
        samples = array.array(
            "h", (int(peak * math.sin(step * (self._pts + i))) for i in range(self._samples))
        )
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(samples.tobytes())
        frame.pts = self._pts
        frame.sample_rate = self.sample_rate
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class PatternVideoTrack(MediaStreamTrack):
    """A live video track of ``width``×``height`` ``yuv420p`` frames at ``fps``, paced in
    real time, showing the pattern :func:`matches_pattern` recognises: left half white,
    right half black.

    Raises :class:`UsageError` unless width and height are even ints in 16…1920 and fps is
    an int in 1…60.
    """

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, *, fps: int = 30) -> None:
        super().__init__()
        for name, value in (("width", width), ("height", height)):
            if not (isinstance(value, int) and 16 <= value <= 1920 and value % 2 == 0):
                raise UsageError(f"{name} must be an even int between 16 and 1920")
        if not (isinstance(fps, int) and 1 <= fps <= 60):
            raise UsageError("fps must be an int between 1 and 60")
        self.width = width
        self.height = height
        self.fps = fps
        self._index = 0
        self._start: float | None = None
        self._planes = _pattern_planes(width, height)

    async def recv(self) -> Any:
        from av import VideoFrame

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._index += 1
            delay = self._start + self._index / self.fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        for plane, (row, rows) in zip(frame.planes, self._planes, strict=True):
            line = plane.line_size
            padded = row + bytes(line - len(row))
            plane.update(padded * rows)
        frame.pts = self._index * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


def _pattern_planes(width: int, height: int) -> list[tuple[bytes, int]]:
    """One row of each yuv420p plane and the plane's row count."""
    half = width // 2
    luma = bytes([235]) * half + bytes([16]) * (width - half)
    chroma = bytes([128]) * (width // 2)
    return [(luma, height), (chroma, height // 2), (chroma, height // 2)]


def audio_level(frame: Any) -> float:
    """Root-mean-square level of an audio frame, from 0.0 (silence) to 1.0 (full scale).

    Handles ``s16``/``s16p`` (aiortc's decoders) and ``flt``/``fltp`` (e.g. AAC from a
    file), packed or planar. Raises :class:`UsageError` for another sample format.
    """
    name = frame.format.name
    if name not in _SAMPLE_FORMATS:
        raise UsageError(f"audio_level needs s16 or float frames, got {name}")
    typecode, scale = _SAMPLE_FORMATS[name]
    planar = frame.format.is_planar
    per_plane = frame.samples * (1 if planar else len(frame.layout.channels))
    total = 0.0
    count = 0
    for plane in frame.planes:
        samples = array.array(typecode)
        samples.frombytes(bytes(plane)[: per_plane * samples.itemsize])
        total += sum(float(s) * s for s in samples)
        count += len(samples)
    return math.sqrt(total / count) / scale if count else 0.0


_SAMPLE_FORMATS = {"s16": ("h", 32768), "s16p": ("h", 32768), "flt": ("f", 1), "fltp": ("f", 1)}


def matches_pattern(frame: Any) -> bool:
    """Whether a decoded video frame shows :class:`PatternVideoTrack`'s pattern (bright left
    half, dark right half), allowing for codec loss. Looks at the middle row of the luma
    plane; the frame must be ``yuv420p`` (aiortc's decoders' output) or is converted."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    width = frame.width
    middle = frame.height // 2
    row = bytes(plane)[middle * plane.line_size : middle * plane.line_size + width]
    quarter = width // 4
    left = row[quarter // 2 : quarter + quarter // 2]
    right = row[width - quarter - quarter // 2 : width - quarter // 2]
    if not left or not right:
        return False
    return sum(left) / len(left) > 180 and sum(right) / len(right) < 70


# -- files and devices ------------------------------------------------------------------------


def open_media(
    source: str,
    *,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
    loop: bool = False,
    stream_id: str | None = None,
) -> MediaStream:
    """Open a file, URL or capture device with aiortc's ``MediaPlayer`` and return a
    :class:`MediaStream` of its first audio and first video track.

    ``format``/``options`` go to FFmpeg, e.g. ``open_media("/dev/video0", format="v4l2",
    options={"video_size": "640x480"})`` or ``open_media("default", format="pulse")``.
    ``loop=True`` repeats a seekable file. Playback starts when a track is first read
    (i.e. when the stream is sent) and ends when :meth:`MediaStream.stop` is called or the
    file ends. Raises :class:`UsageError` if the source cannot be opened or has neither
    audio nor video.
    """
    from aiortc.contrib.media import MediaPlayer

    try:
        player = MediaPlayer(source, format=format, options=dict(options or {}), loop=loop)
    except Exception as exc:  # PyAV raises FileNotFoundError, av.error.*, ...
        raise UsageError(f"cannot open media source {source!r}: {exc}") from exc
    tracks = [t for t in (player.audio, player.video) if t is not None]
    if not tracks:
        raise UsageError(f"media source {source!r} has no audio or video")
    stream = MediaStream(tracks, id=stream_id)
    stream._source = player
    return stream


class StreamRecorder:
    """Record a :class:`MediaStream` (typically a peer's) to a file with aiortc's
    ``MediaRecorder``. The container format follows the file name (``.mp4``, ``.webm``,
    ``.mkv``, ``.wav`` …) unless ``format`` is given.

    Use ``async with StreamRecorder(stream, path):`` or :meth:`start`/:meth:`stop`. Tracks
    must be added before :meth:`start`; the recording is finalised by :meth:`stop`.
    Raises :class:`UsageError` if the file cannot be created or the stream has no tracks.
    """

    def __init__(
        self,
        stream: MediaStream,
        path: str,
        *,
        format: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        from aiortc.contrib.media import MediaRecorder

        tracks = stream.get_tracks()
        if not tracks:
            raise UsageError("cannot record a stream without tracks")
        try:
            self._recorder = MediaRecorder(path, format=format, options=dict(options or {}))
        except Exception as exc:
            raise UsageError(f"cannot record to {path!r}: {exc}") from exc
        for track in tracks:
            self._recorder.addTrack(track)
        self.path = path
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._recorder.start()

    async def stop(self) -> None:
        """Stop recording and close the file. Safe to call more than once."""
        if self._started:
            self._started = False
            await self._recorder.stop()

    async def __aenter__(self) -> StreamRecorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
