"""``peermesh relay``: serves on the port it prints, relays published messages to every
subscriber, stops cleanly on SIGINT/SIGTERM, and reports a busy port in one line."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from peermesh.servers import serve_relay

from ._run import PEERMESH, run_peermesh

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals"),
]

URL_LINE = re.compile(r"relay listening on (ws://127\.0\.0\.1:(\d+))")
TOPIC = "cli-test-app@room"


class RunningRelay:
    """A ``peermesh relay`` subprocess and the URL it printed."""

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
async def cli_relay() -> AsyncIterator[RunningRelay]:
    process = await asyncio.create_subprocess_exec(
        *PEERMESH,
        "relay",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first_line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = URL_LINE.search(first_line)
        assert match, f"unexpected first line: {first_line!r}"
        yield RunningRelay(process, match.group(1), int(match.group(2)))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def recv_json(ws: ClientConnection) -> dict[str, str]:
    value = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(value, dict)
    return value


async def join_topic(ws: ClientConnection, marker: str) -> None:
    """Subscribe, then publish ``marker`` and wait for its echo: the subscription is live."""
    await ws.send(json.dumps({"type": "subscribe", "topic": TOPIC}))
    await ws.send(json.dumps({"type": "publish", "topic": TOPIC, "payload": marker}))
    assert await recv_json(ws) == {"topic": TOPIC, "payload": marker}


async def test_port_0_prints_the_real_port_and_relays_messages(cli_relay: RunningRelay) -> None:
    assert cli_relay.port != 0
    async with connect(cli_relay.url) as a, connect(cli_relay.url) as b:
        await join_topic(b, "b here")
        await join_topic(a, "a here")
        assert await recv_json(b) == {"topic": TOPIC, "payload": "a here"}
        payload = json.dumps({"peerId": "0123456789abcdefghij"}, separators=(",", ":"))
        await a.send(json.dumps({"type": "publish", "topic": TOPIC, "payload": payload}))
        expected = {"topic": TOPIC, "payload": payload}
        assert await recv_json(b) == expected
        assert await recv_json(a) == expected  # the sender hears itself
    status, out, err = await cli_relay.stop(signal.SIGTERM)
    assert status == 0
    assert "relay stopped (5 messages in, 5 out, 3 published)" in out
    assert "Traceback" not in err


async def test_ctrl_c_stops_cleanly(cli_relay: RunningRelay) -> None:
    status, out, err = await cli_relay.stop(signal.SIGINT)
    assert status == 0
    assert "relay stopped" in out
    assert err == ""


async def test_busy_port_is_one_clean_error_line() -> None:
    async with await serve_relay(port=0) as occupant:
        result = await asyncio.to_thread(run_peermesh, "relay", "--port", str(occupant.port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{occupant.port}: the port is already in use "
        "(pick another with --port, or --port 0 for a free one)"
    ]
    assert result.stdout == ""


def test_relay_is_listed_in_help() -> None:
    result = run_peermesh("relay", "--help")
    assert result.returncode == 0
    assert "--port" in result.stdout
    assert "8080" in result.stdout
