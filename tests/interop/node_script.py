"""A ``node`` child process that prints one JSON event per line, for small one-off Node
scripts in the interop tests (the long-running Trystero peer is :mod:`jspeer` instead)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.jspeer import INTEROP_DIR, JsHarnessSetupError, check_node_modules

__all__ = ["NodeScript", "node_script"]

EventMatch = str | Callable[[dict[str, Any]], bool]


class NodeScript:
    """A running ``node SCRIPT ARGS…``; its stdout events are collected in :attr:`events`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr: deque[str] = deque(maxlen=50)
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, script: Path, *args: str) -> NodeScript:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(script),
            *args,
            cwd=INTEROP_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

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

    async def wait_for(self, match: EventMatch, timeout: float) -> dict[str, Any]:
        """The first event named ``match`` (or satisfying it); fails the test on timeout
        or when the script exits without one."""
        if isinstance(match, str):
            name = match

            def matches(event: dict[str, Any]) -> bool:
                return event.get("event") == name
        else:
            matches = match
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if matches(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._readers[0].done() and not self._changed.is_set()):
                raise AssertionError(
                    f"no matching event; events={self.events} stderr={list(self.stderr)}"
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
async def node_script(script: Path, *args: str) -> AsyncIterator[NodeScript]:
    """Run ``script``; fail (never skip) with a clear message if the harness is missing."""
    try:
        check_node_modules()
    except JsHarnessSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    running = await NodeScript.start(script, *args)
    try:
        yield running
    finally:
        await running.close()
