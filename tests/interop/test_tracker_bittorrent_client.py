"""bittorrent-tracker 11.2.3's own JS ``Client`` finds peers through peermesh's tracker.

The real proof is end to end: the clients' WebRTC peers (offer relayed by our tracker,
answer routed back by ``to_peer_id``) connect and exchange a greeting over the data channel.
``bt_tracker_client.mjs`` documents the Node side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peermesh.servers import TrackerServer, serve_tracker
from tests.interop.jspeer import INTEROP_DIR
from tests.interop.node_script import node_script

SCRIPT = INTEROP_DIR / "bt_tracker_client.mjs"

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

# Binary (latin-1) ids, as bittorrent-tracker's client sends them: 20 bytes -> 20 chars,
# many of them >= 0x80, which the tracker must keep and echo exactly.
INFO_HASH = bytes(range(0x80, 0x94)).hex()
PEER_1 = (b"-PM0001-" + bytes(range(0xE0, 0xEC))).hex()
PEER_2 = (b"-PM0001-" + bytes(range(0xF0, 0xFC))).hex()


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    # A long interval: the JS clients must find each other from their first announce.
    async with await serve_tracker(port=0, interval=120) as server:
        yield server


def _args(tracker: TrackerServer, *peer_ids: str) -> list[str]:
    return [
        "--url",
        tracker.url,
        "--info-hash",
        INFO_HASH,
        "--peer-ids",
        ",".join(peer_ids),
        "--timeout-ms",
        "25000",
    ]


def _is(name: str, **fields: object) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def _assert_connected(events: list[dict[str, Any]], client: int, remote: str) -> None:
    data = [e for e in events if e["event"] == "data" and e["client"] == client]
    assert data, events
    assert data[0]["remote"] == remote
    assert data[0]["data"] == f"hello from {remote}"
    connects = [e for e in events if e["event"] == "connect" and e["client"] == client]
    assert connects, events
    assert connects[0]["remote"] == remote
    assert not [e for e in events if e["event"] in ("warning", "error", "peer-error")], events


async def test_two_clients_in_one_process_connect(tracker: TrackerServer) -> None:
    """Both clients share one WebSocket (the library's socket pool)."""
    async with node_script(SCRIPT, *_args(tracker, PEER_1, PEER_2)) as node:
        await node.wait_for(_is("done"), 30)
        assert await asyncio.wait_for(node.proc.wait(), 5) == 0
    _assert_connected(node.events, 0, PEER_2)
    _assert_connected(node.events, 1, PEER_1)
    # Every announce response carried the swarm counts the JS client reports as 'update'.
    counts = {(e["complete"], e["incomplete"]) for e in node.events if e["event"] == "update"}
    assert counts <= {(0, 1), (0, 2)}
    assert (0, 2) in counts
    stats = tracker.stats()
    assert stats.offers_forwarded >= 1
    assert stats.answers_forwarded >= 1
    assert stats.dropped_malformed == 0


async def test_two_clients_in_two_processes_connect(tracker: TrackerServer) -> None:
    """Separate sockets; the second client joins after the first has announced."""
    async with node_script(SCRIPT, *_args(tracker, PEER_1)) as first:
        await first.wait_for(_is("update", incomplete=1), 15)
        async with node_script(SCRIPT, *_args(tracker, PEER_2)) as second:
            await second.wait_for(_is("done"), 30)
            await first.wait_for(_is("done"), 10)
    _assert_connected(first.events, 0, PEER_2)
    _assert_connected(second.events, 0, PEER_1)
    assert tracker.stats().answers_forwarded >= 1
    await _until(lambda: tracker.stats().peers == 0)  # both sockets closed -> forgotten


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
