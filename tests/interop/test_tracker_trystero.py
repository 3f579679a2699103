"""Two real Trystero 0.25.4 peers (torrent strategy, Node + @roamhq/wrtc) find each other
through peermesh's tracker and exchange a message over the data channel.

The second peer starts after the first one's warm-up burst (0/233/533/1333 ms), so, when
the first peer has the smaller id, the pair is found only by the first peer's *periodic*
announce, whose period Trystero takes from our advertised ``interval`` (10 s here, its
minimum). ``trystero_pair.mjs`` documents the Node side.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager

import pytest

from peermesh.servers import serve_tracker
from tests.interop.jspeer import INTEROP_DIR
from tests.interop.node_script import NodeScript, node_script

SCRIPT = INTEROP_DIR / "trystero_pair.mjs"

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def trystero_peer(url: str, room: str) -> AbstractAsyncContextManager[NodeScript]:
    return node_script(SCRIPT, "--url", url, "--room", room, "--timeout-ms", "30000")


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
