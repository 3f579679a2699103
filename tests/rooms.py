"""Utilities for tests that run real rooms on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from peermesh import Room

LOOPBACK: dict[str, Any] = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}


def peer_ids(count: int, prefix: str = "") -> list[str]:
    """``count`` distinct, increasingly ordered 20-character peer ids."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [(prefix + alphabet[i] * 20)[:20] for i in range(count)]


async def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` is true, polling; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


JoinFactory = Callable[..., Awaitable[Room]]


async def connected_pair(join: JoinFactory, **kw: Any) -> tuple[Room, Room]:
    """Two rooms (peer ids ``0…`` and ``1…``) that see each other as active."""
    a_id, b_id = peer_ids(2)
    a = await join(a_id, **kw)
    b = await join(b_id, **kw)
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    return a, b
