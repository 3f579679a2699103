"""The WebTorrent tracker client (wire notes §3.2), through ``join_room``, our embedded
tracker and small raw trackers written here (real WebSocket servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.server import Server, ServerConnection, serve

from peermesh import JoinErrorEvent, Room
from peermesh._link import PeerLink, wait_links_closed
from peermesh._signalling import torrent
from peermesh._signalling.torrent import TorrentSignaller, TrackerConnection
from peermesh._signalling.websocket import Backoff, SocketState
from peermesh._wire.sealing import derive_key, seal, unseal
from peermesh._wire.topics import info_hash
from peermesh.servers.tracker import TrackerServer, serve_tracker
from peermesh.torrent import join_room
from tests.rooms import LOOPBACK, eventually, peer_ids

APP = "peermesh-tests"
ROOM = "room"
IH = info_hash(APP, ROOM)
KEY = derive_key(None, APP, ROOM)

Json = dict[str, Any]
AnnounceHook = Callable[["RawTracker", ServerConnection, Json], Awaitable[None]]


# -- helpers ----------------------------------------------------------------------------------


class RawTracker:
    """A minimal tracker written in the test: records every client message; if ``interval``
    is set, answers announces like a real tracker. Offers are relayed only by the test (or
    ``on_announce``); answers are routed by ``to_peer_id`` if ``relay_answers``."""

    def __init__(
        self,
        *,
        interval: object = None,
        on_announce: AnnounceHook | None = None,
        relay_answers: bool = False,
        swarm: int | None = None,
    ) -> None:
        self.interval = interval
        self.swarm = swarm  # peers reported as complete + incomplete (None: not reported)
        self.relay_answers = relay_answers
        self.on_announce = on_announce
        self.announces: list[tuple[float, Json]] = []
        self.answers: list[Json] = []
        self.sockets: dict[str, ServerConnection] = {}
        self.connections: dict[str, int] = {}
        self.port = 0
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawTracker:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def send(self, peer_id: str, message: Json | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.sockets[peer_id].send(text)

    async def _handle(self, ws: ServerConnection) -> None:
        seen: set[str] = set()
        async for text in ws:
            message = json.loads(text)
            peer_id = message["peer_id"]
            self.sockets[peer_id] = ws
            if peer_id not in seen:
                seen.add(peer_id)
                self.connections[peer_id] = self.connections.get(peer_id, 0) + 1
            if "answer" in message:
                self.answers.append(message)
                if self.relay_answers and message["to_peer_id"] in self.sockets:
                    answer = relayed(
                        "answer", peer_id, message["offer_id"], message["answer"]["sdp"]
                    )
                    await self.send(message["to_peer_id"], answer)
                continue
            self.announces.append((time.monotonic(), message))
            if self.interval is not None:
                reply = {"action": "announce", "interval": self.interval, "info_hash": IH}
                if self.swarm is not None:
                    reply |= {"complete": 0, "incomplete": self.swarm}
                await ws.send(json.dumps(reply))
            if self.on_announce is not None:
                task = asyncio.ensure_future(self.on_announce(self, ws, message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)


class Rooms:
    """Rooms joined through ``join_room`` on given trackers; all left at teardown."""

    def __init__(self) -> None:
        self.rooms: list[Room] = []

    async def join(self, peer_id: str, urls: list[str], room_id: str = ROOM, **kw: Any) -> Room:
        options = {**LOOPBACK, **kw}
        room = await join_room(room_id, app_id=APP, relay_urls=urls, peer_id=peer_id, **options)
        self.rooms.append(room)
        return room


@pytest.fixture
async def rooms() -> AsyncIterator[Rooms]:
    made = Rooms()
    try:
        yield made
    finally:
        await asyncio.gather(*(room.leave() for room in made.rooms), return_exceptions=True)
        await asyncio.sleep(0.05)
        await wait_links_closed()
    ids = {room.self_id for room in made.rooms}
    assert not [key for key in torrent._connections if key[1] in ids], "tracker sockets leaked"


def signaller(room: Room) -> TorrentSignaller:
    (sig,) = room._signallers
    assert isinstance(sig, TorrentSignaller)
    return sig


def connection(url: str, peer_id: str) -> TrackerConnection:
    return torrent._connections[(url, peer_id)]


def fast_reconnect() -> None:
    """Shorten every tracker socket's backoff so that reconnection tests stay quick."""
    for conn in torrent._connections.values():
        conn.socket._backoff = Backoff(initial=0.05, maximum=0.2)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pending_links(room: Room) -> list[PeerLink]:
    """Links of this identity that are neither open nor closed, other than the room's own
    unanswered offers (including one being created for the next announce)."""
    return [
        link
        for link in room._shared._info
        if not link.is_open
        and not link.is_closed
        and not (link.initiator and link.remote_id is None and not link.sdp_exchanged)
    ]


async def answer_offer(sealed_offer: str) -> tuple[RTCPeerConnection, str]:
    """Answer a peer's sealed offer with a plain aiortc connection; return it and the sealed
    answer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await pc.setRemoteDescription(RTCSessionDescription(unseal(KEY, sealed_offer), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc, seal(KEY, pc.localDescription.sdp)


def relayed(kind: str, peer_id: str, offer_id: str, sdp: object) -> Json:
    return {
        "action": "announce",
        kind: {"type": kind, "sdp": sdp},
        "offer_id": offer_id,
        "peer_id": peer_id,
        "info_hash": IH,
    }


# -- announces and offers -----------------------------------------------------------------------


async def test_every_announce_has_fresh_offers_that_expire_unless_answered(
    rooms: Rooms, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torrent, "OFFER_GRACE", 3.0)  # read when each announce is made
    a_id, b_id = "M" * 20, "N" * 20
    pcs: list[RTCPeerConnection] = []

    async def answer_first(tracker: RawTracker, ws: ServerConnection, message: Json) -> None:
        if len(tracker.announces) != 1:
            return
        first = message["offers"][0]
        pc, sealed = await answer_offer(first["offer"]["sdp"])
        pcs.append(pc)
        await ws.send(json.dumps(relayed("answer", b_id, first["offer_id"], sealed)))

    async with RawTracker(interval=10, on_announce=answer_first) as spy:
        room = await rooms.join(a_id, [spy.url])
        try:
            # The warm-up burst: announces at once, then after 0.233, 0.533 and 1.333 s.
            await eventually(lambda: len(spy.announces) >= 4, 5, "the warm-up announces")
            await eventually(lambda: room._shared.live_link(b_id) is not None, 10, "answer used")
        finally:
            for pc in pcs:
                await pc.close()

    messages = [m for _, m in spy.announces]
    for message in messages:
        assert list(message) == ["action", "info_hash", "peer_id", "numwant", "offers"]
        assert message["action"] == "announce"
        assert (message["info_hash"], message["peer_id"], message["numwant"]) == (IH, a_id, 3)
        assert len(message["offers"]) == 3
        for offer in message["offers"]:
            assert list(offer) == ["offer_id", "offer"]
            assert len(offer["offer_id"]) == 20
            assert offer["offer"]["type"] == "offer"
            sdp = unseal(KEY, offer["offer"]["sdp"])  # sealed with the room key
            assert sdp.startswith("v=0")
            assert "m=application" in sdp
            assert "a=candidate:" in sdp  # non-trickle: candidates inline
        assert len({o["offer_id"] for o in message["offers"]}) == 3

    # No offer is sent twice (one offer, one peer: no duplicate answers to waste), and
    # the offers of an announce are withdrawn OFFER_GRACE later unless answered: the one
    # answered became the connection, the others are gone.
    ids = [o["offer_id"] for m in messages for o in m["offers"]]
    assert len(ids) == len(set(ids))
    assert len(signaller(room)._offers) <= torrent.MAX_OFFERS
    first_ids = {o["offer_id"] for o in messages[0]["offers"]}
    await eventually(
        lambda: not first_ids & set(signaller(room)._offers), torrent.OFFER_GRACE + 2, "expiry"
    )


async def test_an_answer_to_an_offer_no_longer_held_is_counted_and_dropped(
    rooms: Rooms,
) -> None:
    a_id, b_id = "M" * 20, "N" * 20
    pcs: list[RTCPeerConnection] = []

    async def answer_unknown(tracker: RawTracker, ws: ServerConnection, message: Json) -> None:
        if len(tracker.announces) != 1:
            return
        pc, sealed = await answer_offer(message["offers"][0]["offer"]["sdp"])
        pcs.append(pc)
        # The same answer, but to an offer id this room never made (or has withdrawn).
        await ws.send(json.dumps(relayed("answer", b_id, "W" * 20, sealed)))

    async with RawTracker(interval=10, on_announce=answer_unknown) as spy:
        room = await rooms.join(a_id, [spy.url])
        try:
            await eventually(lambda: signaller(room).stale_answers == 1, 10, "the stale answer")
            assert room._shared.live_link(b_id) is None
            assert room.get_peers() == {}
            # The offer that was really answered is still outstanding: nothing consumed it.
            first_ids = {o["offer_id"] for o in spy.announces[0][1]["offers"]}
            assert first_ids <= set(signaller(room)._offers)
        finally:
            for pc in pcs:
                await pc.close()


async def test_relayed_offers_are_answered_to_the_sender_and_collisions_ignored(
    rooms: Rooms,
) -> None:
    a_id = "M" * 20
    smaller, larger = "C" * 20, "X" * 20
    async with RawTracker(interval=10) as spy:
        room = await rooms.join(a_id, [spy.url])
        await eventually(lambda: len(spy.announces) >= 1, 5, "first announce")
        offerers = []
        for offerer_id, offer_id in ((larger, "L" * 20), (smaller, "S" * 20)):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            offerers.append(pc)
            pc.createDataChannel("data")
            await pc.setLocalDescription(await pc.createOffer())
            message = relayed("offer", offerer_id, offer_id, seal(KEY, pc.localDescription.sdp))
            await spy.send(a_id, message)
            await spy.send(a_id, message)  # a duplicate within 4 s is dropped
        try:
            await eventually(lambda: len(spy.answers) >= 1, 5, "an answer")
            await asyncio.sleep(0.3)
            # Only the smaller id's offer is answered (the larger id answers, wire notes
            # §3.2), once, routed back by to_peer_id with the offer's id.
            (answer,) = spy.answers
            assert list(answer) == [
                "action",
                "info_hash",
                "peer_id",
                "answer",
                "offer_id",
                "to_peer_id",
            ]
            assert answer["info_hash"] == IH
            assert answer["peer_id"] == a_id
            assert answer["to_peer_id"] == smaller
            assert answer["offer_id"] == "S" * 20
            assert answer["answer"]["type"] == "answer"
            sdp = unseal(KEY, answer["answer"]["sdp"])
            await offerers[1].setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            await eventually(lambda: room._shared.live_link(smaller) is not None, 10, "link")
            assert room._shared.live_link(larger) is None
        finally:
            for pc in offerers:
                await pc.close()


async def test_an_ignored_offer_makes_one_prompt_announce(rooms: Rooms) -> None:
    """The collision rule ignores an offer from a larger id; we then announce at once so the
    tracker can hand our offers to that peer — but a flood of such offers is rate-limited."""
    a_id, larger = "M" * 20, "X" * 20
    async with RawTracker(interval=120) as spy:
        await rooms.join(a_id, [spy.url])
        await eventually(lambda: len(spy.announces) >= 4, 5, "the warm-up burst")
        await asyncio.sleep(0.2)
        before = len(spy.announces)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.createDataChannel("data")
            await pc.setLocalDescription(await pc.createOffer())
            for n in range(20):  # distinct offer ids: none is a duplicate
                offer_id = f"{n:02d}".ljust(20, "o")
                message = relayed("offer", larger, offer_id, seal(KEY, pc.localDescription.sdp))
                await spy.send(a_id, message)
            await eventually(lambda: len(spy.announces) > before, 5, "a prompt announce")
            await asyncio.sleep(0.2)
            assert len(spy.announces) == before + 1  # one per NUDGE_INTERVAL, not 20
            assert spy.announces[-1][1]["offers"]  # with our offers, for the tracker to relay
            assert spy.answers == []
        finally:
            await pc.close()


async def test_an_unused_answer_gives_way_to_a_newer_offer(
    rooms: Rooms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our answer to a smaller id's offer is never taken (that offer went to someone else
    first): a newer offer from that peer is answered once ANSWER_STALE has passed, not
    ignored until the 23 s connect timeout."""
    monkeypatch.setattr(torrent, "ANSWER_STALE", 0.5)
    a_id, smaller = "M" * 20, "C" * 20
    async with RawTracker(interval=120) as spy:
        await rooms.join(a_id, [spy.url])
        await eventually(lambda: len(spy.announces) >= 1, 5, "first announce")
        offerers: list[RTCPeerConnection] = []

        async def offer(n: int) -> None:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            offerers.append(pc)
            pc.createDataChannel("data")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = seal(KEY, pc.localDescription.sdp)
            await spy.send(a_id, relayed("offer", smaller, str(n) * 20, sdp))

        try:
            await offer(0)
            await eventually(lambda: len(spy.answers) == 1, 5, "the first answer")
            await offer(1)  # too soon: the first answer may still be in use
            await asyncio.sleep(0.3)
            assert len(spy.answers) == 1
            await asyncio.sleep(0.3)
            await offer(2)  # the first answer is now 0.6 s old and unused
            await eventually(lambda: len(spy.answers) == 2, 5, "a second answer")
            assert [a["offer_id"] for a in spy.answers] == ["0" * 20, "2" * 20]
        finally:
            for pc in offerers:
                await pc.close()


async def test_late_joiner_with_the_larger_id_meets_without_waiting_an_interval(
    rooms: Rooms,
) -> None:
    """Trystero makes such a newcomer wait for the incumbent's next announce (here 120 s);
    the incumbent's prompt announce lets it in at once."""
    incumbent, newcomer = peer_ids(2)
    async with await serve_tracker("127.0.0.1", 0, interval=120) as tracker:
        a = await rooms.join(incumbent, [tracker.url])
        await asyncio.sleep(2.5)  # past the warm-up burst (0, .233, .766, 2.1 s): next in 120 s
        b = await rooms.join(newcomer, [tracker.url])
        await eventually(
            lambda: newcomer in a.get_peers() and incumbent in b.get_peers(), 15, "meeting"
        )


@pytest.mark.slow
async def test_tracker_interval_below_10s_is_clamped_to_10s(rooms: Rooms) -> None:
    a_id = "M" * 20
    async with RawTracker(interval=1) as spy:
        room = await rooms.join(a_id, [spy.url])
        await eventually(lambda: len(spy.announces) >= 4, 5, "the warm-up announces")
        assert signaller(room)._intervals[spy.url] == 10.0
        burst_end = spy.announces[3][0]
        await eventually(lambda: len(spy.announces) >= 5, 12, "the first periodic announce")
    gap = spy.announces[4][0] - burst_end
    assert 9.5 < gap < 11.0, f"announced {gap:.2f} s after the burst, expected ~10 s"
    # Every announce has fresh offers: none is ever sent twice.
    ids = [o["offer_id"] for _, m in spy.announces for o in m["offers"]]
    assert len(ids) == len(set(ids)) == 15


async def test_a_swarm_with_missing_peers_is_announced_to_sooner(rooms: Rooms) -> None:
    """The tracker says 4 peers are in the swarm and we see none: after the warm-up burst
    the next announces come 2 s, 2 s and 4 s apart, not after the 120 s interval."""
    async with RawTracker(interval=120, swarm=4) as spy:
        await rooms.join("M" * 20, [spy.url])
        await eventually(lambda: len(spy.announces) >= 7, 12, "catch-up announces")
    times = [t for t, _ in spy.announces]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[3:])]
    assert [round(g) for g in gaps[:3]] == [2, 2, 4]


async def test_a_complete_room_announces_at_the_interval(rooms: Rooms) -> None:
    """The same with a swarm of 1 (only us): nothing to catch up on, so no announce
    follows the warm-up burst within 3 s."""
    async with RawTracker(interval=120, swarm=1) as spy:
        await rooms.join("M" * 20, [spy.url])
        await eventually(lambda: len(spy.announces) >= 4, 5, "the warm-up burst")
        await asyncio.sleep(3)
        assert len(spy.announces) == 4


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(9999, 120.0), (30, 30.0), (0, 10.0), (-5, 10.0), (0.5, 10.0)],
)
async def test_tracker_interval_is_clamped_per_tracker(
    rooms: Rooms, interval: float, expected: float
) -> None:
    async with RawTracker(interval=interval) as spy, RawTracker() as silent:
        room = await rooms.join("M" * 20, [spy.url, silent.url])
        sig = signaller(room)
        await eventually(lambda: spy.url in sig._intervals, 5, "interval applied")
        assert sig._intervals[spy.url] == expected
        assert silent.url not in sig._intervals  # stays at the 10 s default


async def test_tracker_failure_messages_are_only_logged(rooms: Rooms) -> None:
    async def fail(tracker: RawTracker, ws: ServerConnection, message: Json) -> None:
        smaller = "C" * 20
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.createDataChannel("data")
            await pc.setLocalDescription(await pc.createOffer())
            failure = relayed("offer", smaller, "F" * 20, seal(KEY, pc.localDescription.sdp))
            failure.update({"failure reason": "go away", "interval": 9999})
            await ws.send(json.dumps(failure))
        finally:
            await pc.close()

    async with RawTracker(on_announce=fail) as spy:
        room = await rooms.join("M" * 20, [spy.url])
        await eventually(lambda: len(spy.announces) >= 3, 5, "announces")
        await asyncio.sleep(0.3)
        # Trystero ignores a message with a failure reason, whatever else it carries.
        assert spy.url not in signaller(room)._intervals
        assert spy.answers == []


# -- several trackers, shared sockets, reconnection ----------------------------------------------


@pytest.fixture
async def tracker_pair() -> AsyncIterator[tuple[TrackerServer, TrackerServer]]:
    t1 = await serve_tracker("127.0.0.1", 0, interval=10)
    t2 = await serve_tracker("127.0.0.1", 0, interval=10)
    try:
        yield t1, t2
    finally:
        await t1.close()
        await t2.close()


async def test_peers_meet_through_any_common_tracker(
    rooms: Rooms, tracker_pair: tuple[TrackerServer, TrackerServer]
) -> None:
    t1, t2 = tracker_pair
    a_id, b_id = peer_ids(2)
    a = await rooms.join(a_id, [t1.url, t2.url])
    b = await rooms.join(b_id, [t2.url])
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 15, "meeting")
    # A announces on both trackers.
    await eventually(lambda: t1.stats().peers == 1 and t2.stats().peers == 2, 5, "swarms")
    assert connection(t1.url, a_id).socket.is_open
    assert connection(t2.url, a_id).socket.is_open
    assert 0 < await a.ping(b_id) < 1000


async def test_one_socket_per_tracker_and_identity_shared_by_rooms(
    rooms: Rooms, tracker_pair: tuple[TrackerServer, TrackerServer]
) -> None:
    tracker = tracker_pair[0]
    a_id, b_id = peer_ids(2)
    a1 = await rooms.join(a_id, [tracker.url], room_id="one")
    a2 = await rooms.join(a_id, [tracker.url], room_id="two")
    b1 = await rooms.join(b_id, [tracker.url], room_id="one")
    b2 = await rooms.join(b_id, [tracker.url], room_id="two")
    await eventually(
        lambda: (
            all(b_id in r.get_peers() for r in (a1, a2))
            and all(a_id in r.get_peers() for r in (b1, b2))
        ),
        15,
        "both rooms connected",
    )
    mine = sorted(key for key in torrent._connections if key[0] == tracker.url)
    assert mine == [(tracker.url, a_id), (tracker.url, b_id)]
    assert tracker.stats().connections == 2
    conn = connection(tracker.url, a_id)
    assert set(conn.rooms) == {info_hash(APP, "one"), info_hash(APP, "two")}
    # Leaving one room keeps the socket for the other; leaving both closes it.
    await a1.leave()
    assert torrent._connections.get((tracker.url, a_id)) is conn
    assert conn.socket.is_open
    assert set(conn.rooms) == {info_hash(APP, "two")}
    await a2.leave()
    assert (tracker.url, a_id) not in torrent._connections
    assert conn.socket.state is SocketState.CLOSED
    await eventually(lambda: tracker.stats().connections == 1, 5, "socket closed at tracker")


async def test_tracker_restart_keeps_peers_and_lets_new_ones_join(rooms: Rooms) -> None:
    tracker = await serve_tracker("127.0.0.1", 0, interval=10)
    port = tracker.port
    a_id, b_id, c_id = peer_ids(3)
    try:
        a = await rooms.join(a_id, [tracker.url])
        b = await rooms.join(b_id, [tracker.url])
        fast_reconnect()
        await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 15, "pair")
        a_sock = connection(tracker.url, a_id).socket

        await tracker.close()
        await eventually(lambda: a_sock.state is SocketState.BACKING_OFF, 5, "backing off")
        assert a_sock.last_error is not None
        await asyncio.sleep(0.5)  # a few refused reconnection attempts
        assert not a_sock.is_open
        assert 0 < await a.ping(b_id) < 1000  # the peers' own connection is unaffected
        assert 0 < await b.ping(a_id) < 1000

        tracker = await serve_tracker("127.0.0.1", port, interval=10)
        await eventually(lambda: a_sock.is_open, 5, "reconnected to the restarted tracker")
        # Reconnection re-announces at once, so the new tracker knows both peers again.
        await eventually(lambda: tracker.stats().peers == 2, 5, "re-announced")
        c = await rooms.join(c_id, [tracker.url])
        await eventually(lambda: set(c.get_peers()) == {a_id, b_id}, 15, "newcomer meets both")
        assert set(a.get_peers()) == {b_id, c_id}
    finally:
        await tracker.close()


# -- bad input ------------------------------------------------------------------------------


async def test_malformed_tracker_messages_are_counted_and_harmless(
    rooms: Rooms, tracker_pair: tuple[TrackerServer, TrackerServer]
) -> None:
    good = tracker_pair[0]
    a_id, b_id = "A" * 20, "B" * 20  # b answers a's offers (collision rule)
    forged = {name: ("!" * 19) + name for name in "abcdef"}  # all below a and b
    other_key = derive_key("not the password", APP, ROOM)
    bursts_sent: set[str] = set()

    async def misbehave(tracker: RawTracker, ws: ServerConnection, message: Json) -> None:
        peer_id = message["peer_id"]
        if peer_id in bursts_sent:
            return
        bursts_sent.add(peer_id)
        garbage: list[Json | str] = [
            "this is not JSON",
            "[1, 2, 3]",
            '"a string"',
            "null",
            json.dumps({"info_hash": IH, "padding": "x" * 100_000}),  # over 64 KiB
            {"info_hash": IH, "offer": {"type": "offer", "sdp": "x"}, "offer_id": "o" * 20},
            {"info_hash": IH, "offer": {"type": "offer", "sdp": "x"}, "peer_id": forged["f"]},
            {"info_hash": IH, "offer": 42, "offer_id": "o" * 20, "peer_id": forged["f"]},
            {"info_hash": IH, "interval": "soon"},
            {"info_hash": 7},
        ]
        for item in garbage:
            await tracker.send(peer_id, item)
        # Well-formed, but for a swarm this peer is not in: ignored, not counted.
        elsewhere = relayed("offer", forged["f"], "e" * 20, seal(KEY, "v=0\r\n"))
        await tracker.send(peer_id, {**elsewhere, "info_hash": "z" * 20})
        # Forged offers: (a) not sealed, (b) sealed with another password, (c) sealed with
        # the room key but not an SDP offer.
        await tracker.send(peer_id, relayed("offer", forged["a"], "1" * 20, "not sealed at all"))
        sealed_b = seal(other_key, "v=0\r\n")
        await tracker.send(peer_id, relayed("offer", forged["b"], "2" * 20, sealed_b))
        sealed_c = seal(KEY, "this is not SDP")
        await tracker.send(peer_id, relayed("offer", forged["c"], "3" * 20, sealed_c))
        if peer_id == b_id:
            # Forged answers to b's real offers (nobody else answers those: a < b).
            offers = message["offers"]
            wrong = seal(other_key, "v=0\r\n")
            await tracker.send(b_id, relayed("answer", forged["d"], offers[0]["offer_id"], wrong))
            junk = seal(KEY, "this is not SDP either")
            await tracker.send(b_id, relayed("answer", forged["e"], offers[1]["offer_id"], junk))

    errors: dict[str, list[JoinErrorEvent]] = {a_id: [], b_id: []}
    async with RawTracker(interval=10, on_announce=misbehave) as rogue:
        a = await rooms.join(a_id, [rogue.url, good.url])
        b = await rooms.join(b_id, [rogue.url, good.url])
        fast_reconnect()
        a.on_join_error(errors[a_id].append)
        b.on_join_error(errors[b_id].append)
        await eventually(lambda: bursts_sent == {a_id, b_id}, 5, "rogue bursts")
        await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 15, "pair")

        for room in (a, b):
            conn = connection(rogue.url, room.self_id)
            await eventually(lambda c=conn: c.malformed_messages == 10, 5, "malformed counted")
            assert conn.socket.is_open  # garbage below the size limit keeps the socket
        await eventually(lambda: len(errors[b_id]) == 3, 5, "b's join errors")
        await asyncio.sleep(0.5)  # anything else that was going to happen has happened

        def summary(peer_id: str) -> list[tuple[str, str | None]]:
            return sorted((e.error, e.peer_id) for e in errors[peer_id])

        offer_error = "incorrect room password when decrypting offer"
        answer_error = "incorrect room password when decrypting answer"
        assert summary(a_id) == [(offer_error, forged["a"]), (offer_error, forged["b"])]
        assert summary(b_id) == sorted(
            [(offer_error, forged["a"]), (offer_error, forged["b"]), (answer_error, forged["d"])]
        )
        assert all(e.app_id == APP and e.room_id == ROOM for e in errors[a_id] + errors[b_id])
        for room, undecryptable, unusable in ((a, 2, 1), (b, 3, 2)):
            sig = signaller(room)
            assert sig.undecryptable_signals == undecryptable
            assert sig.unusable_signals == unusable
            await eventually(lambda s=sig: all(t.done() for t in s._tasks), 2, "tasks done")
            assert pending_links(room) == [], "a forged signal left a connection pending"
            assert list(room._shared.links) == [b_id if room is a else a_id]
            assert set(room.get_peers()) == {b_id if room is a else a_id}
        assert rogue.answers == []  # no forged offer was answered
        # The rogue tracker is still used: announces keep going to it.
        count = len(rogue.announces)
        await eventually(lambda: len(rogue.announces) > count, 5, "announces after garbage")

        # A frame over the socket's 256 KiB limit closes that socket; it reconnects.
        a_sock = connection(rogue.url, a_id).socket
        await rogue.send(a_id, "x" * (300 * 1024))
        await eventually(lambda: rogue.connections.get(a_id) == 2, 5, "reconnected to rogue")
        assert a_sock.last_error is not None
        assert "1009" in a_sock.last_error
        await eventually(lambda: a_sock.is_open, 5, "open again")
        assert 0 < await a.ping(b_id) < 1000
        assert 0 < await b.ping(a_id) < 1000


async def test_crossing_offers_make_one_connection_by_the_collision_rule(rooms: Rooms) -> None:
    a_id, b_id = peer_ids(2)
    crossed = asyncio.Event()

    async def cross(tracker: RawTracker, ws: ServerConnection, message: Json) -> None:
        # Once both peers have announced, hand each the other's offer at the same moment,
        # before either could have connected: both see an offer while holding their own.
        firsts = {m["peer_id"]: m for _, m in tracker.announces}
        if len(firsts) < 2 or crossed.is_set():
            return
        crossed.set()
        for me, other in ((a_id, b_id), (b_id, a_id)):
            offer = firsts[other]["offers"][0]
            sdp = offer["offer"]["sdp"]
            await tracker.send(me, relayed("offer", other, offer["offer_id"], sdp))

    async with RawTracker(interval=10, on_announce=cross, relay_answers=True) as tracker:
        a, b = await asyncio.gather(
            rooms.join(a_id, [tracker.url]), rooms.join(b_id, [tracker.url])
        )
        await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 15, "pair")
        await asyncio.sleep(0.3)
        # Only the larger id answered the smaller id's offer.
        assert [(m["peer_id"], m["to_peer_id"]) for m in tracker.answers] == [(b_id, a_id)]
    for room, other in ((a, b_id), (b, a_id)):
        assert room._shared.counters.duplicate_links == 0
        assert [link for link in room._shared._info if link.is_open] == [room._shared.links[other]]
        assert pending_links(room) == []


async def test_simultaneous_joins_make_exactly_one_connection(
    rooms: Rooms, tracker_pair: tuple[TrackerServer, TrackerServer]
) -> None:
    tracker = tracker_pair[0]
    pairs = [peer_ids(2, prefix) for prefix in ("p", "q")]
    joined: dict[str, list[str]] = {}

    async def join(peer_id: str, room_id: str) -> Room:
        room = await rooms.join(peer_id, [tracker.url], room_id=room_id)
        joined[peer_id] = []
        room.on_peer_join(joined[peer_id].append)
        return room

    made = await asyncio.gather(
        *(join(peer_id, f"room-{i}") for i, pair in enumerate(pairs) for peer_id in pair)
    )
    by_id = {room.self_id: room for room in made}
    for x, y in pairs:
        await eventually(lambda x=x, y=y: joined[x] == [y] and joined[y] == [x], 15, "pair joined")
    # Let every warm-up announce and pending answer play out.
    await asyncio.sleep(2.5)
    for x, y in pairs:
        assert joined[x] == [y]
        assert joined[y] == [x]
        for me, other in ((x, y), (y, x)):
            shared = by_id[me]._shared
            assert list(shared.links) == [other]
            live = [link for link in shared._info if link.is_open]
            assert live == [shared.links[other]]
            assert pending_links(by_id[me]) == []
            assert set(by_id[me].get_peers()) == {other}
            # The collision rule means no second connection was even made.
            assert shared.counters.duplicate_links == 0


async def test_unreachable_trackers_cost_nothing(rooms: Rooms) -> None:
    urls = [f"ws://127.0.0.1:{closed_port()}", f"ws://127.0.0.1:{closed_port()}/announce"]
    started = time.monotonic()
    room = await rooms.join(peer_ids(1)[0], urls)
    assert time.monotonic() - started < 1.0
    sockets = [connection(url, room.self_id).socket for url in urls]
    await eventually(
        lambda: all(s.state is SocketState.BACKING_OFF for s in sockets), 5, "backing off"
    )
    assert all("ConnectionRefused" in (s.last_error or "") for s in sockets)
    cpu = time.process_time()
    await asyncio.sleep(2.0)
    used = time.process_time() - cpu
    assert used < 0.2, f"{used:.3f} s of CPU while no tracker was reachable"
    assert signaller(room)._offers == {}  # nothing was announced, so no offers were made
    started = time.monotonic()
    await room.leave()
    assert time.monotonic() - started < 1.0
    assert all(s.state is SocketState.CLOSED for s in sockets)
    assert not [key for key in torrent._connections if key[0] in urls]


async def test_leaving_while_offers_are_outstanding_leaves_nothing_behind(rooms: Rooms) -> None:
    async with RawTracker(interval=10) as spy:
        room = await rooms.join("M" * 20, [spy.url])
        await eventually(lambda: len(spy.announces) >= 1, 5, "announce")
        links = [offer.link for offer in signaller(room)._offers.values()]
        assert len(links) == 3
        await room.leave()
        assert all(link.is_closed for link in links)
        assert room._shared._info == {}
        count = len(spy.announces)
        await asyncio.sleep(0.8)
        assert len(spy.announces) == count  # announcing stopped
