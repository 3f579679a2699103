"""``peermesh stream``: join a room, send a media file (or device) to every peer, and record
each stream the peers send, until Ctrl-C, SIGTERM or ``--duration``.

Each peer that joins gets the file as one stream (announced with ``{"file": name}``
metadata, or ``--metadata``); each stream received is written to
``<record dir>/<peer id>-<n>.mkv`` (H.264 + AAC) until the peer leaves or the command
ends. Works with Trystero peers as well as peermesh ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from peermesh import PeerUnavailableError, Room, RoomClosedError
from peermesh.media import MediaStream, StreamRecorder, open_media

from ._arguments import positive_float
from ._joining import add_join_arguments, join
from ._output import EXIT_OK, CliError, stdout
from ._signals import wait_for_stop_signal

if TYPE_CHECKING:
    from ._app import SubParsers

__all__ = ["register", "run_stream"]

DEFAULT_STRATEGY = "nostr"
DEFAULT_APP_ID = "peermesh-stream"


def register(subparsers: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add the ``stream`` subcommand."""
    parser = subparsers.add_parser(
        "stream",
        parents=[common],
        help="send a media file into a room and record what the other peers send",
        description="Join a room; send --send (a file, URL or, with --format, a device) to "
        "every peer that joins, and record every stream a peer sends into --record. Runs "
        "until Ctrl-C, SIGTERM or --duration.",
    )
    add_join_arguments(parser, strategy=DEFAULT_STRATEGY, app_id=DEFAULT_APP_ID, room=None)
    parser.add_argument("--send", metavar="SOURCE", help="media file, URL or device to send")
    parser.add_argument(
        "--format", help="FFmpeg input format of --send (e.g. v4l2 for /dev/video0)"
    )
    parser.add_argument("--loop", action="store_true", help="repeat --send when it ends")
    parser.add_argument(
        "--metadata",
        type=_json_value,
        metavar="JSON",
        help='metadata announced with the stream (default {"file": <name>})',
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="record each received stream to DIR/<peer id>-<n>.mkv",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="stop after this long (default: run until Ctrl-C)",
    )
    parser.set_defaults(handler=run_stream)


def _json_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON") from None


@dataclass
class _Recording:
    peer_id: str
    stream: MediaStream
    path: Path
    recorder: StreamRecorder
    metadata: Any


class _Session:
    """What one ``peermesh stream`` run does in its room."""

    def __init__(self, room: Room, args: argparse.Namespace) -> None:
        self.room = room
        self.record_dir: Path | None = args.record
        self.source: MediaStream | None = None
        self.metadata: object = args.metadata
        self.recordings: list[_Recording] = []
        self._tasks: set[asyncio.Task[None]] = set()
        if args.send:
            self.source = open_media(args.send, format=args.format, loop=args.loop)
            if self.metadata is None:
                self.metadata = {"file": Path(args.send).name}
        room.on_peer_join(self.joined)
        room.on_peer_leave(self.left)
        room.on_peer_stream(self.stream_arrived)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def joined(self, peer_id: str) -> None:
        stdout.print(f"peer {peer_id} joined", markup=False)
        if self.source is not None:
            self._spawn(self._send_to(peer_id))

    async def _send_to(self, peer_id: str) -> None:
        assert self.source is not None
        kinds = "+".join(t.kind for t in self.source.get_tracks())
        try:
            await self.room.add_stream(self.source, target=peer_id, metadata=self.metadata)
        except (PeerUnavailableError, RoomClosedError):
            return
        stdout.print(f"sending {kinds} to {peer_id}", markup=False)

    def stream_arrived(self, stream: MediaStream, peer_id: str, metadata: object) -> None:
        kinds = "+".join(t.kind for t in stream.get_tracks()) or "no tracks"
        text = json.dumps(metadata)
        if self.record_dir is None:
            stdout.print(f"{peer_id} sends a stream ({kinds}), metadata {text}", markup=False)
            return
        count = sum(r.peer_id == peer_id for r in self.recordings) + 1
        path = self.record_dir / f"{peer_id}-{count}.mkv"
        recorder = StreamRecorder(stream, str(path))
        self.recordings.append(_Recording(peer_id, stream, path, recorder, metadata))
        self._spawn(recorder.start())
        stdout.print(
            f"{peer_id} sends a stream ({kinds}), metadata {text}: recording to {path}",
            markup=False,
        )

    def left(self, peer_id: str) -> None:
        stdout.print(f"peer {peer_id} left", markup=False)
        for recording in self.recordings:
            if recording.peer_id == peer_id:
                self._spawn(recording.recorder.stop())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for recording in self.recordings:
            await recording.recorder.stop()
        if self.source is not None:
            self.source.stop()

    def summary(self) -> Table:
        table = Table(title=f"{len(self.recordings)} recordings", title_justify="left")
        table.add_column("peer", no_wrap=True)
        table.add_column("file", overflow="fold")
        table.add_column("bytes", justify="right")
        table.add_column("metadata", overflow="fold")
        for r in self.recordings:
            size = r.path.stat().st_size if r.path.exists() else 0
            table.add_row(r.peer_id, str(r.path), f"{size:,}", json.dumps(r.metadata))
        return table


async def run_stream(args: argparse.Namespace) -> int:
    """Join, send and record until stopped, then stop recordings and leave."""
    if not args.send and args.record is None:
        raise CliError("nothing to do: give --send SOURCE, --record DIR, or both")
    if args.record is not None:
        try:
            args.record.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create {args.record}: {exc.strerror}") from None
    room = await join(args)
    session: _Session | None = None
    try:
        session = _Session(room, args)
        stdout.print(f"in room {args.room} as {room.self_id}", markup=False)
        stop = asyncio.ensure_future(wait_for_stop_signal())
        try:
            await asyncio.wait({stop}, timeout=args.duration)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
    finally:
        if session is not None:
            await session.close()
        await room.leave()
    if session.record_dir is not None:
        stdout.print(session.summary())
    return EXIT_OK
