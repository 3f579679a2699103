"""Fixtures shared by the whole suite.

Every peer a test creates uses no STUN/TURN servers and loopback-only ICE candidates; the
suite itself runs inside a loopback-only network namespace (``scripts/isolated``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peermesh import Room
from peermesh._link import wait_links_closed
from peermesh.servers.tracker import TrackerServer, serve_tracker
from peermesh.torrent import join_room
from tests.rooms import LOOPBACK, JoinFactory

#: Every test fails if it leaks an asyncio task or future (see tests/asyncio_leaks.py).
pytest_plugins = ["tests.asyncio_leaks"]

# A failing test shows peermesh's own DEBUG log (pytest captures it per test); third-party
# loggers stay at WARNING so aioice/aiortc chatter does not drown it.
logging.getLogger("peermesh").setLevel(logging.DEBUG)


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    """Our embedded tracker on a free loopback port, advertising Trystero's 10 s minimum."""
    server = await serve_tracker("127.0.0.1", 0, interval=10)
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def join(tracker: TrackerServer) -> AsyncIterator[JoinFactory]:
    """``await join(peer_id, room_id="room", **kw)`` — a loopback-only torrent room on the
    test tracker; every room is left at teardown."""
    rooms: list[Room] = []

    async def factory(peer_id: str, room_id: str = "room", **kw: Any) -> Room:
        options = {"app_id": "peermesh-tests", "relay_urls": [tracker.url], **LOOPBACK, **kw}
        room = await join_room(room_id, peer_id=peer_id, **options)
        rooms.append(room)
        return room

    try:
        yield factory
    finally:
        await asyncio.gather(*(room.leave() for room in rooms), return_exceptions=True)
        # Links closed by the remote side's leave tear down in the background; let them
        # finish inside this test's event loop.
        await asyncio.sleep(0.05)
        await wait_links_closed()
