"""Peer processes for the benchmarks, and the clock every figure is read from.

Two peer programs speak one protocol: ``bench/py_peer.py`` (peermesh, ``python -m
bench.py_peer --loop asyncio|uvloop``) and ``bench/js_peer.mjs`` (Trystero 0.25.4 on Node,
with the packages and RTC polyfill of ``tests/interop``). Each is a separate OS process that
has finished importing everything before it says ``ready``.

Protocol: one JSON object per line, commands on the child's stdin, events on its stdout
(stderr is diagnostics only). Every command carries an integer ``id`` and is answered by
one ``{"event": "result", "id", "ok", "value" | "error"}``. Commands run concurrently.

=========== ==================================== ====================================
``cmd``     fields                               result ``value``
=========== ==================================== ====================================
``join``    ``tracker_url`` (signalling server   ``{self_id}``; emits ``joining`` right
            URL, any strategy), ``app_id``,      before the library's join call
            ``room_id``, ``strategy`` (default
            ``torrent``; ``nostr``, ``mqtt``,
            ``ws-relay``)
``prepare`` ``size``, ``seed``                   ``{size, sha256, ms}``: the payload is
                                                 generated now, before any clock runs
``send``    ``target`` (peer id), ``count``      ``{ms}`` once the last of ``count``
            (default 1)                          sequential send calls resolved; emits
                                                 ``sending`` right before the first
``expect``  ``peer_id``, ``count``, ``size``     ``null`` at once; the next ``count``
                                                 messages from ``peer_id`` are counted
                                                 silently (no ``received``), the last
                                                 one emits ``received_all``
``ping``    ``target``, ``count``, ``warmup``    ``{rtts_ms: [...]}``: ``count`` sequential
                                                 ``room.ping`` calls (after ``warmup``
                                                 untimed ones), each timed in the peer
                                                 (``perf_counter`` / ``performance.now``)
``collect`` --                                   ``null`` after a full garbage collection
                                                 (Python ``gc.collect()``, Node ``gc()``)
``leave``   --                                   ``null``
``exit``    -- (no result; EOF on stdin is the same)
=========== ==================================== ====================================

Events, each with ``t`` = the child's wall clock in seconds (Python ``time.time()``, Node
``performance.timeOrigin + performance.now()``): ``ready {self_id, pid, runtime, version,
loop?, trystero?}``, ``joining``, ``peer_joined {peer_id}``, ``peer_left {peer_id}``,
``join_error {peer_id, error}``, ``sending {size, count}``, ``received {peer_id, size}``
(first thing in the message callback), ``received_all {peer_id, count, bytes, bad}`` (in its
place for the last message of an ``expect``; ``bad`` counts messages whose size was not
``size``), ``verified {peer_id, size, sha256}`` (right after either),
``fatal {error}`` (Node: uncaught exception).

The clock: :class:`PeerProcess` stamps every event with ``arrived`` = the parent's
``time.monotonic()`` when the line was read from the pipe. All figures are differences of
``arrived`` stamps, so they share one clock whatever runtime emitted them; the error is the
difference between two events' pipe-and-wake-up latencies (well under a millisecond on an
idle parent, a few ms at worst when the machine is saturated). The children's ``t`` stamps
are kept as a cross-check (they are two different wall-clock readings, exact only to the
agreement of Python's and Node's clocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BENCH_DIR",
    "INTEROP_DIR",
    "REPO_DIR",
    "Event",
    "PeerError",
    "PeerProcess",
    "PeerSpec",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
INTEROP_DIR = REPO_DIR / "tests" / "interop"

Event = dict[str, Any]
Runtime = Literal["python", "node"]

READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
STDERR_LINES = 200


class PeerError(Exception):
    """A peer process failed, answered ``ok: false``, or did not answer in time."""


@dataclass(frozen=True)
class PeerSpec:
    """Which program a peer runs: peermesh on an event loop, or Trystero on Node."""

    runtime: Runtime
    loop: str | None = None  # Python only: "asyncio" or "uvloop"

    @property
    def short(self) -> str:
        return "Py" if self.runtime == "python" else "Node"

    def argv(self) -> list[str]:
        if self.runtime == "python":
            return [sys.executable, "-m", "bench.py_peer", "--loop", self.loop or "asyncio"]
        return [
            "node",
            "--expose-gc",
            str(BENCH_DIR / "js_peer.mjs"),
            "--interop-dir",
            str(INTEROP_DIR),
        ]


_names = itertools.count(1)


class PeerProcess:
    """One running peer: send it commands, wait for its (``arrived``-stamped) events."""

    def __init__(self, spec: PeerSpec, proc: asyncio.subprocess.Process, name: str) -> None:
        self.spec = spec
        self.name = name
        self.pid = proc.pid
        self.self_id = ""
        self.ready: Event = {}
        self.events: list[Event] = []
        self._proc = proc
        self._ids = itertools.count(1)
        self._results: dict[int, asyncio.Future[Any]] = {}
        self._changed = asyncio.Event()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._ended = False
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_events(proc.stdout)),
            asyncio.create_task(self._read_stderr(proc.stderr)),
        ]

    @classmethod
    async def start(
        cls, spec: PeerSpec, *, name: str | None = None, ready_timeout: float = READY_TIMEOUT
    ) -> PeerProcess:
        """Spawn the peer and wait until it has imported everything and says ``ready``
        (:class:`PeerError` after ``ready_timeout`` seconds)."""
        proc = await asyncio.create_subprocess_exec(
            *spec.argv(),
            cwd=str(REPO_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        peer = cls(spec, proc, name or f"{spec.short.lower()}{next(_names)}")
        try:
            peer.ready = await peer.wait_event("ready", timeout=ready_timeout)
        except BaseException:
            await peer.close()
            raise
        peer.self_id = str(peer.ready["self_id"])
        return peer

    # -- events -------------------------------------------------------------------------------

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                arrived = time.monotonic()
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    self._stderr.append(f"<non-JSON stdout line {line[:200]!r}>")
                    continue
                if not isinstance(event, dict):
                    continue
                event["arrived"] = arrived
                if event.get("event") == "result":
                    future = self._results.pop(event.get("id", -1), None)
                    if future is not None and not future.done():
                        if event.get("ok"):
                            future.set_result(event.get("value"))
                        else:
                            future.set_exception(
                                PeerError(
                                    f"{self.name}: {event.get('error')}\n{self.stderr_tail()}"
                                )
                            )
                    continue
                self.events.append(event)
                self._changed.set()
        finally:
            self._ended = True
            self._changed.set()
            error = PeerError(f"{self.name} (pid {self.pid}) ended\n{self.stderr_tail()}")
            for future in self._results.values():
                if not future.done():
                    future.set_exception(error)
            self._results.clear()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    def stderr_tail(self, lines: int = 30) -> str:
        tail = list(self._stderr)[-lines:]
        return "\n".join([f"--- {self.name} stderr ---", *tail]) if tail else ""

    def mark(self) -> int:
        """A position in :attr:`events`; pass it as ``since`` to ignore older events."""
        return len(self.events)

    def find(self, name: str, since: int = 0, **fields: object) -> Event | None:
        """The first event ``name`` at or after index ``since`` whose fields match."""
        for event in itertools.islice(self.events, since, None):
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    async def wait_event(
        self, name: str, *, since: int = 0, timeout: float, **fields: object
    ) -> Event:
        """Wait for :meth:`find` to succeed; :class:`PeerError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (event := self.find(name, since, **fields)) is None:
            if self._ended:
                raise PeerError(f"{self.name} ended before {name!r}\n{self.stderr_tail()}")
            if (fatal := self.find("fatal", since)) is not None:
                raise PeerError(f"{self.name}: fatal {fatal.get('error')}\n{self.stderr_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerError(
                    f"{self.name}: no {name!r} {fields or ''} within {timeout:g} s\n"
                    f"{self.stderr_tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return event

    async def wait_any(
        self, predicate: Callable[[Event], bool], *, since: int = 0, timeout: float
    ) -> Event:
        """Like :meth:`wait_event` with an arbitrary predicate."""
        deadline = time.monotonic() + timeout
        while True:
            for event in itertools.islice(self.events, since, None):
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if self._ended or remaining <= 0:
                raise PeerError(f"{self.name}: no matching event\n{self.stderr_tail()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- commands -----------------------------------------------------------------------------

    async def command(self, cmd: str, *, timeout: float = COMMAND_TIMEOUT, **fields: Any) -> Any:
        """Send one command and return its result value."""
        if self._ended:
            raise PeerError(f"{self.name} has ended\n{self.stderr_tail()}")
        command_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[command_id] = future
        line = json.dumps({"cmd": cmd, "id": command_id, **fields}) + "\n"
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode())
            await self._proc.stdin.drain()
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise PeerError(
                f"{self.name}: no result for {cmd!r} within {timeout:g} s\n{self.stderr_tail()}"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise PeerError(f"{self.name}: cannot send {cmd!r}: {exc}") from exc
        finally:
            self._results.pop(command_id, None)

    async def close(self, grace: float = 3.0) -> None:
        """EOF on stdin (the peer exits by itself), SIGKILL after ``grace`` seconds."""
        proc = self._proc
        if proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)

    async def __aenter__(self) -> PeerProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
