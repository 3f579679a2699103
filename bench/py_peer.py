"""A peermesh peer process for the benchmarks, driven by JSON lines.

    python -m bench.py_peer [--loop asyncio|uvloop]

It speaks the bench peer protocol documented in :mod:`bench.peers` (``bench/js_peer.mjs``
speaks the same one for Trystero). Everything is imported before ``ready`` is emitted, so
no import time is ever inside a measurement. Everything stays on loopback: no STUN servers
and ICE host candidates on 127.0.0.1 only. The process exits when stdin closes.

Unlike ``peermesh demo``'s peer, it timestamps a received message on entry to the message
callback and verifies the payload only afterwards, and it generates the payload before the
clock starts (``prepare``), so neither hashing nor generation is inside a measured interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

import peermesh
from peermesh import mqtt, nostr, relay, torrent

LOOPBACK_RTC_CONFIG: dict[str, Any] = {"iceServers": []}
LOOPBACK_ADDRESSES = ["127.0.0.1"]
#: The action every benchmark payload travels on.
BENCH_ACTION = "bench"
#: ``join``'s ``strategy`` field: the module whose ``join_room`` is used.
STRATEGIES = {"torrent": torrent, "nostr": nostr, "mqtt": mqtt, "ws-relay": relay}

Message = dict[str, Any]


def deterministic_bytes(length: int, seed: int | str) -> bytes:
    """SHAKE-256 of ``"peermesh-deterministic-bytes:" + str(seed)``, ``length`` bytes long
    (the same generator as ``bench/js_peer.mjs`` and ``tests/interop/jspeer.py``)."""
    if length == 0:
        return b""
    return hashlib.shake_256(f"peermesh-deterministic-bytes:{seed}".encode()).digest(length)


class Peer:
    """One benchmark peer: a room, one binary action, and the control channel."""

    def __init__(self, out: TextIO, loop_name: str) -> None:
        self._out = out
        self._loop_name = loop_name
        self._room: peermesh.Room | None = None
        self._action: peermesh.Action | None = None
        self._payload = b""
        self._commands: asyncio.Queue[Message | None] = asyncio.Queue()
        # `expect`: messages still to count silently, per sender
        self._expect: dict[str, _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control channel ----------------------------------------------------------------------

    def emit(self, event: str, **fields: object) -> None:
        line = json.dumps({"event": event, "t": time.time(), **fields}, separators=(",", ":"))
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self._out.write(line + "\n")
            self._out.flush()

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            if line.strip():
                try:
                    command = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(command, dict):
                    loop.call_soon_threadsafe(self._commands.put_nowait, command)
        loop.call_soon_threadsafe(self._commands.put_nowait, None)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_stdin, args=(loop,), daemon=True).start()
        self.emit(
            "ready",
            self_id=peermesh.self_id,
            pid=os.getpid(),
            runtime="python",
            version=sys.version.split()[0],
            loop=self._loop_name,
        )
        try:
            while (command := await self._commands.get()) is not None:
                if command.get("cmd") == "exit":
                    break
                task = asyncio.create_task(self._run(command))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._room is not None and not self._room.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._room.leave(), 2.0)

    async def _run(self, command: Message) -> None:
        handler = getattr(self, f"cmd_{command.get('cmd')}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown command {command.get('cmd')!r}")
            value = await handler(command)
        except Exception as exc:
            self.emit("result", id=command.get("id"), ok=False, error=repr(exc))
        else:
            self.emit("result", id=command.get("id"), ok=True, value=value)

    # -- commands -----------------------------------------------------------------------------

    async def cmd_join(self, command: Message) -> Message:
        if self._room is not None:
            raise RuntimeError("already joined")
        strategy = STRATEGIES.get(command.get("strategy", "torrent"))
        if strategy is None:
            raise ValueError(f"unknown strategy {command.get('strategy')!r}")
        self.emit("joining")
        room = await strategy.join_room(
            command["room_id"],
            app_id=command["app_id"],
            relay_urls=[command["tracker_url"]],
            rtc_config=LOOPBACK_RTC_CONFIG,
            ice_addresses=LOOPBACK_ADDRESSES,
        )
        self._room = room
        room.on_peer_join(lambda peer_id: self.emit("peer_joined", peer_id=peer_id))
        room.on_peer_leave(lambda peer_id: self.emit("peer_left", peer_id=peer_id))
        room.on_join_error(
            lambda ev: self.emit("join_error", peer_id=ev.peer_id, error=str(ev.error))
        )
        self._action = room.make_action(BENCH_ACTION)
        self._action.on_message(self._on_message)
        return {"self_id": room.self_id}

    async def cmd_prepare(self, command: Message) -> Message:
        started = time.perf_counter()
        self._payload = deterministic_bytes(int(command["size"]), command["seed"])
        digest = hashlib.sha256(self._payload).hexdigest()
        return {
            "size": len(self._payload),
            "sha256": digest,
            "ms": (time.perf_counter() - started) * 1000,
        }

    async def cmd_send(self, command: Message) -> Message:
        if self._action is None:
            raise RuntimeError("not joined")
        count = int(command.get("count", 1))
        self.emit("sending", size=len(self._payload), count=count)
        started = time.perf_counter()
        for _ in range(count):
            await self._action.send(self._payload, target=command["target"])
        return {"ms": (time.perf_counter() - started) * 1000}

    async def cmd_expect(self, command: Message) -> None:
        count = int(command["count"])
        if count < 1:
            raise ValueError("count must be at least 1")
        self._expect[command["peer_id"]] = _Batch(count, int(command["size"]))

    async def cmd_ping(self, command: Message) -> Message:
        if self._room is None:
            raise RuntimeError("not joined")
        target = command["target"]
        for _ in range(int(command.get("warmup", 0))):
            await self._room.ping(target)
        rtts = []
        for _ in range(int(command["count"])):
            started = time.perf_counter()
            await self._room.ping(target)
            rtts.append((time.perf_counter() - started) * 1000)
        return {"rtts_ms": rtts}

    async def cmd_collect(self, command: Message) -> None:
        gc.collect()

    async def cmd_leave(self, command: Message) -> None:
        if self._room is not None:
            await self._room.leave()

    # -- room callbacks -----------------------------------------------------------------------

    def _on_message(self, data: object, peer_id: str, metadata: object) -> None:
        size = len(data) if isinstance(data, bytes | bytearray | str) else -1
        batch = self._expect.get(peer_id)
        if batch is not None:
            batch.left -= 1
            batch.bytes += max(size, 0)
            batch.bad += size != batch.size
            if batch.left > 0:
                return
            del self._expect[peer_id]
            self.emit(
                "received_all", peer_id=peer_id, count=batch.count, bytes=batch.bytes, bad=batch.bad
            )
        else:
            self.emit("received", peer_id=peer_id, size=size)
        payload = data if isinstance(data, bytes) else str(data).encode()
        self.emit(
            "verified", peer_id=peer_id, size=size, sha256=hashlib.sha256(payload).hexdigest()
        )


class _Batch:
    """An ``expect`` in progress: ``count`` messages of ``size`` bytes from one peer."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self.left = count
        self.bytes = 0
        self.bad = 0


def _claim_stdout() -> TextIO:
    """Keep fd 1 for the protocol alone; anything else printed goes to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return open(protocol_fd, "w", encoding="utf-8", newline="\n", closefd=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.py_peer")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = _claim_stdout()
    peer = Peer(out, args.loop)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(peer.serve())
    else:
        asyncio.run(peer.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
