"""One peer of ``peermesh demo``: a separate OS process that joins the demo room and
carries out the parent's commands, reporting what happens as JSON lines.

Started by the parent as::

    python -m peermesh.cli._demo_peer --name peer-1 [--verbose N]

The wire between the two is described in :mod:`peermesh.cli._demo_protocol`. The process
exits when told to (``exit``) or as soon as its stdin closes, so it cannot outlive a
parent that died. It ignores SIGINT: Ctrl-C in the terminal reaches the whole process
group, and the parent, not the terminal, decides when peers stop. Everything stays on
loopback: no STUN servers, and ICE host candidates on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, TypeVar

import peermesh
from peermesh import Action, JoinErrorEvent, Room
from peermesh.torrent import join_room

from ._app import LOOP_CHOICES, run_on_loop
from ._demo_protocol import (
    PROGRESS_INTERVAL,
    Message,
    ProtocolViolation,
    decode_line,
    encode_line,
    field,
)

__all__ = ["ControlChannel", "DemoPeer", "main"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds each ping may take before it counts as failed.
PING_TIMEOUT = 5.0
#: Seconds the room gets to leave cleanly when the process is told to exit.
EXIT_LEAVE_TIMEOUT = 3.0
#: Seconds after the exit request at which the process ends itself however far its
#: cleanup got (status :data:`STUCK_EXIT_STATUS`), so that it never outlives the demo.
EXIT_DEADLINE = 6.0
STUCK_EXIT_STATUS = 3
#: ICE settings that keep every packet on loopback.
LOOPBACK_RTC_CONFIG: dict[str, Any] = {"iceServers": []}
LOOPBACK_ADDRESSES = ["127.0.0.1"]


class CommandFailed(Exception):
    """A command could not be carried out; its message goes back in the ``result``."""


class ControlChannel:
    """Commands from stdin (read by a daemon thread, so this works on every platform's
    event loop) and events to the protocol stream, one JSON line each."""

    def __init__(self, events_out: TextIO, commands_in: TextIO) -> None:
        self._events_out = events_out
        self._commands_in = commands_in
        self._commands: asyncio.Queue[Message | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.parent_gone = False

    def start(self) -> None:
        """Start the stdin reader thread."""
        threading.Thread(target=self._read_commands, name="demo-control-in", daemon=True).start()

    def _read_commands(self) -> None:
        for line in self._commands_in:
            if not line.strip():
                continue
            try:
                command = decode_line(line)
            except ProtocolViolation as exc:
                logger.warning("ignoring a malformed control line: %s", exc)
                continue
            self._loop.call_soon_threadsafe(self._commands.put_nowait, command)
        self._loop.call_soon_threadsafe(self._commands.put_nowait, None)

    async def next_command(self) -> Message | None:
        """The next command, or ``None`` once stdin has closed or the parent is gone."""
        if self.parent_gone:
            return None
        return await self._commands.get()

    def emit(self, event: str, **fields: object) -> None:
        """Send one event. A closed pipe means the parent is gone: stop reading commands."""
        if self.parent_gone:
            return
        try:
            self._events_out.write(encode_line({"event": event, **fields}))
            self._events_out.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.parent_gone = True
            self._commands.put_nowait(None)


class DemoPeer:
    """The demo's behaviour on top of a :class:`~peermesh.Room`: chat, file, ping, leave."""

    def __init__(self, name: str, channel: ControlChannel) -> None:
        self.name = name
        self.channel = channel
        self.room: Room | None = None
        self._chat: Action | None = None
        self._file: Action | None = None
        self._last_progress: dict[tuple[str, str], float] = {}
        self._handlers: dict[str, Callable[[Message], Awaitable[dict[str, object]]]] = {
            "join": self.join,
            "chat": self.chat,
            "send_file": self.send_file,
            "ping": self.ping,
            "leave": self.leave,
        }

    async def run_command(self, command: Message) -> None:
        """Carry out one command and emit its ``result``."""
        command_id = command.get("id")
        name = command.get("cmd")
        handler = self._handlers.get(name) if isinstance(name, str) else None
        try:
            if handler is None:
                raise CommandFailed(f"unknown command {name!r}")
            outcome = await handler(command)
        except (CommandFailed, ProtocolViolation, peermesh.PeermeshError) as exc:
            self.channel.emit("result", id=command_id, ok=False, error=str(exc))
        except Exception as exc:  # report, then let the log show the traceback
            logger.exception("%s: command %r failed", self.name, name)
            self.channel.emit("result", id=command_id, ok=False, error=repr(exc))
        else:
            self.channel.emit("result", id=command_id, ok=True, **outcome)

    # -- commands -----------------------------------------------------------------------------

    async def join(self, command: Message) -> dict[str, object]:
        """Join the room on the parent's tracker and start reporting what happens in it."""
        if self.room is not None:
            raise CommandFailed("already joined")
        room = await join_room(
            field(command, "room_id", str),
            app_id=field(command, "app_id", str),
            relay_urls=[field(command, "tracker_url", str)],
            rtc_config=LOOPBACK_RTC_CONFIG,
            ice_addresses=LOOPBACK_ADDRESSES,
        )
        self.room = room
        room.on_peer_join(lambda peer_id: self.channel.emit("peer_joined", peer_id=peer_id))
        room.on_peer_leave(lambda peer_id: self.channel.emit("peer_left", peer_id=peer_id))
        room.on_join_error(self._on_join_error)
        self._chat = room.make_action("chat")
        self._chat.on_message(self._on_chat)
        self._file = room.make_action("file")
        self._file.on_message(self._on_file)
        self._file.on_receive_progress(self._on_receive_progress)
        return {"peer_id": room.self_id}

    async def chat(self, command: Message) -> dict[str, object]:
        """Send ``text`` to each of ``targets``."""
        action = self._require(self._chat)
        await action.send(field(command, "text", str), target=_targets(command))
        return {}

    async def send_file(self, command: Message) -> dict[str, object]:
        """Send ``size`` random bytes to ``targets``, with their SHA-256 as metadata."""
        action = self._require(self._file)
        size = field(command, "size", int)
        if size < 0:
            raise CommandFailed("size must not be negative")
        data = os.urandom(size)
        digest = hashlib.sha256(data).hexdigest()
        self.channel.emit("file_sending", size=size, sha256=digest)
        await action.send(
            data,
            target=_targets(command),
            metadata={"name": "demo.bin", "size": size, "sha256": digest},
            on_progress=self._on_send_progress,
        )
        return {"sha256": digest, "size": size}

    async def ping(self, command: Message) -> dict[str, object]:
        """Ping every peer of ``targets`` concurrently; all must answer."""
        room = self._require(self.room)
        targets = _targets(command)
        answers = await asyncio.gather(
            *(room.ping(peer_id, timeout=PING_TIMEOUT) for peer_id in targets),
            return_exceptions=True,
        )
        failures = [f"{p}: {a}" for p, a in zip(targets, answers, strict=True) if _failed(a)]
        if failures:
            raise CommandFailed("ping failed: " + "; ".join(failures))
        return {"rtt_ms": dict(zip(targets, answers, strict=True))}

    async def leave(self, command: Message) -> dict[str, object]:
        """Leave the room (telling every peer)."""
        await self._require(self.room).leave()
        return {}

    async def close(self) -> None:
        """Leave the room if still in it, within :data:`EXIT_LEAVE_TIMEOUT` seconds."""
        if self.room is not None and not self.room.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.room.leave(), EXIT_LEAVE_TIMEOUT)

    # -- room callbacks -----------------------------------------------------------------------

    def _on_join_error(self, event: JoinErrorEvent) -> None:
        self.channel.emit("join_error", peer_id=event.peer_id, error=event.error)

    def _on_chat(self, data: object, peer_id: str, metadata: object) -> None:
        self.channel.emit("chat", sender=peer_id, text=str(data))

    def _on_file(self, data: object, peer_id: str, metadata: object) -> None:
        payload = data if isinstance(data, bytes) else str(data).encode()
        expected = metadata.get("sha256") if isinstance(metadata, dict) else None
        self.channel.emit(
            "file_received",
            sender=peer_id,
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            expected_sha256=expected,
        )

    def _on_send_progress(self, fraction: float, peer_id: str, metadata: object) -> None:
        self._report_progress("send", peer_id, fraction)

    def _on_receive_progress(self, fraction: float, peer_id: str, metadata: object) -> None:
        self._report_progress("receive", peer_id, fraction)

    def _report_progress(self, direction: str, peer_id: str, fraction: float) -> None:
        key = (direction, peer_id)
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress.get(key, -PROGRESS_INTERVAL) < (
            PROGRESS_INTERVAL
        ):
            return
        self._last_progress[key] = now
        self.channel.emit("progress", direction=direction, peer_id=peer_id, fraction=fraction)

    @staticmethod
    def _require(thing: T | None) -> T:
        if thing is None:
            raise CommandFailed("not in a room yet (send 'join' first)")
        return thing


def _targets(command: Message) -> list[str]:
    targets = field(command, "targets", list)
    if not all(isinstance(t, str) for t in targets):
        raise ProtocolViolation("targets must be a list of peer ids")
    return targets


def _failed(answer: object) -> bool:
    return isinstance(answer, BaseException)


async def serve(name: str) -> int:
    """Obey commands until ``exit`` or end of input; return the exit status."""
    events_out = _claim_stdout()
    channel = ControlChannel(events_out, sys.stdin)
    peer = DemoPeer(name, channel)
    channel.start()
    channel.emit("ready", peer_id=peermesh.self_id, name=name, pid=os.getpid())
    running: set[asyncio.Task[None]] = set()
    try:
        while (command := await channel.next_command()) is not None:
            if command.get("cmd") == "exit":
                break
            task = asyncio.create_task(peer.run_command(command))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        _arm_exit_watchdog(EXIT_DEADLINE)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await peer.close()
    return 0


def _arm_exit_watchdog(seconds: float) -> None:
    """End the process after ``seconds`` even if shutdown hangs (a task that ignores
    cancellation, say); the timer thread is a daemon, so a prompt exit is not delayed."""
    timer = threading.Timer(seconds, os._exit, args=(STUCK_EXIT_STATUS,))
    timer.daemon = True
    timer.start()


def _claim_stdout() -> TextIO:
    """Keep the real stdout for the protocol alone and point fd 1 (and ``sys.stdout``) at
    stderr, so a stray print anywhere cannot corrupt the control stream."""
    sys.stdout.flush()
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return open(protocol_fd, "w", encoding="utf-8", newline="\n", closefd=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the peer process."""
    parser = argparse.ArgumentParser(prog="python -m peermesh.cli._demo_peer")
    parser.add_argument("--name", required=True, help="display name, e.g. peer-1")
    parser.add_argument("--verbose", type=int, default=0, help="0 warnings, 1 info, 2 debug")
    parser.add_argument("--event-loop", choices=LOOP_CHOICES, default="auto", help="event loop")
    args = parser.parse_args(argv)
    with contextlib.suppress(ValueError, OSError, AttributeError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    package_logger = logging.getLogger("peermesh")
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False
    return run_on_loop(args.event_loop, serve(args.name))


if __name__ == "__main__":
    sys.exit(main())
