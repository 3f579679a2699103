"""``peermesh tracker``: serves on the port it prints, answers announces, stops cleanly on
SIGINT/SIGTERM, and reports a busy port in one line."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from peermesh.servers import serve_tracker

from ._run import PEERMESH, run_peermesh

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals"),
]

URL_LINE = re.compile(r"tracker listening on (ws://127\.0\.0\.1:(\d+))")
INFO_HASH = "cli-test-info-hash-1"
PEER_ID = "cli-test-peer-id-001"


class RunningTracker:
    """A ``peermesh tracker`` subprocess and the URL it printed."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, port: int) -> None:
        self.process = process
        self.url = url
        self.port = port

    async def stop(self, signum: signal.Signals) -> tuple[int, str, str]:
        """Send ``signum``; return the exit status and the rest of stdout and stderr."""
        self.process.send_signal(signum)
        out, err = await asyncio.wait_for(self.process.communicate(), 15)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli_tracker() -> AsyncIterator[RunningTracker]:
    process = await asyncio.create_subprocess_exec(
        *PEERMESH,
        "tracker",
        "--port",
        "0",
        "--interval",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first_line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = URL_LINE.search(first_line)
        assert match, f"unexpected first line: {first_line!r}"
        yield RunningTracker(process, match.group(1), int(match.group(2)))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_port_0_prints_the_real_port_and_answers_announces(
    cli_tracker: RunningTracker,
) -> None:
    assert cli_tracker.port != 0
    async with connect(cli_tracker.url) as ws:
        announce = {
            "action": "announce",
            "info_hash": INFO_HASH,
            "peer_id": PEER_ID,
            "numwant": 3,
            "left": 1,
            "offers": [],
        }
        await ws.send(json.dumps(announce))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["action"] == "announce"
    assert reply["info_hash"] == INFO_HASH
    assert reply["interval"] == 30
    assert reply["incomplete"] == 1
    status, out, err = await cli_tracker.stop(signal.SIGTERM)
    assert status == 0
    assert "tracker stopped (1 messages in" in out
    assert "Traceback" not in err


async def test_ctrl_c_stops_cleanly(cli_tracker: RunningTracker) -> None:
    status, out, err = await cli_tracker.stop(signal.SIGINT)
    assert status == 0
    assert "tracker stopped" in out
    assert err == ""


async def test_busy_port_is_one_clean_error_line() -> None:
    async with await serve_tracker(port=0) as occupant:
        result = await asyncio.to_thread(run_peermesh, "tracker", "--port", str(occupant.port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{occupant.port}: the port is already in use "
        "(pick another with --port, or --port 0 for a free one)"
    ]
    assert result.stdout == ""
