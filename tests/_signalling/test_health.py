"""Relay health is observable through peermesh.relay_health()."""

from __future__ import annotations

import socket

import peermesh
from peermesh import RelayState
from peermesh.servers.tracker import TrackerServer
from tests.rooms import JoinFactory, eventually, peer_ids


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_tracker_connections_report_their_health(
    tracker: TrackerServer, join: JoinFactory
) -> None:
    dead = f"ws://127.0.0.1:{_closed_port()}"
    await join(peer_ids(1, "h")[0], relay_urls=[tracker.url, dead])

    def states() -> dict[str, RelayState]:
        return {h.url: h.state for h in peermesh.relay_health()}

    def sent(url: str) -> int:
        return next(h.messages_sent for h in peermesh.relay_health() if h.url == url)

    await eventually(
        lambda: (
            states().get(tracker.url) is RelayState.OPEN
            and states().get(dead) is RelayState.BACKING_OFF
            and sent(tracker.url) >= 1
        ),
        5,
        "one tracker open and announced to, one backing off",
    )
    health = {h.url: h for h in peermesh.relay_health()}
    assert health[dead].last_error is not None
    assert "Connect" in health[dead].last_error or "refused" in health[dead].last_error.lower()
