"""Run a real Nostr relay (``nostr_relay.mjs``: npm ``@nostr-relay/core``) on 127.0.0.1.

::

    async with start_nostr_relay() as url:           # ws://127.0.0.1:N
        ...
    async with start_nostr_relay(port=n) as url:      # the same port again (a "restart")
        ...

The relay verifies every event's id and signature, broadcasts ephemeral events (all that
Trystero uses) to matching subscriptions and keeps others in memory. The node process is
killed on exit from the context, whatever happened. Nothing here skips: without Node or the
npm packages in ``tests/interop/node_modules`` it raises :class:`NostrRelaySetupError`
telling you to run ``npm ci`` (``make test`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["INTEROP_DIR", "NostrRelaySetupError", "check_nostr_node_modules", "start_nostr_relay"]

INTEROP_DIR = Path(__file__).resolve().parent
_REQUIRED_PACKAGES = ("@nostr-relay/core", "@nostr-relay/common", "ws")


class NostrRelaySetupError(RuntimeError):
    """node or the npm packages are missing, or the relay did not start."""


def check_nostr_node_modules(cwd: Path = INTEROP_DIR) -> None:
    """Raise :class:`NostrRelaySetupError` with a helpful message if the relay can't run."""
    if shutil.which("node") is None:
        raise NostrRelaySetupError("`node` is not on PATH; the Nostr relay tests need Node.js 20+")
    missing = [
        p for p in _REQUIRED_PACKAGES if not (cwd / "node_modules" / p / "package.json").exists()
    ]
    if missing:
        raise NostrRelaySetupError(
            f"npm packages missing in {cwd / 'node_modules'}: {', '.join(missing)}. "
            "Run `make test` (it runs `npm ci` in tests/interop), or "
            "`npm ci --ignore-scripts` there by hand."
        )


async def _drain(stream: asyncio.StreamReader, lines: deque[str]) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            continue
        if not line:
            return
        lines.append(line.decode("utf-8", "replace").rstrip())


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 1.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    with contextlib.suppress(ProcessLookupError):
        if proc.returncode is None:
            proc.kill()
    await asyncio.shield(proc.wait())


@contextlib.asynccontextmanager
async def start_nostr_relay(
    *, port: int = 0, verbose: bool = False, ready_timeout: float = 20.0, node: str = "node"
) -> AsyncIterator[str]:
    """Run ``nostr_relay.mjs`` on 127.0.0.1:``port`` (0: any free port); yield its URL."""
    check_nostr_node_modules()
    args = [node, str(INTEROP_DIR / "nostr_relay.mjs"), "--port", str(port)]
    if verbose:
        args.append("--verbose")
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=str(INTEROP_DIR),
        env=dict(os.environ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr: deque[str] = deque(maxlen=200)
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.ensure_future(_drain(proc.stderr, stderr))
    try:
        deadline = time.monotonic() + ready_timeout
        url: str | None = None
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NostrRelaySetupError(
                    f"nostr relay did not report listening within {ready_timeout} s\n"
                    + "\n".join(stderr)
                )
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                await asyncio.sleep(0.05)
                raise NostrRelaySetupError(
                    f"nostr relay exited before listening (code {proc.returncode})\n"
                    + "\n".join(stderr)
                )
            with contextlib.suppress(json.JSONDecodeError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("event") == "listening":
                    url = str(ev["url"])
        yield url
    finally:
        await _kill(proc)
        stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stderr_task
