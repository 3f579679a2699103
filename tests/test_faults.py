"""Faults on real networks, without mocks: datagrams dropped by the kernel (nftables, see
tests/nft.py), peers in their own processes killed with SIGKILL in the middle of a
transfer (``bench/py_peer.py``, driven by ``bench/peers.py``), and signalling servers in
their own processes killed and restarted on the same port.

The bounds asserted are the documented ones (README, "Faults"); the figures the tests print
(``pytest -s``) are what the README's table reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from bench.peers import PeerError, PeerProcess, PeerSpec
from bench.py_peer import BENCH_ACTION, deterministic_bytes

import peermesh
import peermesh.mqtt
import peermesh.nostr
import peermesh.relay
import peermesh.torrent
from peermesh import PeerUnavailableError, RelayState, Room
from peermesh._limits import budget_for
from peermesh._link import wait_links_closed
from peermesh._wire.liveness import CHECK_INTERVAL, DEAD_AFTER
from peermesh.servers.tracker import TrackerServer
from tests.brokers import MosquittoBroker, free_port
from tests.interop.nostr_relay import INTEROP_DIR, NostrRelaySetupError, check_nostr_node_modules
from tests.nft import drop_udp
from tests.rooms import LOOPBACK, JoinFactory, connected_pair, eventually, peer_ids

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024
APP = "peermesh-tests"
ROOM = "room"
#: A silent peer is seen gone within DEAD_AFTER + CHECK_INTERVAL (11 s); asserted with 4 s
#: of margin for a loaded machine.
GONE_WITHIN = DEAD_AFTER + CHECK_INTERVAL + 4


# -- random loss --------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("percent", "size"),
    # At 20 % a Python sender moves about 0.01-0.02 MiB/s (README, "Faults"): 16 MiB would
    # take 10-25 minutes, so the suite sends 64 KiB and the benchmark measures goodput.
    [(5, 16 * MIB), (20, 64 * 1024)],
)
async def test_an_action_arrives_intact_through_random_loss(
    join: JoinFactory, percent: int, size: int
) -> None:
    a, b = await connected_pair(join)
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    b.make_action("bulk").on_message(lambda data, *_: got.set_result(data))
    data = deterministic_bytes(size, percent)
    with drop_udp(percent) as rule:
        started = time.monotonic()
        await a.make_action("bulk").send(data, b.self_id)
        received = await got
        elapsed = time.monotonic() - started
        dropped = rule.dropped()
    print(f"{percent} % loss: {size / MIB:g} MiB in {elapsed:.1f} s, {dropped} datagrams dropped")
    assert received == data
    assert dropped > 0
    assert set(a.get_peers()) == {b.self_id}


# -- a peer process killed in the middle of a transfer ------------------------------------


@pytest.fixture
async def remote() -> AsyncIterator[PeerProcess]:
    """A peermesh peer in its own Python process (``bench/py_peer.py``)."""
    peer = await PeerProcess.start(PeerSpec("python", "asyncio"), name="remote")
    try:
        yield peer
    finally:
        await peer.close()


async def join_remote(join: JoinFactory, tracker: TrackerServer, remote: PeerProcess) -> Room:
    """Our room, connected to ``remote``'s in the same room."""
    await remote.command("join", tracker_url=tracker.url, app_id=APP, room_id=ROOM)
    room = await join(peer_ids(1)[0])
    await eventually(lambda: remote.self_id in room.get_peers(), 20, "the remote peer")
    await remote.wait_event("peer_joined", peer_id=room.self_id, timeout=20)
    return room


def on_leave(room: Room, peer_id: str) -> asyncio.Event:
    left = asyncio.Event()
    room.on_peer_leave(lambda gone: gone == peer_id and left.set())
    return left


async def test_a_send_to_a_killed_receiver_fails_once_liveness_gives_it_up(
    join: JoinFactory, tracker: TrackerServer, remote: PeerProcess
) -> None:
    room = await join_remote(join, tracker, remote)
    left = on_leave(room, remote.self_id)
    quarter = asyncio.Event()
    sending = asyncio.ensure_future(
        room.make_action(BENCH_ACTION).send(
            deterministic_bytes(64 * MIB, 1),
            remote.self_id,
            on_progress=lambda fraction, *_: fraction >= 0.25 and quarter.set(),
        )
    )
    await quarter.wait()
    os.kill(remote.pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(PeerUnavailableError):
        await sending
    elapsed = time.monotonic() - killed
    print(f"send raised PeerUnavailableError {elapsed:.1f} s after SIGKILL")
    assert elapsed < GONE_WITHIN
    assert left.is_set()
    assert remote.self_id not in room.get_peers()


async def test_a_killed_sender_is_reported_left_and_nothing_it_sent_is_held(
    join: JoinFactory, tracker: TrackerServer, remote: PeerProcess
) -> None:
    room = await join_remote(join, tracker, remote)
    sender = remote.self_id
    left = on_leave(room, sender)
    quarter = asyncio.Event()
    room.make_action(BENCH_ACTION).on_receive_progress(
        lambda fraction, peer_id, _: peer_id == sender and fraction >= 0.25 and quarter.set()
    )
    budget = budget_for(room.limits)
    await remote.command("prepare", size=64 * MIB, seed=1)
    sending = asyncio.ensure_future(remote.command("send", target=room.self_id))
    await quarter.wait()
    held = room._reassembler.buffered(sender), budget.held(sender)
    os.kill(remote.pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(PeerError):
        await sending  # the process is gone
    await left.wait()
    elapsed = time.monotonic() - killed
    print(f"held {held[0] / MIB:.1f} MiB for the sender; PeerLeft {elapsed:.1f} s after SIGKILL")
    assert 0 < held[0] <= held[1]
    assert room._reassembler.buffered(sender) == 0
    assert budget.held(sender) == 0
    assert elapsed < GONE_WITHIN


# -- all UDP blocked for 3 s --------------------------------------------------------------


async def test_a_transfer_survives_all_udp_blocked_for_3_s(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    left: list[str] = []
    for room in (a, b):
        room.on_peer_leave(left.append)
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    b.make_action("bulk").on_message(lambda data, *_: got.set_result(data))
    quarter = asyncio.Event()
    data = deterministic_bytes(4 * MIB, 1)
    sending = asyncio.ensure_future(
        a.make_action("bulk").send(
            data,
            b.self_id,
            on_progress=lambda fraction, *_: fraction >= 0.25 and quarter.set(),
        )
    )
    await quarter.wait()
    with drop_udp(100) as rule:
        await asyncio.sleep(3.0)  # the fault itself: how long the network is gone
        dropped = rule.dropped()
    restored = time.monotonic()
    await sending
    received = await got
    elapsed = time.monotonic() - restored
    rtt = await a.ping(b.self_id)
    print(f"{dropped} datagrams blocked; delivered {elapsed:.2f} s after, then ping {rtt:.1f} ms")
    assert received == data
    assert dropped > 0
    assert left == []
    assert set(a.get_peers()) == {b.self_id}
    assert set(b.get_peers()) == {a.self_id}


# -- signalling servers killed and restarted ----------------------------------------------


class ServerProcess:
    """A signalling server in its own process, SIGKILLed and started again on its port."""

    def __init__(self, argv: list[str], port: int, log: Path, cwd: Path | None = None) -> None:
        self.argv = argv
        self.port = port
        self.log = log
        self.cwd = cwd
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until its port accepts connections. (Its stdin stays
        open: the Nostr relay exits when it closes.)"""
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(f"{self.argv[:3]} exited:\n{self.log.read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.argv[:3]} did not listen on {self.port}") from None
                await asyncio.sleep(0.02)  # polling the port: nothing else says it is up
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                process.kill()
                await process.wait()
            assert process.stdin is not None
            process.stdin.close()


JOINS: dict[str, Callable[..., Awaitable[Room]]] = {
    "torrent": peermesh.torrent.join_room,
    "relay": peermesh.relay.join_room,
    "nostr": peermesh.nostr.join_room,
    "mqtt": peermesh.mqtt.join_room,
}


def server_process(strategy: str, workdir: Path) -> tuple[ServerProcess, str]:
    """The server ``strategy`` meets through, not yet started, and its URL."""
    log = workdir / f"{strategy}.log"
    if strategy == "mqtt":
        broker = MosquittoBroker(workdir, websockets=False)  # writes its configuration
        argv = [broker.executable, "-c", str(broker.config)]
        return ServerProcess(argv, broker.port, log), broker.mqtt_url
    port = free_port()
    cli = [sys.executable, "-m", "peermesh.cli"]
    cwd = None
    if strategy == "torrent":
        argv = [*cli, "tracker", "--port", str(port), "--interval", "10"]
    elif strategy == "relay":
        argv = [*cli, "relay", "--port", str(port)]
    else:
        try:
            check_nostr_node_modules()
        except NostrRelaySetupError as exc:
            pytest.fail(str(exc), pytrace=False)
        argv, cwd = ["node", str(INTEROP_DIR / "nostr_relay.mjs"), "--port", str(port)], INTEROP_DIR
    return ServerProcess(argv, port, log, cwd), f"ws://127.0.0.1:{port}"


@pytest.mark.parametrize("strategy", list(JOINS))
async def test_a_killed_signalling_server_comes_back_and_newcomers_meet_old_peers(
    strategy: str, tmp_path: Path
) -> None:
    server, url = server_process(strategy, tmp_path)
    rooms: list[Room] = []

    async def join(peer_id: str) -> Room:
        room = await JOINS[strategy](
            ROOM, app_id=APP, relay_urls=[url], peer_id=peer_id, **LOOPBACK
        )
        rooms.append(room)
        return room

    def states() -> set[RelayState]:
        return {h.state for h in peermesh.relay_health() if h.url == url}

    async def meet(*members: Room) -> None:
        ids = {room.self_id for room in members}
        await eventually(
            lambda: all(set(r.get_peers()) == ids - {r.self_id} for r in members), 30, "meeting"
        )

    a_id, b_id, c_id = peer_ids(3, "f")
    await server.start()
    try:
        a, b = await join(a_id), await join(b_id)
        await meet(a, b)
        await server.kill()
        killed = time.monotonic()
        await eventually(lambda: states() == {RelayState.BACKING_OFF}, 10, "backing off")
        noticed = time.monotonic() - killed
        assert all(h.last_error for h in peermesh.relay_health() if h.url == url)
        assert await a.ping(b_id) > 0  # the peers' own connection does not need the server

        await server.start()
        restarted = time.monotonic()
        await eventually(lambda: states() == {RelayState.OPEN}, 30, "reconnected")
        reconnected = time.monotonic() - restarted
        c = await join(c_id)
        await meet(a, b, c)
        met = time.monotonic() - restarted
        print(
            f"{strategy}: backing off {noticed:.2f} s after SIGKILL; reconnected "
            f"{reconnected:.2f} s after the restart; newcomer met both {met:.2f} s after it"
        )
        assert await c.ping(a_id) > 0
        assert await c.ping(b_id) > 0
    finally:
        await asyncio.gather(*(room.leave() for room in rooms), return_exceptions=True)
        await server.kill()
        await wait_links_closed()
