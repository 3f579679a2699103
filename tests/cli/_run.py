"""Helpers to run the ``peermesh`` command as a real subprocess in the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

#: The command as tests invoke it: the venv's interpreter running the CLI package.
PEERMESH = [sys.executable, "-m", "peermesh.cli"]
#: The installed console script next to the interpreter (absent outside a venv install).
CONSOLE_SCRIPT = Path(sys.executable).with_name("peermesh")


def run_peermesh(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``peermesh ARGS...`` to completion and return its captured output."""
    return subprocess.run(
        [*PEERMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def run_peermesh_async(
    *args: str, stop_after: float | None = None, timeout: float = 60.0
) -> tuple[int, str, str]:
    """Run ``peermesh ARGS...`` without blocking the event loop (which may be serving the
    test's tracker or relay); return (exit status, stdout, stderr). With ``stop_after``,
    send SIGINT after that many seconds. Output is one line per event however long
    (``COLUMNS=200``)."""
    process = await asyncio.create_subprocess_exec(
        *PEERMESH,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        if stop_after is not None:
            await asyncio.sleep(stop_after)
            process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
