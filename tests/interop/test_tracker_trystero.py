"""Two real Trystero 0.25.4 peers (torrent strategy, Node + @roamhq/wrtc) find each other
through peermesh's tracker and exchange a message over the data channel.

The second peer starts after the first one's warm-up burst (0/233/533/1333 ms), so, when
the first peer has the smaller id, the pair is found only by the first peer's *periodic*
announce, whose period Trystero takes from our advertised ``interval`` (10 s here, its
minimum). ``trystero_pair.mjs`` documents the Node side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from peermesh.servers import serve_tracker

INTEROP_DIR = Path(__file__).resolve().parent
SCRIPT = INTEROP_DIR / "trystero_pair.mjs"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (INTEROP_DIR / "node_modules" / "@trystero-p2p" / "torrent").is_dir(),
        reason="run `npm ci` in tests/interop",
    ),
]


class NodeScript:
    """A ``node`` child process that prints one JSON event per line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr: deque[str] = deque(maxlen=50)
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def wait_for(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("event") == name:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._readers[0].done() and not self._changed.is_set()):
                raise AssertionError(
                    f"no {name!r} event; events={self.events} stderr={list(self.stderr)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def trystero_peer(url: str, room: str) -> AsyncIterator[NodeScript]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        "--url",
        url,
        "--room",
        room,
        "--timeout-ms",
        "30000",
        cwd=INTEROP_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    peer = NodeScript(proc)
    try:
        yield peer
    finally:
        await peer.close()


async def test_late_joining_trystero_peers_find_each_other_via_our_tracker() -> None:
    async with await serve_tracker(port=0, interval=10) as tracker:
        async with trystero_peer(tracker.url, "late-join") as first:
            first_id = (await first.wait_for("ready", 15))["selfId"]
            await asyncio.sleep(2.0)  # past the first peer's warm-up burst
            async with trystero_peer(tracker.url, "late-join") as second:
                second_id = (await second.wait_for("ready", 15))["selfId"]
                started = time.monotonic()
                # worst case: one periodic announce (10 s) plus connection set-up
                assert (await second.wait_for("join", 20))["peerId"] == first_id
                assert (await first.wait_for("join", 5))["peerId"] == second_id
                elapsed = time.monotonic() - started
                assert (await second.wait_for("message", 10))["data"] == f"hello from {first_id}"
                assert (await first.wait_for("message", 10))["data"] == f"hello from {second_id}"
                await first.wait_for("done", 5)
                await second.wait_for("done", 5)
        stats = tracker.stats()
    assert first_id != second_id
    assert elapsed < 15
    assert stats.offers_forwarded >= 1
    assert stats.answers_forwarded >= 1
    assert stats.dropped_malformed == 0
