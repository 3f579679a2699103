"""Python driver for the Node interop harness (``jspeer.mjs`` and ``tracker.mjs``).

A :class:`JsPeer` is one real Trystero 0.25.4 peer running in a ``node jspeer.mjs`` child
process, commanded by JSON lines on its stdin and reporting JSON lines on its stdout (the
protocol is documented at the top of ``jspeer.mjs``)::

    async with await JsPeer.start() as peer:          # or: peer = await JsPeer.start()
        await peer.join("room-1", [tracker_url], app_id="peermesh-test", actions=["chat"])
        ev = await peer.wait_event("peer-join", timeout=15)
        await peer.send("chat", "hello", target=ev["peerId"])
        msg = await peer.wait_event(lambda e: e["event"] == "message" and e["action"] == "chat")
        data = decode_data(msg["data"])

Events are queued per peer (bounded); :meth:`JsPeer.wait_event` returns and *consumes* the
oldest queued event that matches, waiting for a new one if none does. Events that arrived
before the call count. Every event is also kept in a bounded, non-consuming
:attr:`JsPeer.history`.

:func:`start_bittorrent_tracker` runs ``tracker.mjs`` (npm ``bittorrent-tracker``, WebSocket
only, on 127.0.0.1) and yields its ``ws://`` URL.

:func:`deterministic_bytes` is the same generator as ``deterministicBytes`` in
``jspeer.mjs``: SHAKE-256 of ``"peermesh-deterministic-bytes:" + str(seed)``, ``length``
bytes long. Send it to a JS peer cheaply with :class:`GeneratedBytes` (the JS side generates
the bytes itself).

Every process is killed by :meth:`JsPeer.close` / on context exit, whatever happened; node
processes also exit by themselves when their stdin closes (i.e. when this Python process
dies), and an ``atexit`` hook kills any that are still registered.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "INTEROP_DIR",
    "GeneratedBytes",
    "JsHarnessSetupError",
    "JsPeer",
    "JsPeerCommandError",
    "JsPeerError",
    "JsPeerExited",
    "JsPeerTimeout",
    "JsRequestResult",
    "check_node_modules",
    "decode_data",
    "deterministic_bytes",
    "encode_data",
    "handshake_spec",
    "sha256_hex",
    "start_bittorrent_tracker",
]

log = logging.getLogger("peermesh.tests.jspeer")

INTEROP_DIR = Path(__file__).resolve().parent
BASE64_LIMIT = 64 * 1024
MAX_LINE_BYTES = 32 * 1024 * 1024  # longest stdout line we accept from node
EVENT_QUEUE_MAX = 20_000  # undelivered events kept per peer (oldest dropped beyond this)
HISTORY_MAX = 20_000  # events kept in .history
STDERR_MAX_LINES = 500  # stderr lines kept per process
STDERR_TAIL_LINES = 60  # stderr lines quoted in error messages
DEFAULT_TIMEOUT = 15.0

_REQUIRED_PACKAGES = (
    "@trystero-p2p/core",
    "@trystero-p2p/torrent",
    "@roamhq/wrtc",
    "bittorrent-tracker",
    "playwright-core",
)
#: Chromium for browserpeer.mjs (Debian's package; ``make test`` installs it).
CHROMIUM = Path(os.environ.get("PEERMESH_CHROMIUM", "/usr/bin/chromium"))

# ---------------------------------------------------------------------------------------
# errors


class JsPeerError(Exception):
    """Base class for harness errors."""


class JsHarnessSetupError(JsPeerError):
    """node or the npm packages are missing."""


class JsPeerCommandError(JsPeerError):
    """A command came back with ``ok: false``."""

    def __init__(self, message: str, *, cmd: dict[str, Any], error: str) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.error = error


class JsPeerTimeout(JsPeerError, TimeoutError):
    """A command or an awaited event did not arrive in time."""


class JsPeerExited(JsPeerError):
    """The node process exited (or its stdout closed)."""


# ---------------------------------------------------------------------------------------
# data helpers


def deterministic_bytes(length: int, seed: int | str) -> bytes:
    """``length`` pseudo-random bytes for ``seed``; identical to jspeer.mjs's generator."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"bad length {length!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | str):
        raise TypeError(f"seed must be an int or a str, got {seed!r}")
    if length == 0:
        return b""
    return hashlib.shake_256(f"peermesh-deterministic-bytes:{seed}".encode()).digest(length)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class GeneratedBytes:
    """Bytes that the JS peer generates itself: ``deterministic_bytes(length, seed)``."""

    length: int
    seed: int | str

    def materialize(self) -> bytes:
        return deterministic_bytes(self.length, self.seed)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.materialize())


def encode_data(value: Any) -> dict[str, Any]:
    """Python value → the harness's data encoding (``str``, bytes-like, GeneratedBytes, JSON)."""
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, GeneratedBytes):
        return {"type": "bytes", "length": value.length, "seed": value.seed}
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {"type": "bytes", "length": len(raw), "base64": base64.b64encode(raw).decode()}
    return {"type": "json", "value": value}


@dataclass(frozen=True)
class ReceivedBytes:
    """A binary payload received by a JS peer that was too large to be echoed back in full."""

    length: int
    sha256: str


def decode_data(enc: dict[str, Any]) -> Any:
    """Harness data encoding → ``str``, ``bytes``, :class:`ReceivedBytes` or a JSON value."""
    kind = enc.get("type")
    if kind == "string":
        return enc["value"]
    if kind == "json":
        return enc.get("value")
    if kind == "bytes":
        if "base64" in enc:
            raw = base64.b64decode(enc["base64"])
            if "sha256" in enc and sha256_hex(raw) != enc["sha256"]:
                raise ValueError("base64 payload does not match its sha256")
            return raw
        return ReceivedBytes(length=enc["length"], sha256=enc["sha256"])
    raise ValueError(f"unknown data encoding {enc!r}")


# ---------------------------------------------------------------------------------------
# process plumbing shared by JsPeer and the tracker

_live_processes: dict[int, asyncio.subprocess.Process] = {}


def _kill_leftovers() -> None:  # atexit: last resort, by pid, only our own children
    for pid, proc in list(_live_processes.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    _live_processes.clear()


atexit.register(_kill_leftovers)


def check_node_modules(cwd: Path = INTEROP_DIR) -> None:
    """Raise :class:`JsHarnessSetupError` with a helpful message if the harness can't run."""
    if shutil.which("node") is None:
        raise JsHarnessSetupError("`node` is not on PATH; the interop tests need Node.js 20+")
    missing = [
        p for p in _REQUIRED_PACKAGES if not (cwd / "node_modules" / p / "package.json").exists()
    ]
    if missing:
        raise JsHarnessSetupError(
            f"npm packages missing in {cwd / 'node_modules'}: {', '.join(missing)}. "
            "Run `make test` (it runs `npm ci` in tests/interop), or "
            "`npm ci --ignore-scripts` there by hand."
        )


def check_chromium() -> None:
    """Raise :class:`JsHarnessSetupError` if browserpeer.mjs has no Chromium to run."""
    if not CHROMIUM.exists():
        raise JsHarnessSetupError(
            f"{CHROMIUM} is missing; `make test` installs Debian's chromium "
            "(or set PEERMESH_CHROMIUM)"
        )


class _StderrBuffer:
    def __init__(self, label: str, max_lines: int = STDERR_MAX_LINES) -> None:
        self.label = label
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.dropped = 0

    def add(self, line: str) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1
        self.lines.append(line[:2000])
        log.debug("%s stderr: %s", self.label, line)

    def tail(self, n: int = STDERR_TAIL_LINES) -> str:
        lines = list(self.lines)[-n:]
        head = f"--- {self.label} stderr (last {len(lines)} lines"
        head += f", {self.dropped} older dropped) ---" if self.dropped else ") ---"
        return "\n".join([head, *lines]) if lines else f"--- {self.label} stderr: (empty) ---"


async def _pump_stderr(stream: asyncio.StreamReader, buf: _StderrBuffer) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # over-long line: skip what is buffered
            buf.add("<over-long stderr line dropped>")
            continue
        if not line:
            return
        buf.add(line.decode(errors="replace").rstrip("\n"))


async def _spawn(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None
) -> asyncio.subprocess.Process:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=str(cwd),
        env=full_env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=MAX_LINE_BYTES,
    )
    _live_processes[proc.pid] = proc
    return proc


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Close stdin (the scripts exit on EOF), wait ``grace`` s, then SIGKILL. Always reaps."""
    try:
        if proc.returncode is None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                proc.kill()
        await asyncio.shield(proc.wait())
    finally:
        if proc.returncode is None:  # cancelled mid-way: make sure it dies anyway
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        else:
            _live_processes.pop(proc.pid, None)


# ---------------------------------------------------------------------------------------
# JsPeer

EventMatch = str | Callable[[dict[str, Any]], bool]

_peer_counter = itertools.count(1)


def _make_predicate(match: EventMatch, fields: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    if isinstance(match, str):
        name = match

        def predicate(ev: dict[str, Any]) -> bool:
            return ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items())

        return predicate
    if fields:
        inner = match

        def predicate(ev: dict[str, Any]) -> bool:
            return inner(ev) and all(ev.get(k) == v for k, v in fields.items())

        return predicate
    return match


class JsPeer:
    """One ``node jspeer.mjs`` process running a real Trystero peer."""

    def __init__(
        self, proc: asyncio.subprocess.Process, *, name: str, queue_max: int = EVENT_QUEUE_MAX
    ) -> None:
        self._proc = proc
        self.name = name
        self.self_id: str = ""
        self.pid = proc.pid
        self.ready_event: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_MAX)
        self.dropped_events = 0
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_max)
        self._waiters: list[
            tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]
        ] = []
        self._pending: dict[int, tuple[dict[str, Any], asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)
        self._stderr = _StderrBuffer(name)
        self._exit_reason: str | None = None
        self._closed = False
        self._write_lock = asyncio.Lock()
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._stdout_task = asyncio.create_task(
            self._read_stdout(proc.stdout), name=f"{name}-stdout"
        )
        self._stderr_task = asyncio.create_task(
            _pump_stderr(proc.stderr, self._stderr), name=f"{name}-stderr"
        )

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        node: str = "node",
        env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
        script: str = "jspeer.mjs",
    ) -> JsPeer:
        """Spawn ``node <script>`` in ``cwd`` (default: this directory) and wait for ready.
        ``script`` is ``jspeer.mjs`` (Trystero on Node) or ``browserpeer.mjs`` (Trystero in
        headless Chromium, a subset of the commands)."""
        workdir = Path(cwd) if cwd is not None else INTEROP_DIR
        check_node_modules(workdir)
        if script == "browserpeer.mjs":
            check_chromium()
        path = workdir / script
        if not path.exists():
            path = INTEROP_DIR / script
        label = name or f"jspeer{next(_peer_counter)}"
        proc = await _spawn([node, str(path)], workdir, env)
        peer = cls(proc, name=label)
        try:
            ready = await peer.wait_event("ready", timeout=ready_timeout)
        except BaseException:
            await peer.close()
            raise
        peer.ready_event = ready
        peer.self_id = ready["selfId"]
        peer._stderr.label = f"{label} ({peer.self_id})"
        log.info("%s started: pid %s selfId %s", label, proc.pid, peer.self_id)
        return peer

    async def close(self, grace: float = 1.0) -> None:
        """Stop the process (polite EOF first, SIGKILL after ``grace`` s). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await _terminate(self._proc, grace)
        finally:
            for task in (self._stdout_task, self._stderr_task):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(self._stdout_task, self._stderr_task, return_exceptions=True)
            self._fail_all(JsPeerExited(f"{self.name} was closed"))

    async def __aenter__(self) -> JsPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def stderr_lines(self) -> list[str]:
        return list(self._stderr.lines)

    def stderr_tail(self, n: int = STDERR_TAIL_LINES) -> str:
        return self._stderr.tail(n)

    def __repr__(self) -> str:
        return f"<JsPeer {self.name} selfId={self.self_id or '?'} pid={self.pid}>"

    # -- stdout ----------------------------------------------------------------------------

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        reason = "stdout closed"
        try:
            while True:
                try:
                    line = await stream.readline()
                except ValueError:
                    self._stderr.add("<driver: over-long stdout line dropped>")
                    continue
                if not line:
                    break
                text = line.decode(errors="replace").strip()
                if not text:
                    continue
                try:
                    ev = json.loads(text)
                except json.JSONDecodeError:
                    self._stderr.add(f"<driver: non-JSON stdout line: {text[:300]!r}>")
                    continue
                if not isinstance(ev, dict):
                    self._stderr.add(f"<driver: non-object stdout line: {text[:300]!r}>")
                    continue
                self._dispatch(ev)
        except asyncio.CancelledError:
            reason = "driver stopped reading"
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 2.0)
            code = self._proc.returncode
            self._exit_reason = f"{reason}; exit code {code}" if code is not None else reason
            self._fail_all(
                JsPeerExited(
                    f"{self.name}: process ended ({self._exit_reason})\n{self.stderr_tail()}"
                )
            )

    def _dispatch(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "result":
            cmd_id = ev.get("id")
            entry = self._pending.pop(cmd_id, None) if isinstance(cmd_id, int) else None
            if entry is None:
                self._stderr.add(f"<driver: unmatched result {json.dumps(ev)[:300]}>")
                return
            cmd, fut = entry
            if fut.done():
                return
            if ev.get("ok"):
                fut.set_result(ev.get("value"))
            else:
                err = str(ev.get("error"))
                fut.set_exception(
                    JsPeerCommandError(
                        f"{self.name}: command {cmd.get('cmd')!r} failed: {err}", cmd=cmd, error=err
                    )
                )
            return
        if ev.get("event") == "fatal":
            log.warning("%s fatal event: %s", self.name, ev)
        self.history.append(ev)
        for i, (predicate, fut) in enumerate(self._waiters):
            if fut.done():
                continue
            try:
                matched = predicate(ev)
            except Exception as exc:  # a broken predicate should fail its waiter, not the reader
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(ev)
                del self._waiters[i]
                return
        if len(self._queue) == self._queue.maxlen:
            self.dropped_events += 1
        self._queue.append(ev)

    def _fail_all(self, exc: JsPeerError) -> None:
        for _cmd, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        for _pred, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    def _dead(self) -> JsPeerExited | None:
        if self._closed:
            return JsPeerExited(f"{self.name} is closed")
        if self._stdout_task.done():
            return JsPeerExited(
                f"{self.name}: process ended ({self._exit_reason})\n{self.stderr_tail()}"
            )
        return None

    # -- commands and events ---------------------------------------------------------------

    async def command(self, cmd: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Send one command, return its result value; raise JsPeerCommandError on ok:false."""
        if (dead := self._dead()) is not None:
            raise dead
        cmd_id = next(self._ids)
        msg = {**cmd, "id": cmd_id}
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cmd_id] = (msg, fut)
        try:
            line = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
            assert self._proc.stdin is not None
            async with self._write_lock:
                self._proc.stdin.write(line)
                await self._proc.stdin.drain()
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise JsPeerTimeout(
                f"{self.name}: no result for {_short(msg)} within {timeout} s\n{self.stderr_tail()}"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise JsPeerExited(
                f"{self.name}: cannot write command ({exc})\n{self.stderr_tail()}"
            ) from exc
        finally:
            self._pending.pop(cmd_id, None)

    async def wait_event(
        self, match: EventMatch, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """Return (and consume) the oldest queued event matching ``match`` (+ ``fields``).

        ``match`` is an event name (``"peer-join"``) or a predicate on the event dict; extra
        keyword arguments must equal the event's fields (``peerId="…"``, ``action="…"``; use
        a dict literal for keys that are not identifiers). Waits up to ``timeout`` s.
        """
        predicate = _make_predicate(match, fields)
        for i, ev in enumerate(self._queue):
            if predicate(ev):
                del self._queue[i]
                return ev
        if (dead := self._dead()) is not None:
            raise dead
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            recent = [_short(e) for e in list(self.history)[-8:]]
            raise JsPeerTimeout(
                f"{self.name}: no event matching {_describe(match, fields)} within {timeout} s; "
                f"recent events: {recent}\n{self.stderr_tail()}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def pending_events(
        self, match: EventMatch | None = None, **fields: Any
    ) -> list[dict[str, Any]]:
        """Queued (not yet consumed) events, optionally filtered; does not consume them."""
        if match is None and not fields:
            return list(self._queue)
        predicate = _make_predicate(match if match is not None else (lambda _e: True), fields)
        return [ev for ev in self._queue if predicate(ev)]

    def clear_events(self) -> None:
        self._queue.clear()

    def fatal_events(self) -> list[dict[str, Any]]:
        return [ev for ev in self.history if ev.get("event") == "fatal"]

    # -- helpers ---------------------------------------------------------------------------

    async def join(
        self,
        room_id: str,
        relay_urls: str | Iterable[str],
        *,
        app_id: str = "peermesh-interop",
        strategy: str = "torrent",
        password: str | None = None,
        actions: Iterable[str] = (),
        handshake_timeout_ms: int | None = None,
        passive: bool = False,
        handshake: dict[str, Any] | None = None,
        room: str | None = None,
        config: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """``joinRoom`` (returns at once; watch for ``peer-join`` / ``join-error`` events).

        ``room`` labels the room in this process (default ``"main"``); pass the same label to
        the other commands and filter events with ``room=``. ``passive`` joins as Trystero's
        passive peer. ``handshake`` scripts ``onPeerHandshake``; build it with
        :func:`handshake_spec`. Returns ``{selfId, roomId, strategy, room, isPassive}``.
        """
        urls = [relay_urls] if isinstance(relay_urls, str) else list(relay_urls)
        cmd: dict[str, Any] = {
            "cmd": "join",
            "strategy": strategy,
            "appId": app_id,
            "roomId": room_id,
            "relayUrls": urls,
            "actions": list(actions),
        }
        if password is not None:
            cmd["password"] = password
        if handshake_timeout_ms is not None:
            cmd["handshakeTimeoutMs"] = handshake_timeout_ms
        if passive:
            cmd["passive"] = True
        if handshake is not None:
            cmd["handshake"] = handshake
        if room is not None:
            cmd["room"] = room
        if config:
            cmd["config"] = config
        result: dict[str, Any] = await self.command(cmd, timeout=timeout)
        return result

    @staticmethod
    def _in_room(cmd: dict[str, Any], room: str | None) -> dict[str, Any]:
        if room is not None:
            cmd["room"] = room
        return cmd

    async def action(
        self, name: str, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        await self.command(self._in_room({"cmd": "action", "name": name}, room), timeout=timeout)

    _NO_METADATA: Any = object()

    async def send(
        self,
        action: str,
        data: Any,
        *,
        target: str | Sequence[str] | None = None,
        metadata: Any = _NO_METADATA,
        progress: bool = True,
        room: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """``action.send(data, {target, metadata, onProgress})``; returns ``{ms, targets, …}``.

        ``data``: ``str``, bytes-like (sent as base64), :class:`GeneratedBytes`, or any
        other JSON value (see :func:`encode_data`). ``ms`` is how long Trystero's send
        promise took (chunks handed to the data channel, not delivery). For bytes the
        result also has ``length`` and ``sha256``. Without ``target`` it goes to all peers.
        ``progress=False`` suppresses the ``send-progress`` events (one per 16 KiB chunk).
        """
        cmd: dict[str, Any] = {"cmd": "send", "action": action, "data": encode_data(data)}
        if target is not None:
            cmd["target"] = target if isinstance(target, str) else list(target)
        if metadata is not JsPeer._NO_METADATA:
            cmd["metadata"] = metadata
        if not progress:
            cmd["progress"] = False
        result: dict[str, Any] = await self.command(self._in_room(cmd, room), timeout=timeout)
        return result

    async def request_action(
        self,
        name: str,
        mode: str = "echo",
        *,
        error_text: str | None = None,
        delay_ms: int | None = None,
        room: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Make (or re-configure) request action ``name`` with an ``onRequest`` handler:
        ``"echo"`` (reply with the data), ``"error"`` (throw ``Error(error_text)``),
        ``"slow"`` (echo after ``delay_ms``) or ``"none"`` (no handler). Each request that
        reaches a handler is reported as a ``request`` event."""
        cmd: dict[str, Any] = {"cmd": "request-action", "name": name, "mode": mode}
        if error_text is not None:
            cmd["errorText"] = error_text
        if delay_ms is not None:
            cmd["delayMs"] = delay_ms
        await self.command(self._in_room(cmd, room), timeout=timeout)

    async def request(
        self,
        action: str,
        data: Any,
        peer_id: str,
        *,
        metadata: Any = _NO_METADATA,
        timeout_ms: int | None = None,
        room: str | None = None,
        timeout: float = 30.0,
    ) -> JsRequestResult:
        """``action.request(data, {target: peer_id, metadata, timeoutMs})`` on the JS side.

        Never raises for the request's own failure: the outcome is a :class:`JsRequestResult`
        (``ok`` and ``value``, or ``kind`` and ``message`` of Trystero's error)."""
        cmd: dict[str, Any] = {
            "cmd": "request",
            "action": action,
            "peerId": peer_id,
            "data": encode_data(data),
        }
        if metadata is not JsPeer._NO_METADATA:
            cmd["metadata"] = metadata
        if timeout_ms is not None:
            cmd["timeoutMs"] = timeout_ms
        raw: dict[str, Any] = await self.command(self._in_room(cmd, room), timeout=timeout)
        if raw.get("status") == "fulfilled":
            return JsRequestResult(ok=True, value=decode_data(raw["data"]), ms=raw.get("ms", 0.0))
        return JsRequestResult(
            ok=False, kind=raw.get("kind"), message=str(raw.get("message")), ms=raw.get("ms", 0.0)
        )

    async def release_handshake(
        self, peer_id: str, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Let a held (``hold=True``) handshake with ``peer_id`` finish."""
        cmd = {"cmd": "handshake-release", "peerId": peer_id}
        await self.command(self._in_room(cmd, room), timeout=timeout)

    async def ping(
        self, peer_id: str, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> float:
        cmd = {"cmd": "ping", "peerId": peer_id}
        return float(await self.command(self._in_room(cmd, room), timeout=timeout))

    async def peers(
        self, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[str]:
        return list(await self.command(self._in_room({"cmd": "peers"}, room), timeout=timeout))

    async def connections(
        self, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, int]:
        """``{peer_id: n}`` for the room's active peers; ``n`` numbers RTCPeerConnection
        objects within this process, so equal numbers in two rooms mean one shared connection."""
        cmd = self._in_room({"cmd": "connections"}, room)
        return dict(await self.command(cmd, timeout=timeout))

    async def status(
        self, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        cmd = self._in_room({"cmd": "status"}, room)
        result: dict[str, Any] = await self.command(cmd, timeout=timeout)
        return result

    async def media_add(
        self,
        name: str = "stream",
        *,
        audio: dict[str, Any] | bool = True,
        video: dict[str, Any] | bool = True,
        metadata: Any = _NO_METADATA,
        target: str | Sequence[str] | None = None,
        on_peer_join: bool = False,
        room: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """``room.addStream(stream, {target, metadata})`` with the synthetic stream ``name``
        (made on first use, reused after): ``audio`` a 48 kHz mono sine tone
        (``{"frequency": 660, "amplitude": 0.4}`` by default), ``video`` I420 frames
        (``{"width": 320, "height": 240, "fps": 30}`` by default) whose left half is dark
        and right half bright (the inverse of peermesh's ``PatternVideoTrack``). ``False``
        leaves a kind out. Returns once Trystero's ``addStream`` promises resolved (metadata
        sent, tracks added): ``{name, streamId, tracks: [{id, kind}], info}``. With
        ``on_peer_join`` the stream is added to each peer the moment it joins instead, and
        this returns at once."""
        cmd: dict[str, Any] = {"cmd": "media-add", "name": name, "onPeerJoin": on_peer_join}
        for kind, spec in (("audio", audio), ("video", video)):
            if spec is False:
                cmd[kind] = False
            elif isinstance(spec, dict):
                cmd[kind] = spec
        if metadata is not JsPeer._NO_METADATA:
            cmd["metadata"] = metadata
        if target is not None:
            cmd["target"] = target if isinstance(target, str) else list(target)
        result: dict[str, Any] = await self.command(self._in_room(cmd, room), timeout=timeout)
        return result

    async def media_remove(
        self,
        name: str = "stream",
        *,
        target: str | Sequence[str] | None = None,
        stop: bool = False,
        room: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``room.removeStream(stream, {target})``; ``stop`` also stops its sources and
        tracks (the stream cannot be added again then)."""
        cmd: dict[str, Any] = {"cmd": "media-remove", "name": name}
        if target is not None:
            cmd["target"] = target if isinstance(target, str) else list(target)
        if stop:
            cmd["stop"] = True
        await self.command(self._in_room(cmd, room), timeout=timeout)

    async def media_status(
        self, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """``{"local": {name: {streamId, tracks, info, sent, stopped}}, "remote": [per
        received track: trackId, kind, streamIds, peerIds, frames, and width/height/luma
        (video) or level/maxLevel/sampleRate (audio)], "senders": {peerId: [{kind,
        trackId}]}}`` (see jspeer.mjs)."""
        cmd = self._in_room({"cmd": "media-status"}, room)
        result: dict[str, Any] = await self.command(cmd, timeout=timeout)
        return result

    async def remote_tracks(
        self, *, peer_id: str | None = None, stream_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The ``remote`` part of :meth:`media_status`, optionally only tracks from
        ``peer_id`` and/or of stream ``stream_id``."""
        tracks: list[dict[str, Any]] = (await self.media_status())["remote"]
        return [
            t
            for t in tracks
            if (peer_id is None or peer_id in t["peerIds"])
            and (stream_id is None or stream_id in t["streamIds"])
        ]

    async def leave(self, *, room: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.command(self._in_room({"cmd": "leave"}, room), timeout=timeout)

    async def wait_message(
        self,
        action: str,
        *,
        peer_id: str | None = None,
        room: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """Next ``message`` event on ``action`` (from ``peer_id`` / in ``room`` if given)."""
        fields: dict[str, Any] = {"action": action}
        if peer_id is not None:
            fields["peerId"] = peer_id
        if room is not None:
            fields["room"] = room
        return await self.wait_event("message", timeout=timeout, **fields)


@dataclass(frozen=True)
class JsRequestResult:
    """Outcome of :meth:`JsPeer.request`: ``ok`` with the decoded ``value``, or not ``ok``
    with Trystero's error ``kind`` (``"rejected"``, ``"timeout"``, ``"disconnected"``, …)
    and ``message``. ``ms``: how long the request took on the JS side."""

    ok: bool
    value: Any = None
    kind: str | None = None
    message: str | None = None
    ms: float = 0.0


def handshake_spec(
    mode: str = "accept",
    *,
    send: Any = None,
    metadata: Any = None,
    receive: bool | None = None,
    hold: bool = False,
    message: str | None = None,
) -> dict[str, Any]:
    """A ``handshake`` script for :meth:`JsPeer.join` (see jspeer.mjs): optionally send
    ``send`` (with ``metadata``), receive one value if ``receive`` (default: for accept),
    wait for :meth:`JsPeer.release_handshake` if ``hold``, then accept, or reject with
    ``message``."""
    spec: dict[str, Any] = {"mode": mode}
    if send is not None:
        spec["send"] = encode_data(send)
        if metadata is not None:
            spec["metadata"] = metadata
    if receive is not None:
        spec["receive"] = receive
    if hold:
        spec["hold"] = True
    if message is not None:
        spec["message"] = message
    return spec


def _short(ev: dict[str, Any], limit: int = 200) -> str:
    text = json.dumps(ev, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(match: EventMatch, fields: dict[str, Any]) -> str:
    base = repr(match) if isinstance(match, str) else getattr(match, "__name__", "predicate")
    return base + (f" with {fields}" if fields else "")


# ---------------------------------------------------------------------------------------
# tracker


@contextlib.asynccontextmanager
async def start_bittorrent_tracker(
    *,
    port: int = 0,
    ws_interval: int = 10,
    cwd: str | os.PathLike[str] | None = None,
    node: str = "node",
    verbose: bool = False,
    ready_timeout: float = 20.0,
) -> AsyncIterator[str]:
    """Run npm ``bittorrent-tracker`` (WebSocket only) on 127.0.0.1; yield ``ws://127.0.0.1:N``.

    WebSocket clients are told to announce every ``ws_interval`` seconds.
    """
    workdir = Path(cwd) if cwd is not None else INTEROP_DIR
    check_node_modules(workdir)
    args = [
        node,
        str(INTEROP_DIR / "tracker.mjs"),
        "--port",
        str(port),
        "--ws-interval",
        str(ws_interval),
    ]
    if verbose:
        args.append("--verbose")
    proc = await _spawn(args, workdir, None)
    buf = _StderrBuffer(f"tracker pid {proc.pid}")
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(_pump_stderr(proc.stderr, buf))
    try:
        deadline = time.monotonic() + ready_timeout
        url = None
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JsPeerTimeout(
                    f"tracker did not report listening within {ready_timeout} s\n{buf.tail()}"
                )
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                await asyncio.sleep(0.05)  # let stderr drain
                raise JsPeerExited(
                    f"tracker exited before listening (code {proc.returncode})\n{buf.tail()}"
                )
            with contextlib.suppress(json.JSONDecodeError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("event") == "listening":
                    url = ev["url"]
        log.info("tracker listening at %s (pid %s)", url, proc.pid)
        yield url
    finally:
        await _terminate(proc, 1.0)
        stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stderr_task
