"""``python -m bench.soak``: does peermesh give back what it takes, over time? (``make soak``)

Two phases, in one process, through an embedded tracker on loopback:

1. **cycles**: ``--cycles`` (500) times, two peers join a fresh room, exchange a 1 MiB
   message each way, and leave;
2. **room**: ``--peers`` (10) peers in one room for ``--minutes`` (10): every peer sends a
   chat line every second, and one peer (in turn) sends 1 MiB to all every 10 s.

After each phase, with every room left and a full garbage collection: asyncio tasks still
alive (besides this program's), open file descriptors against the baseline, and
``RTCPeerConnection`` objects still alive. During the room phase the RSS is sampled every
10 s and its slope fitted (least squares, MiB per minute, after the first minute).
Targets (issue 13): 0 tasks, fds back to baseline ± 5, slope ≤ 1 MiB/min, 0 connections.
The figures are printed and written to ``bench/results/soak-<time>.json``. Not a test: the
figures depend on the machine; run it through ``make soak`` (loopback-only namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiortc import RTCPeerConnection

from peermesh import Room
from peermesh._link import wait_links_closed
from peermesh.servers.tracker import TrackerServer, serve_tracker
from peermesh.torrent import join_room

from .report import RESULTS_DIR, machine_info

MIB = 1024 * 1024
LOOPBACK: dict[str, Any] = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}
APP_ID = "peermesh-soak"
JOIN_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 60.0


@dataclass
class Leftovers:
    """What is still held once every room is left and garbage is collected."""

    tasks: int
    fds_over_baseline: int
    peer_connections: int


@dataclass
class SoakResult:
    cycles: int = 0
    cycles_seconds: float = 0.0
    after_cycles: Leftovers | None = None
    room_peers: int = 0
    room_minutes: float = 0.0
    chat_lines_delivered: int = 0
    transfers_delivered: int = 0
    transfers_expected: int = 0
    rss_samples_mib: list[tuple[float, float]] = field(default_factory=list)
    rss_slope_mib_per_minute: float | None = None
    after_room: Leftovers | None = None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / MIB


def live_peer_connections() -> int:
    return sum(isinstance(obj, RTCPeerConnection) for obj in gc.get_objects())


async def leftovers(baseline_fds: int, own: set[asyncio.Task[Any]]) -> Leftovers:
    await wait_links_closed()
    for _ in range(3):  # let closing transports finish their last callbacks
        await asyncio.sleep(0.5)
        gc.collect()
    tasks = [t for t in asyncio.all_tasks() if t not in own and not t.done()]
    for task in tasks:
        logging.getLogger(__name__).warning("task still alive: %r", task)
    return Leftovers(len(tasks), open_fds() - baseline_fds, live_peer_connections())


def peer_id(index: int, prefix: str) -> str:
    return f"{prefix}{index:0{20 - len(prefix)}d}"


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def join_all(tracker: TrackerServer, room_id: str, ids: Sequence[str]) -> list[Room]:
    rooms = [
        await join_room(room_id, app_id=APP_ID, relay_urls=[tracker.url], peer_id=pid, **LOOPBACK)
        for pid in ids
    ]
    everyone = set(ids)
    await wait_for(
        lambda: all(set(r.get_peers()) == everyone - {r.self_id} for r in rooms),
        JOIN_TIMEOUT,
        f"{len(ids)} peers to meet in {room_id}",
    )
    return rooms


def collect(queue: asyncio.Queue[bytes]) -> Any:
    def on_message(data: bytes, peer: str, meta: object) -> None:
        queue.put_nowait(data)

    return on_message


async def cycles(tracker: TrackerServer, count: int, result: SoakResult) -> None:
    payload = os.urandom(MIB)
    started = time.monotonic()
    for cycle in range(count):
        a, b = await join_all(tracker, f"cycle-{cycle}", [peer_id(0, "a"), peer_id(1, "b")])
        got: asyncio.Queue[bytes] = asyncio.Queue()
        for room in (a, b):
            room.make_action("blob").on_message(collect(got))
        await asyncio.gather(
            a.make_action("blob").send(payload, b.self_id),
            b.make_action("blob").send(payload, a.self_id),
        )
        for _ in range(2):
            if await asyncio.wait_for(got.get(), TRANSFER_TIMEOUT) != payload:
                raise AssertionError(f"cycle {cycle}: the 1 MiB message arrived corrupted")
        await asyncio.gather(a.leave(), b.leave())
        result.cycles = cycle + 1
        if (cycle + 1) % 50 == 0:
            print(
                f"  {cycle + 1} cycles, {time.monotonic() - started:.0f} s, RSS {rss_mib():.0f} MiB"
            )
    result.cycles_seconds = time.monotonic() - started


async def busy_room(tracker: TrackerServer, peers: int, minutes: float, result: SoakResult) -> None:
    rooms = await join_all(tracker, "busy", [peer_id(i, "p") for i in range(peers)])
    result.room_peers = peers
    counts = {"chat": 0, "file": 0}

    def count(kind: str) -> Any:
        def on_message(data: object, peer: str, meta: object) -> None:
            counts[kind] += 1

        return on_message

    for room in rooms:
        room.make_action("chat").on_message(count("chat"))
        room.make_action("file").on_message(count("file"))
    payload = os.urandom(MIB)
    started = time.monotonic()
    end = started + minutes * 60
    second = 0
    while time.monotonic() < end:
        second += 1
        await asyncio.gather(
            *(room.make_action("chat").send(f"line {second} from {room.self_id}") for room in rooms)
        )
        if second % 10 == 0:
            sender = rooms[(second // 10) % peers]
            await sender.make_action("file").send(payload)
            result.transfers_expected += peers - 1
            result.rss_samples_mib.append((time.monotonic() - started, rss_mib()))
            print(f"  {second} s, RSS {rss_mib():.0f} MiB, {counts['chat']} chat lines")
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))
    await asyncio.sleep(2)  # the last messages in flight
    result.room_minutes = (time.monotonic() - started) / 60
    result.chat_lines_delivered = counts["chat"]
    result.transfers_delivered = counts["file"]
    await asyncio.gather(*(room.leave() for room in rooms))
    later = [(t / 60, rss) for t, rss in result.rss_samples_mib if t >= 60]
    if len(later) >= 2:
        result.rss_slope_mib_per_minute = statistics.linear_regression(
            [t for t, _ in later], [rss for _, rss in later]
        ).slope


async def soak(args: argparse.Namespace) -> SoakResult:
    result = SoakResult()
    own = {t for t in asyncio.all_tasks()}
    gc.collect()
    baseline_fds = open_fds()
    tracker = await serve_tracker("127.0.0.1", 0, interval=10)
    own |= {t for t in asyncio.all_tasks()}
    try:
        if args.cycles:
            print(f"cycles: {args.cycles} x (2 peers join, 1 MiB each way, leave)")
            await cycles(tracker, args.cycles, result)
            result.after_cycles = await leftovers(baseline_fds, own)
            print(f"  after cycles: {result.after_cycles}")
        if args.minutes:
            print(f"room: {args.peers} peers, {args.minutes} min, chat 1/s each, 1 MiB every 10 s")
            await busy_room(tracker, args.peers, args.minutes, result)
            result.after_room = await leftovers(baseline_fds, own)
            print(f"  after room: {result.after_room}")
    finally:
        await tracker.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(soak(args))
    print(json.dumps(asdict(result) | {"rss_samples_mib": len(result.rss_samples_mib)}, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"soak-{stamp}.json"
    machine = machine_info(["asyncio"])
    path.write_text(json.dumps({"machine": machine, "soak": asdict(result)}, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
