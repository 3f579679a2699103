"""``python -m bench.flood``: the CPU one flooding peer can make a peermesh peer spend.

A peermesh receiver runs in its own process (``bench.py_peer``, default limits); the
flooder is a peermesh room in this process that, once admitted, writes raw frames onto its
connection as fast as the connection takes them (with backpressure), for ``--seconds`` (5) per kind:

- ``idle``: nothing (the baseline);
- ``data``: one-chunk binary messages (16,348 bytes) on the action the receiver listens
  to (the normal data path, for reference);
- ``pings``: ``@_ping`` frames (answered at most ``Limits.max_control_rate`` per second);
- ``presence``: presence frames for rooms that do not exist (20 per second acted on);
- ``unclaimed``: 100-byte messages on an action nobody listens to (held, bounded, oldest
  dropped).

For each: frames written, and the receiver's CPU (user + system seconds over the interval,
as a share of one core). Not a test; run it through ``make bench``'s namespace:
``scripts/isolated .venv/bin/python -m bench.flood``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from peermesh._wire import actions as wire
from peermesh._wire.frames import encode_presence_frame, encode_room_frame
from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

from .peers import PeerProcess, PeerSpec
from .py_peer import BENCH_ACTION
from .scenarios import APP_ID, cpu_seconds

LOOPBACK: dict[str, Any] = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}
FLOODER_ID = "flooder0000000000000"


def _action_frame(token: str, name: str, payload: bytes) -> bytes:
    header = wire.encode_action_type(name) + b"\x00\x00\x01\xff"  # nonce 0, last, progress
    return encode_room_frame(token, header + payload)


async def flood(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    tracker = await serve_tracker("127.0.0.1", 0, interval=10)
    receiver = await PeerProcess.start(PeerSpec("python", "asyncio"))
    try:
        await receiver.command(
            "join", strategy="torrent", tracker_url=tracker.url, app_id=APP_ID, room_id="flood"
        )
        room = await join_room(
            "flood", app_id=APP_ID, relay_urls=[tracker.url], peer_id=FLOODER_ID, **LOOPBACK
        )
        deadline = time.monotonic() + 30
        while receiver.self_id not in room.get_peers():
            if time.monotonic() > deadline:
                raise TimeoutError("the receiver did not join")
            await asyncio.sleep(0.05)
        await receiver.wait_event("peer_joined", peer_id=FLOODER_ID, timeout=10)
        link = room._members[receiver.self_id].link
        token = room.token
        ping = room._control_frame(wire.PING)
        data = _action_frame(token, BENCH_ACTION, bytes(wire.MAX_CHUNK_PAYLOAD))
        small = _action_frame(token, "nobody-listens", bytes(100))
        counter = iter(range(10**9))
        kinds: dict[str, Callable[[], bytes] | None] = {
            "idle": None,
            "data": lambda: data,
            "pings": lambda: ping,
            "presence": lambda: encode_presence_frame(f"{next(counter):064x}", True),
            "unclaimed": lambda: small,
        }
        results = []
        for name in args.kinds:
            make = kinds[name]
            sent = 0
            cpu_before = cpu_seconds(receiver.pid)
            started = time.monotonic()
            end = started + args.seconds
            while time.monotonic() < end:
                if make is None:
                    await asyncio.sleep(0.1)
                    continue
                await link.send(make())  # as fast as the connection takes them
                sent += 1
            share = (cpu_seconds(receiver.pid) - cpu_before) / (time.monotonic() - started)
            print(f"{name:10} {sent:9} frames  receiver CPU {share:6.1%} of a core")
            results.append((name, sent, share))
            await asyncio.sleep(1)  # let the receiver drain before the next kind
        if receiver.find("peer_left", peer_id=FLOODER_ID):
            print("the receiver disconnected the flooder")
        await room.leave()
        return results
    finally:
        await receiver.close()
        await tracker.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--kinds",
        type=lambda text: text.split(","),
        default=["idle", "data", "pings", "presence", "unclaimed"],
    )
    asyncio.run(flood(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
