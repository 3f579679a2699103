"""``peermesh demo``: the whole offline tour end to end, its failure path and its parts."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import pytest
from rich.console import Console

from peermesh.cli import _demo_protocol as protocol
from peermesh.cli._demo import (
    MIB,
    PEER_MODULE,
    Demo,
    DemoFailure,
    DemoResults,
    DemoTimeouts,
    ReceiverResult,
)

from ._run import run_peermesh

pytestmark = pytest.mark.timeout(90)


def _assert_passed(stdout: str, peers: int) -> None:
    receivers = [f"peer-{n}" for n in range(2, peers + 1)]
    for name in receivers:
        assert re.search(rf"{name} received\s*│ [\d.]+ MB/s in [\d.]+ s, sha256 ok", stdout), name
    assert stdout.count("sha256 ok") == len(receivers)
    links = peers * (peers - 1)
    assert re.search(rf"chat messages delivered\s*│ {links}/{links}", stdout)
    assert re.search(rf"\({links} pings\)", stdout)
    departures = links // 2
    assert re.search(rf"leave seen\s*│ {departures}/{departures}", stdout)
    assert "demo passed" in stdout


def test_demo_runs_offline_and_passes() -> None:
    started = time.monotonic()
    result = run_peermesh("demo", "--size-mib", "1", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_passed(result.stdout, peers=3)
    assert "peer-1 -> peer-2 sent" in result.stdout  # the sender's progress bars
    assert "peer-2 <- peer-1 received" in result.stdout  # the receivers' progress bars
    assert result.stderr == ""
    assert elapsed < 30


def test_demo_with_two_peers() -> None:
    result = run_peermesh("demo", "--peers", "2", "--size-mib", "0.25", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_passed(result.stdout, peers=2)


async def test_a_failed_step_raises_and_stops_every_peer_process() -> None:
    demo = Demo(2, 1024, timeouts=DemoTimeouts(start=0.01, stop=5))
    with pytest.raises(DemoFailure, match=r"timed out after 0\.01 s waiting for the peer"):
        await demo.run()
    assert len(demo.processes) == 2
    assert all(p.process.returncode is not None for p in demo.processes)
    assert demo.results.total_seconds is not None


async def test_peer_process_exits_when_its_stdin_closes() -> None:
    """A demo peer must not outlive a parent that died (its stdin closes)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        PEER_MODULE,
        "--name",
        "peer-x",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        ready = protocol.decode_line(await asyncio.wait_for(process.stdout.readline(), 20))
        assert ready["event"] == "ready"
        assert len(protocol.field(ready, "peer_id", str)) == 20
        process.stdin.write(protocol.encode_line({"cmd": "nonsense", "id": 7}).encode())
        await process.stdin.drain()
        reply = protocol.decode_line(await asyncio.wait_for(process.stdout.readline(), 10))
        assert reply == {
            "event": "result",
            "id": 7,
            "ok": False,
            "error": "unknown command 'nonsense'",
        }
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_protocol_lines_round_trip_and_are_checked() -> None:
    line = protocol.encode_line({"event": "chat", "sender": "p", "text": "héllo\nworld"})
    assert line.endswith("\n")
    assert line.count("\n") == 1
    message = protocol.decode_line(line)
    assert protocol.field(message, "text", str) == "héllo\nworld"
    assert protocol.field({"fraction": 1}, "fraction", float) == 1.0
    for bad in ("[1, 2]", "{not json", b"\xff"):
        with pytest.raises(protocol.ProtocolViolation):
            protocol.decode_line(bad)
    with pytest.raises(protocol.ProtocolViolation):
        protocol.field({"id": True}, "id", int)
    with pytest.raises(protocol.ProtocolViolation):
        protocol.field({}, "text", str)


def test_summary_of_a_partial_run_marks_missing_steps() -> None:
    results = DemoResults(peer_names=["peer-1", "peer-2", "peer-3"], file_size=MIB)
    results.join_seconds = 0.5
    results.file_sender = "peer-1"
    results.receivers["peer-2"] = ReceiverResult("peer-2", MIB, 0.5, sha256_ok=False)
    console = Console(record=True, width=100)
    console.print(results.table())
    text = console.export_text()
    assert "0.50 s" in text
    assert "2.1 MB/s in 0.50 s, sha256 MISMATCH" in text
    assert re.search(r"peer-3 received\s*│ -", text)
    assert re.search(r"leave seen\s*│ -", text)


class _DemoWhosePeerCrashes(Demo):
    """Kills peer-2 right after the join step, as if it had crashed."""

    async def _chat(self) -> None:
        self.processes[1].process.kill()
        await super()._chat()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_crashed_peer_fails_the_demo_with_its_name() -> None:
    demo = _DemoWhosePeerCrashes(3, 1024)
    with pytest.raises(DemoFailure, match=r"peer-2 was killed by SIGKILL"):
        await demo.run()
    assert all(p.process.returncode is not None for p in demo.processes)
    assert demo.results.join_seconds is not None
