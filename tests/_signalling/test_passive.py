"""Passive (dormant) rooms on every strategy, Trystero 0.25.4 semantics (wire notes §2.1,
§2.2, §2.8, §3.2, §9.1): real rooms and real servers on 127.0.0.1, with a spy connection
on the topic servers that records what the rooms publish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import peermesh._signalling
import peermesh.mqtt
import peermesh.nostr
import peermesh.relay
import peermesh.torrent
from peermesh import Room
from peermesh._link import wait_links_closed
from peermesh._signalling import TopicRelay
from peermesh._signalling import torrent as torrent_signalling
from peermesh._signalling.mqtt import MqttRelay
from peermesh._signalling.nostr import NostrRelay
from peermesh._signalling.topic import TopicSignaller
from peermesh._signalling.torrent import TorrentSignaller
from peermesh._signalling.websocket import Backoff
from peermesh._signalling.ws_relay import WsRelay
from peermesh._wire.nostr import NostrKey
from peermesh._wire.signals import encode_announce, encode_answer
from peermesh._wire.topics import info_hash, root_topic, self_topic
from peermesh._wire.tracker import encode_passive_announce
from tests._signalling.test_torrent import RawTracker
from tests.brokers import live_server
from tests.rooms import LOOPBACK, eventually, peer_ids

pytestmark = pytest.mark.timeout(60)

APP = "peermesh-passive"
ROOM = "backup"
TOPIC_STRATEGIES = ["relay", "nostr", "mqtt"]
STRATEGIES = ["torrent", *TOPIC_STRATEGIES]
SPY_KEY = NostrKey.from_secret("03" * 32)
#: The grace in these tests (Trystero's is 7.533 s).
GRACE = 0.4

_JOINS: dict[str, Callable[..., Awaitable[Room]]] = {
    "torrent": peermesh.torrent.join_room,
    "relay": peermesh.relay.join_room,
    "nostr": peermesh.nostr.join_room,
    "mqtt": peermesh.mqtt.join_room,
}

Join = Callable[..., Awaitable[Room]]


class Spy:
    """A connection of its own to a topic server that records ``(topic, parsed message,
    text)`` for every topic it is told to watch."""

    def __init__(self, strategy: str, url: str) -> None:
        backoff = Backoff(initial=0.05, maximum=0.2)
        self.relay: TopicRelay
        if strategy == "relay":
            self.relay = WsRelay(url, backoff=backoff)
        elif strategy == "nostr":
            self.relay = NostrRelay(url, key=SPY_KEY, backoff=backoff)
        else:
            self.relay = MqttRelay(url, backoff=backoff)
        self.seen: list[tuple[str, dict[str, Any], str]] = []
        self.ready = asyncio.Event()
        self.relay.on_ready(self.ready.set)

    def _record(self, topic: str, text: str) -> None:
        self.seen.append((topic, json.loads(text), text))

    async def watch(self, *topics: str) -> None:
        for topic in topics:
            self.relay.subscribe(topic, self._record)
        await asyncio.wait_for(self.ready.wait(), 10)
        await asyncio.sleep(0.3)  # the subscriptions reach the server

    def sent_by(self, peer_id: str, topic: str | None = None) -> list[tuple[dict[str, Any], str]]:
        return [
            (message, text)
            for seen_topic, message, text in self.seen
            if message.get("peerId") == peer_id and topic in (None, seen_topic)
        ]


@pytest.fixture
def fast_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peermesh._signalling, "PASSIVE_GRACE", GRACE)


@pytest.fixture
async def env(
    request: pytest.FixtureRequest, fast_grace: None
) -> AsyncIterator[tuple[str, str, Join, Spy | None]]:
    """``(strategy, url, join, spy)`` for the ``strategy`` parameter: a live server, a room
    factory ``await join(peer_id, passive=…)`` (rooms left at teardown) and, for the topic
    strategies, a spy on that server."""
    strategy: str = request.param
    rooms: list[Room] = []
    async with live_server(strategy) as url:
        spy = Spy(strategy, url) if strategy != "torrent" else None

        async def join(peer_id: str, **kw: Any) -> Room:
            options = {**LOOPBACK, **kw}
            room = await _JOINS[strategy](
                ROOM, app_id=APP, relay_urls=[url], peer_id=peer_id, **options
            )
            rooms.append(room)
            return room

        try:
            yield strategy, url, join, spy
        finally:
            await asyncio.gather(*(room.leave() for room in rooms), return_exceptions=True)
            if spy is not None:
                await spy.relay.release()
            await asyncio.sleep(0.05)
            await wait_links_closed()


def met(a: Room, b: Room) -> bool:
    return b.self_id in a.get_peers() and a.self_id in b.get_peers()


def topic_signaller(room: Room) -> TopicSignaller:
    (sig,) = room._signallers
    assert isinstance(sig, TopicSignaller)
    return sig


def torrent_signaller(room: Room) -> TorrentSignaller:
    (sig,) = room._signallers
    assert isinstance(sig, TorrentSignaller)
    return sig


def topics_of(*peer_ids_: str) -> list[str]:
    return [root_topic(APP, ROOM), *(self_topic(APP, ROOM, p) for p in peer_ids_)]


# -- dormant ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", TOPIC_STRATEGIES, indirect=True)
async def test_a_dormant_topic_room_sends_nothing_and_listens_on_the_root_topic_only(
    env: tuple[str, str, Join, Spy | None],
) -> None:
    _, _, join, spy = env
    assert spy is not None
    (p_id,) = peer_ids(1, "p")
    await spy.watch(*topics_of(p_id))
    passive = await join(p_id, passive=True)
    assert passive.is_passive
    assert passive.dormant
    await asyncio.sleep(1.8)  # an active room sends its whole announce burst meanwhile
    assert spy.sent_by(p_id) == []
    sig = topic_signaller(passive)
    assert not sig._self_subscribed
    assert not sig._loops
    assert passive.dormant
    # A passive peer's announcement, or an answer, does not wake it…
    (x_id,) = peer_ids(1, "x")
    root = root_topic(APP, ROOM)
    await spy.relay.publish(root, encode_announce(x_id, passive=True))
    await spy.relay.publish(root, encode_answer(x_id, "1,2$y", "o" * 12))
    await asyncio.sleep(0.5)
    assert passive.dormant
    assert spy.sent_by(p_id) == []
    # …an active peer's announcement does: it subscribes its self topic and announces.
    await spy.relay.publish(root, encode_announce(x_id))
    await eventually(lambda: not passive.dormant, 5, "the passive room to wake")
    assert sig._self_subscribed
    await eventually(
        lambda: (
            ({"peerId": p_id, "passive": True}, f'{{"peerId":"{p_id}","passive":true}}')
            in spy.sent_by(p_id, root)
        ),
        5,
        "a passive announcement",
    )


async def test_a_dormant_torrent_room_announces_left_0_without_offers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torrent_signalling, "DORMANT_ANNOUNCE_INTERVAL", 0.3)
    (p_id,) = peer_ids(1, "q")
    async with RawTracker() as tracker:  # no interval: the dormant period alone applies
        room = await peermesh.torrent.join_room(
            ROOM, app_id=APP, relay_urls=[tracker.url], peer_id=p_id, passive=True, **LOOPBACK
        )
        try:
            await eventually(lambda: len(tracker.announces) >= 3, 5, "three dormant announces")
            expected = json.loads(encode_passive_announce(info_hash(APP, ROOM), p_id))
            for _, message in tracker.announces:
                assert message == expected
                assert list(message) == [
                    "action",
                    "info_hash",
                    "peer_id",
                    "left",
                    "numwant",
                    "offers",
                ]
            assert torrent_signaller(room)._offers == {}
            times = [t for t, _ in tracker.announces[:3]]
            assert times[2] - times[0] >= 0.5  # the dormant period, not the warm-up burst
            assert room.dormant
        finally:
            await room.leave()
            await wait_links_closed()


@pytest.mark.parametrize("env", STRATEGIES, indirect=True)
async def test_two_passive_peers_never_connect(env: tuple[str, str, Join, Spy | None]) -> None:
    strategy, _, join, _ = env
    a_id, p1_id, p2_id = peer_ids(3, "t")
    p1 = await join(p1_id, passive=True)
    p2 = await join(p2_id, passive=True)
    await asyncio.sleep(1.8)
    assert p1.dormant
    assert p2.dormant
    assert not p1._shared.links
    assert not p2._shared.links
    if strategy == "torrent":
        return  # trackers carry no passive flag: awake passive peers may meet (as Trystero)
    # Both wake for an active peer and meet it, but ignore each other's passive signals.
    active = await join(a_id)
    await eventually(lambda: met(active, p1) and met(active, p2), 20, "the active peer")
    await asyncio.sleep(2.0)  # every announce burst plays out
    assert p2_id not in p1.get_peers()
    assert p1_id not in p2.get_peers()
    assert p2_id not in p1._shared.links
    assert p1_id not in p2._shared.links


# -- waking and going dormant again -------------------------------------------------------------


@pytest.mark.parametrize("env", STRATEGIES, indirect=True)
async def test_a_passive_room_wakes_for_active_peers_and_goes_dormant_between_them(
    env: tuple[str, str, Join, Spy | None],
) -> None:
    _, _, join, spy = env
    # a < passive < b: the first active peer leads (we answer), the second follows (we offer).
    a_id, p_id, b_id = peer_ids(3, "w")
    if spy is not None:
        await spy.watch(*topics_of(a_id, p_id, b_id))
    passive = await join(p_id, passive=True)
    joined: list[str] = []
    left: list[str] = []
    passive.on_peer_join(joined.append)
    passive.on_peer_leave(left.append)
    await asyncio.sleep(0.5)
    assert passive.dormant

    a = await join(a_id)
    await eventually(lambda: met(a, passive), 20, "the passive peer to wake and meet a")
    assert not passive.dormant
    assert joined == [a_id]
    await a.leave()
    await eventually(lambda: left == [a_id], 10, "a to leave")
    await eventually(lambda: passive.dormant, 5 + GRACE, "the passive room to go dormant")

    if spy is not None:
        sent = spy.sent_by(p_id)
        # Awake, it announced on the root topic as a passive peer…
        assert ({"peerId": p_id, "passive": True}, f'{{"peerId":"{p_id}","passive":true}}') in [
            (m, t) for m, t in spy.sent_by(p_id, root_topic(APP, ROOM))
        ]
        # …and answered a's offer with the flag last, as Trystero writes it.
        answers = [m for m, _ in spy.sent_by(p_id, self_topic(APP, ROOM, a_id)) if "answer" in m]
        assert answers
        assert all(
            list(m) == ["peerId", "answer", "offerId", "passive"] and m["passive"] is True
            for m in answers
        )
        assert all(m.get("passive") is True for m, _ in sent if "offer" in m or "answer" in m)
        await asyncio.sleep(0.3)
        quiet_from = len(spy.seen)
        await asyncio.sleep(1.8)  # dormant: no announce burst any more
        assert [m for _, m, _ in spy.seen[quiet_from:] if m.get("peerId") == p_id] == []
        assert topic_signaller(passive)._loops == {}
    else:
        assert torrent_signaller(passive)._offers == {}

    b = await join(b_id)
    await eventually(lambda: met(b, passive), 20, "the passive peer to wake again and meet b")
    assert not passive.dormant
    assert joined == [a_id, b_id]
    if spy is not None:
        offers = [m for m, _ in spy.sent_by(p_id, self_topic(APP, ROOM, b_id)) if "offer" in m]
        assert offers
        assert all(
            list(m) == ["peerId", "offerId", "offer", "passive"] and m["passive"] is True
            for m in offers
        )
    await asyncio.sleep(GRACE * 3)
    assert not passive.dormant  # a connected peer keeps it awake past the grace
