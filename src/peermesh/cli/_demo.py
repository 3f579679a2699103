"""``peermesh demo``: a complete, offline tour of peermesh in a few seconds.

The parent process (this module) starts the embedded tracker on a free loopback port,
spawns ``--peers`` peer processes (:mod:`peermesh.cli._demo_peer`) and drives them through
fixed steps over a JSON-lines control channel (:mod:`peermesh.cli._demo_protocol`):

1. *start* -- every process has imported peermesh and reported its peer id;
2. *join* -- all are told to join one room at the same moment; done when every peer has
   every other as an active peer;
3. *chat* -- each sends a greeting to all others; done when every greeting has arrived;
4. *file* -- the first peer sends ``--size-mib`` MiB of random bytes, with their SHA-256
   as metadata, to all others, under progress bars for both ends; each receiver hashes
   what it got;
5. *ping* -- every peer pings every other;
6. *leave* -- peers leave one by one; each departure must be seen by those still there.

Every wait is bounded; on any failure or timeout the demo prints what it measured so far
and the reason, and exits 1. The peer processes are always stopped at the end (asked to
exit, then killed), and exit by themselves if this process dies (their stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from peermesh.servers.tracker import serve_tracker

from . import _demo_protocol as protocol
from ._arguments import bounded_float, bounded_int
from ._demo_protocol import Message, ProtocolViolation, decode_line, encode_line
from ._output import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, print_error, stderr, stdout
from ._signals import wait_for_stop_signal

if TYPE_CHECKING:
    from ._app import SubParsers

__all__ = ["Demo", "DemoFailure", "DemoResults", "DemoTimeouts", "register", "run_demo"]

MIB = 1024 * 1024
DEFAULT_PEERS = 3
#: More peers take several tracker intervals to form a full mesh: each announce offers
#: connections to only 3 randomly chosen peers, most of them already connected.
MAX_PEERS = 6
DEFAULT_SIZE_MIB = 5.0
MAX_SIZE_MIB = 256.0
#: Announce interval of the demo's tracker (Trystero's minimum): re-announces come soon.
TRACKER_INTERVAL = 10.0
#: Lines of each peer process's stderr kept to explain a failure.
STDERR_TAIL_LINES = 20
#: Longest control line accepted from a peer process.
CONTROL_LINE_LIMIT = 1024 * 1024
PEER_MODULE = "peermesh.cli._demo_peer"


@dataclass(frozen=True)
class DemoTimeouts:
    """Upper bounds, in seconds, of each step (typical runs take a fraction of them)."""

    start: float = 30.0
    join_base: float = 20.0
    join_per_extra_peer: float = 15.0
    chat: float = 10.0
    file_base: float = 20.0
    file_per_mib: float = 4.0
    ping: float = 15.0
    leave_each: float = 10.0
    stop: float = 3.0

    def join(self, peers: int) -> float:
        """The bound of the join step for ``peers`` peers (up to 4 meet within a second;
        beyond that the last pairs often wait for a re-announce, every 10 s)."""
        return self.join_base + self.join_per_extra_peer * max(0, peers - 4)

    def file(self, size: int) -> float:
        """The bound of the file step for ``size`` bytes."""
        return self.file_base + self.file_per_mib * size / MIB


class DemoFailure(Exception):
    """A step of the demo failed or timed out; the message says which and why."""


# -- results --------------------------------------------------------------------------------


@dataclass
class ReceiverResult:
    """What one receiver of the file reported."""

    name: str
    size: int
    seconds: float
    sha256_ok: bool


@dataclass
class DemoResults:
    """Everything the demo measured; fields stay ``None``/empty for steps not reached."""

    peer_names: list[str]
    file_size: int
    start_seconds: float | None = None
    join_seconds: float | None = None
    chats_expected: int = 0
    chats_delivered: int = 0
    file_sender: str | None = None
    receivers: dict[str, ReceiverResult] = field(default_factory=dict)
    ping_ms: list[float] = field(default_factory=list)
    pings_expected: int = 0
    leaves_expected: int = 0
    leaves_seen: int = 0
    total_seconds: float | None = None

    def table(self) -> Table:
        """The summary as a two-column rich table."""
        table = Table(title="peermesh demo summary", show_header=False, title_justify="left")
        table.add_column("measure", style="bold")
        table.add_column("value")
        names = ", ".join(self.peer_names)
        table.add_row("peers", f"{len(self.peer_names)} processes ({names})")
        table.add_row("time to join all", _seconds(self.join_seconds))
        table.add_row(
            "chat messages delivered", _fraction(self.chats_delivered, self.chats_expected)
        )
        sender = f" from {self.file_sender}" if self.file_sender else ""
        table.add_row("file size", f"{self.file_size / MIB:.1f} MiB ({self.file_size:,} B){sender}")
        for name in self.peer_names:
            result = self.receivers.get(name)
            if result is not None:
                rate = result.size / result.seconds / 1e6 if result.seconds > 0 else float("inf")
                verdict = "sha256 ok" if result.sha256_ok else "sha256 MISMATCH"
                table.add_row(
                    f"{name} received", f"{rate:.1f} MB/s in {result.seconds:.2f} s, {verdict}"
                )
            elif self.file_sender is not None and name != self.file_sender:
                table.add_row(f"{name} received", "-")
        if self.ping_ms:
            low, mid, high = min(self.ping_ms), statistics.median(self.ping_ms), max(self.ping_ms)
            pings = f"{low:.1f} / {mid:.1f} / {high:.1f} ({len(self.ping_ms)} pings)"
        else:
            pings = f"- (0/{self.pings_expected} pings)" if self.pings_expected else "-"
        table.add_row("ping ms min / median / max", pings)
        table.add_row("leave seen", _fraction(self.leaves_seen, self.leaves_expected))
        table.add_row("total time", _seconds(self.total_seconds))
        return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _fraction(done: int, expected: int) -> str:
    """``done/expected``, or ``-`` for a step that was never reached."""
    return f"{done}/{expected}" if expected else "-"


# -- peer processes -------------------------------------------------------------------------

EventHandler = Callable[["PeerProcess", Message], None]


class PeerProcess:
    """One demo peer process and the parent's end of its control channel."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, on_event: EventHandler, verbose: int
    ) -> None:
        self.name = name
        self.process = process
        self.peer_id: str | None = None
        self.exited = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._on_event = on_event
        self._verbose = verbose
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 1
        self._readers = [
            asyncio.create_task(self._read_events(), name=f"{name}-events"),
            asyncio.create_task(self._read_stderr(), name=f"{name}-stderr"),
        ]

    @classmethod
    async def spawn(
        cls, name: str, on_event: EventHandler, verbose: int, loop: str = "auto"
    ) -> PeerProcess:
        """Start ``python -m peermesh.cli._demo_peer`` with pipes for all three streams, on
        event loop ``loop`` (an ``--event-loop`` choice)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            PEER_MODULE,
            "--name",
            name,
            "--verbose",
            str(verbose),
            "--event-loop",
            loop,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=CONTROL_LINE_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return cls(name, process, on_event, verbose)

    def __repr__(self) -> str:
        return f"<PeerProcess {self.name} pid={self.process.pid}>"

    @property
    def exit_description(self) -> str:
        """``"exited with status N"``, ``"was killed by SIGKILL"`` or ``"is running"``."""
        code = self.process.returncode
        if code is None:
            return "is running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    async def request(self, command: str, timeout: float, **fields: object) -> Message:
        """Send ``command`` and return its successful ``result``.

        Raises :class:`DemoFailure` if the peer reports an error, does not answer within
        ``timeout`` seconds, or exits first.
        """
        if self.exited:
            raise DemoFailure(f"{self.name} {self.exit_description}")
        command_id = self._next_id
        self._next_id += 1
        reply: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = reply
        try:
            await self._write({"cmd": command, "id": command_id, **fields})
            result = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise DemoFailure(
                f"{self.name} did not finish {command!r} within {timeout:g} s"
            ) from None
        finally:
            self._pending.pop(command_id, None)
        if result.get("ok") is not True:
            raise DemoFailure(f"{self.name} could not {command}: {result.get('error')}")
        return result

    async def stop(self, timeout: float) -> None:
        """Ask the process to exit, wait up to ``timeout`` seconds, then kill it."""
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self._write({"cmd": "exit"})
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for reader in self._readers:
            try:
                await asyncio.wait_for(reader, timeout)
            except (TimeoutError, asyncio.CancelledError):
                reader.cancel()

    async def _write(self, message: Message) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            raise DemoFailure(f"{self.name} no longer accepts commands")
        try:
            stdin.write(encode_line(message).encode())
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise DemoFailure(f"{self.name} {self.exit_description}") from None

    async def _read_events(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while line := await stream.readline():
            try:
                message = decode_line(line)
            except ProtocolViolation:
                self.stderr_tail.append(f"(stray output) {line.decode(errors='replace')}")
                continue
            if message.get("event") == "result":
                command_id = message.get("id")
                reply = self._pending.get(command_id) if isinstance(command_id, int) else None
                if reply is not None and not reply.done():
                    reply.set_result(message)
                continue
            if message.get("event") == "ready" and isinstance(message.get("peer_id"), str):
                self.peer_id = message["peer_id"]
            self._on_event(self, message)
        await self.process.wait()
        self.exited = True
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(DemoFailure(f"{self.name} {self.exit_description}"))
        self._on_event(self, {"event": "exited"})

    async def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self.stderr_tail.append(text)
            if self._verbose:
                stderr.print(f"[dim]{self.name}[/] {escape(text)}", soft_wrap=True)


# -- the demo -------------------------------------------------------------------------------


class Demo:
    """One run of the demo. Call :meth:`run`; read :attr:`results` afterwards."""

    def __init__(
        self,
        peers: int = DEFAULT_PEERS,
        size: int = int(DEFAULT_SIZE_MIB * MIB),
        *,
        verbose: int = 0,
        timeouts: DemoTimeouts | None = None,
        loop: str = "auto",
    ) -> None:
        self.size = size
        self.verbose = verbose
        self.loop = loop
        self.timeouts = timeouts or DemoTimeouts()
        self.names = [f"peer-{index}" for index in range(1, peers + 1)]
        self.results = DemoResults(peer_names=list(self.names), file_size=size)
        self.processes: list[PeerProcess] = []
        self.join_errors: list[str] = []
        self._changed = asyncio.Event()
        self._started_at = time.monotonic()
        # What each peer (by name) has observed, keyed by the other peer's id.
        self._active: dict[str, set[str]] = {name: set() for name in self.names}
        self._departed: dict[str, set[str]] = {name: set() for name in self.names}
        self._chats: dict[str, dict[str, str]] = {name: {} for name in self.names}
        self._files: dict[str, Message] = {}
        self._file_started_at: float | None = None
        self._file_sha256: str | None = None
        self._progress: Progress | None = None
        self._progress_tasks: dict[tuple[str, str], TaskID] = {}

    # -- steps --------------------------------------------------------------------------------

    async def run(self) -> DemoResults:
        """Run every step; raises :class:`DemoFailure` at the first that fails."""
        self._started_at = time.monotonic()
        size_text = f"{self.size / MIB:g} MiB"
        stdout.print(
            f"[bold]peermesh demo[/]: {len(self.names)} peer processes, a {size_text} file, "
            "everything on 127.0.0.1",
            soft_wrap=True,
        )
        try:
            try:
                tracker = await serve_tracker("127.0.0.1", 0, interval=TRACKER_INTERVAL)
            except OSError as exc:
                raise DemoFailure(f"could not start the tracker on 127.0.0.1: {exc}") from None
            async with tracker:
                self._step("tracker", f"{tracker.url} (embedded, interval {TRACKER_INTERVAL:g} s)")
                try:
                    await self._start_peers()
                    await self._join(tracker.url)
                    await self._chat()
                    await self._send_file()
                    await self._ping()
                    await self._leave()
                finally:
                    await self._stop_peers()
        finally:
            self.results.total_seconds = time.monotonic() - self._started_at
        return self.results

    async def _start_peers(self) -> None:
        started = time.monotonic()
        # One by one, so that each process is tracked (and stopped later) as soon as it
        # exists; the slow part, importing aiortc, then runs in all of them at once.
        for name in self.names:
            try:
                process = await PeerProcess.spawn(name, self._on_event, self.verbose, self.loop)
            except OSError as exc:
                raise DemoFailure(f"could not start {name}: {exc}") from None
            self.processes.append(process)
        await self._wait_for(
            "the peer processes to start",
            self.timeouts.start,
            lambda: [f"{p.name} is not ready" for p in self.processes if p.peer_id is None],
        )
        self.results.start_seconds = time.monotonic() - started
        self._step(
            "started", f"{len(self.processes)} processes in {self.results.start_seconds:.2f} s"
        )

    async def _join(self, tracker_url: str) -> None:
        room_id = f"demo-{secrets.token_hex(4)}"
        started = time.monotonic()
        await asyncio.gather(
            *(
                p.request(
                    "join",
                    self.timeouts.join(len(self.processes)),
                    tracker_url=tracker_url,
                    app_id=protocol.APP_ID,
                    room_id=room_id,
                )
                for p in self.processes
            )
        )

        def missing() -> list[str]:
            return [
                f"{p.name} has not met {q.name}"
                for p in self.processes
                for q in self.processes
                if q is not p and q.peer_id not in self._active[p.name]
            ]

        try:
            await self._wait_for(
                "every peer to meet every other", self.timeouts.join(len(self.processes)), missing
            )
        except DemoFailure as exc:
            if self.join_errors:
                raise DemoFailure(f"{exc}; join errors: {'; '.join(self.join_errors)}") from None
            raise
        self.results.join_seconds = time.monotonic() - started
        self._step(
            "joined",
            f"room {room_id}: every peer sees every other after {self.results.join_seconds:.2f} s",
        )

    async def _chat(self) -> None:
        expected = len(self.processes) * (len(self.processes) - 1)
        self.results.chats_expected = expected
        await asyncio.gather(
            *(
                p.request(
                    "chat", self.timeouts.chat, text=_greeting(p.name), targets=self._others(p)
                )
                for p in self.processes
            )
        )

        def missing() -> list[str]:
            return [
                f"{p.name} has no greeting from {q.name}"
                for p in self.processes
                for q in self.processes
                if q is not p and self._chats[p.name].get(q.peer_id or "") != _greeting(q.name)
            ]

        try:
            await self._wait_for("every greeting to arrive", self.timeouts.chat, missing)
        finally:
            self.results.chats_delivered = expected - len(missing())
        self._step("chat", f"{self.results.chats_delivered}/{expected} greetings delivered")

    async def _send_file(self) -> None:
        sender, receivers = self.processes[0], self.processes[1:]
        self.results.file_sender = sender.name
        receiver_names = ", ".join(r.name for r in receivers)
        self._step("file", f"{sender.name} sends {self.size / MIB:g} MiB to {receiver_names}")
        deadline = time.monotonic() + self.timeouts.file(self.size)
        progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=20),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            console=stdout,
        )
        self._progress = progress
        for receiver in receivers:
            assert receiver.peer_id is not None
            self._progress_tasks["send", receiver.peer_id] = progress.add_task(
                f"{sender.name} -> {receiver.name} sent", total=self.size
            )
        for receiver in receivers:
            self._progress_tasks["receive", receiver.name] = progress.add_task(
                f"{receiver.name} <- {sender.name} received", total=self.size
            )

        def missing() -> list[str]:
            return [
                f"{r.name} has not received the file"
                for r in receivers
                if r.name not in self._files
            ]

        try:
            with progress:
                reply = await sender.request(
                    "send_file",
                    max(deadline - time.monotonic(), 0.0),
                    size=self.size,
                    targets=self._others(sender),
                )
                self._file_sha256 = str(reply.get("sha256"))
                await self._wait_for(
                    "every receiver to get the file", max(deadline - time.monotonic(), 0.0), missing
                )
        finally:
            self._progress = None
        for receiver in receivers:
            self._record_receipt(receiver)
        bad = [r.name for r in self.results.receivers.values() if not r.sha256_ok]
        if bad:
            raise DemoFailure(f"the file arrived corrupted at {', '.join(bad)} (sha256 mismatch)")

    def _record_receipt(self, receiver: PeerProcess) -> None:
        report = self._files[receiver.name]
        received_at = float(report["received_at"])
        started_at = self._file_started_at or received_at
        ok = (
            report.get("sha256") == report.get("expected_sha256") == self._file_sha256
            and report.get("size") == self.size
        )
        self.results.receivers[receiver.name] = ReceiverResult(
            receiver.name, self.size, received_at - started_at, ok
        )

    async def _ping(self) -> None:
        self.results.pings_expected = len(self.processes) * (len(self.processes) - 1)
        replies = await asyncio.gather(
            *(
                p.request("ping", self.timeouts.ping, targets=self._others(p))
                for p in self.processes
            )
        )
        for reply in replies:
            rtt = reply.get("rtt_ms")
            if isinstance(rtt, dict):
                self.results.ping_ms.extend(float(ms) for ms in rtt.values())
        median = statistics.median(self.results.ping_ms) if self.results.ping_ms else 0.0
        self._step("ping", f"{len(self.results.ping_ms)} pings, median {median:.1f} ms")

    async def _leave(self) -> None:
        count = len(self.processes)
        self.results.leaves_expected = count * (count - 1) // 2
        for index, leaver in enumerate(self.processes):
            await leaver.request("leave", self.timeouts.leave_each)
            stayers = self.processes[index + 1 :]

            def missing(
                leaver: PeerProcess = leaver, stayers: list[PeerProcess] = stayers
            ) -> list[str]:
                return [
                    f"{s.name} has not seen {leaver.name} leave"
                    for s in stayers
                    if leaver.peer_id not in self._departed[s.name]
                ]

            await self._wait_for(
                f"{leaver.name}'s departure to be seen", self.timeouts.leave_each, missing
            )
            self.results.leaves_seen += len(stayers)
        self._step(
            "left", f"{self.results.leaves_seen}/{self.results.leaves_expected} departures seen"
        )

    async def _stop_peers(self) -> None:
        await asyncio.gather(
            *(p.stop(self.timeouts.stop) for p in self.processes), return_exceptions=True
        )

    # -- events and waiting -------------------------------------------------------------------

    def _on_event(self, peer: PeerProcess, message: Message) -> None:
        """Record one event from ``peer`` and wake whoever waits for a change."""
        event = message.get("event")
        try:
            if event == "peer_joined":
                self._active[peer.name].add(protocol.field(message, "peer_id", str))
            elif event == "peer_left":
                peer_id = protocol.field(message, "peer_id", str)
                self._active[peer.name].discard(peer_id)
                self._departed[peer.name].add(peer_id)
            elif event == "join_error":
                self.join_errors.append(f"{peer.name}: {message.get('error')}")
            elif event == "chat":
                sender = protocol.field(message, "sender", str)
                self._chats[peer.name][sender] = protocol.field(message, "text", str)
            elif event == "file_sending":
                self._file_started_at = time.monotonic()
            elif event == "progress":
                self._show_progress(peer, message)
            elif event == "file_received":
                self._files[peer.name] = {**message, "received_at": time.monotonic()}
        except ProtocolViolation as exc:
            peer.stderr_tail.append(f"(bad event {event!r}: {exc})")
        self._changed.set()

    def _show_progress(self, peer: PeerProcess, message: Message) -> None:
        if self._progress is None:
            return
        direction = protocol.field(message, "direction", str)
        fraction = protocol.field(message, "fraction", float)
        key = (
            direction,
            protocol.field(message, "peer_id", str) if direction == "send" else peer.name,
        )
        task = self._progress_tasks.get(key)
        if task is not None:
            self._progress.update(task, completed=min(max(fraction, 0.0), 1.0) * self.size)

    async def _wait_for(self, what: str, timeout: float, missing: Callable[[], list[str]]) -> None:
        """Wait until ``missing()`` is empty; fail if ``timeout`` passes or a peer exits."""
        deadline = time.monotonic() + timeout
        while gaps := missing():
            dead = [p for p in self.processes if p.exited]
            if dead:
                raise DemoFailure(
                    "; ".join(f"{p.name} {p.exit_description}" for p in dead)
                    + f" while waiting for {what}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = ", ".join(gaps[:4]) + (
                    f" and {len(gaps) - 4} more" if len(gaps) > 4 else ""
                )
                raise DemoFailure(f"timed out after {timeout:g} s waiting for {what}: {shown}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- helpers ------------------------------------------------------------------------------

    def _others(self, peer: PeerProcess) -> list[str]:
        return [q.peer_id for q in self.processes if q is not peer and q.peer_id is not None]

    def _step(self, label: str, text: str) -> None:
        stdout.print(f"  [green]{label:<8}[/] {escape(text)}", soft_wrap=True)

    def print_peer_logs(self) -> None:
        """Show the last stderr lines of each peer process (after a failure)."""
        for peer in self.processes:
            if peer.stderr_tail and not self.verbose:
                stderr.print(f"[bold]last output of {peer.name}[/] ({peer.exit_description}):")
                for line in peer.stderr_tail:
                    stderr.print(f"  {escape(line)}", style="dim", soft_wrap=True)


def _greeting(name: str) -> str:
    return f"hello from {name}"


# -- the subcommand -------------------------------------------------------------------------


def register(subparsers: SubParsers, common: argparse.ArgumentParser) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run an offline demo: local tracker, peer processes, chat, file transfer, ping",
        description="Start a tracker on 127.0.0.1 and several peer processes that meet "
        "through it, chat, send a file, ping each other and leave; then print a summary. "
        "Needs no network beyond loopback. Exit status 0 when every step succeeded.",
    )
    parser.add_argument(
        "--peers",
        type=bounded_int(2, MAX_PEERS),
        default=DEFAULT_PEERS,
        help=f"number of peer processes, 2-{MAX_PEERS} (default {DEFAULT_PEERS})",
    )
    parser.add_argument(
        "--size-mib",
        type=bounded_float(0, MAX_SIZE_MIB),
        default=DEFAULT_SIZE_MIB,
        metavar="MIB",
        help=f"size of the random file sent, in MiB (default {DEFAULT_SIZE_MIB:g})",
    )
    parser.set_defaults(handler=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo, print the summary, return 0 if every step succeeded.

    Ctrl-C or SIGTERM stop it cleanly (peer processes included) with status 130.
    """
    demo = Demo(
        args.peers, max(1, int(args.size_mib * MIB)), verbose=args.verbose, loop=args.event_loop
    )
    body = asyncio.create_task(demo.run())
    stop = asyncio.create_task(wait_for_stop_signal())
    try:
        await asyncio.wait({body, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not body.done():
            body.cancel()
        await asyncio.gather(body, stop, return_exceptions=True)
    if body.cancelled():
        stdout.print(demo.results.table())
        print_error("demo interrupted")
        return EXIT_INTERRUPTED
    failure = body.exception()
    if failure is None:
        stdout.print(demo.results.table())
        stdout.print(f"[bold green]demo passed[/] in {_seconds(demo.results.total_seconds)}")
        return EXIT_OK
    if not isinstance(failure, DemoFailure):
        raise failure
    stdout.print(demo.results.table())
    demo.print_peer_logs()
    print_error(f"demo failed: {failure}")
    return EXIT_FAILURE
