"""Rooms between Python peers on loopback, through the embedded tracker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

import peermesh
from peermesh import (
    JoinErrorEvent,
    Limits,
    PeerUnavailableError,
    Room,
    RoomClosedError,
    UsageError,
)
from peermesh._limits import budget_for
from peermesh._link import PeerLink
from peermesh._wire import actions as wire
from peermesh._wire.frames import encode_presence_frame, encode_room_frame
from tests.rooms import JoinFactory, connected_pair, eventually, peer_ids


async def test_peers_join_and_late_listener_gets_replay(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    replayed: list[str] = []
    a.on_peer_join(replayed.append)
    assert replayed == [b.self_id]
    assert set(a.get_peers()) == {b.self_id}
    assert a.get_peers()[b.self_id].connectionState == "connected"


async def test_a_message_right_behind_the_peers_hsready_is_delivered(
    join: JoinFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer may send as soon as it has our ``@_hsready``, so its first message can be
    handled in the same step as its own ``@_hsready`` (here a's links hold that frame back
    until the next one arrives, then hand over both): the room admits the peer there and
    then, not later from its handshake task, and the message is delivered, not dropped."""
    a_id, b_id = peer_ids(2)
    real = PeerLink._on_message
    held: dict[PeerLink, bytes | str] = {}
    batched: set[PeerLink] = set()

    def batching(link: PeerLink, data: bytes | str) -> None:
        if link.remote_id == b_id and link not in batched:
            if isinstance(data, bytes) and wire.HSREADY.encode() in data:
                held[link] = data
                return
            if link in held:
                batched.add(link)
                real(link, held.pop(link))
        real(link, data)

    monkeypatch.setattr(PeerLink, "_on_message", batching)
    a = await join(a_id)
    got: list[object] = []
    a.make_action("hi").on_message(lambda data, peer_id, meta: got.append(data))
    b = await join(b_id)
    b.on_peer_join(lambda peer_id: b.make_action("hi").send("first", peer_id))
    await eventually(lambda: got == ["first"], 20, "b's first message")
    assert batched
    assert a.counters.dropped_while_pending == 0


async def test_text_json_and_bytes_with_metadata_and_progress(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    received: asyncio.Queue[tuple[object, str, object]] = asyncio.Queue()
    progress: list[float] = []
    b.make_action("data").on_message(lambda d, p, m: received.put_nowait((d, p, m)))
    b.make_action("data").on_receive_progress(lambda f, p, m: progress.append(f))

    send = a.make_action("data").send
    await send("héllo")
    assert await asyncio.wait_for(received.get(), 5) == ("héllo", a.self_id, None)
    await send({"n": [1, 2.5, None, True]}, metadata={"kind": "json"})
    assert await asyncio.wait_for(received.get(), 5) == (
        {"n": [1, 2.5, None, True]},
        a.self_id,
        {"kind": "json"},
    )

    blob = os.urandom(1024 * 1024 + 17)
    sent_progress: list[tuple[float, str]] = []
    progress.clear()
    await send(
        blob, metadata={"name": "f.bin"}, on_progress=lambda f, p, m: sent_progress.append((f, p))
    )
    data, sender, meta = await asyncio.wait_for(received.get(), 20)
    assert isinstance(data, bytes)
    assert hashlib.sha256(data).digest() == hashlib.sha256(blob).digest()
    assert (sender, meta) == (a.self_id, {"name": "f.bin"})
    chunks = wire.chunk_count(len(blob), True)
    assert len(sent_progress) == chunks
    assert sent_progress[-1] == (1.0, b.self_id)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert len(progress) >= chunks - 1


async def test_tuple_style_and_coroutine_callbacks(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def on_message(data: object, peer_id: str, metadata: object) -> None:
        await asyncio.sleep(0)
        got.set_result((data, peer_id))

    send, _on_message, _on_progress = a.make_action("tuple")
    _b_send, b_on_message, _ = b.make_action("tuple")
    b_on_message(on_message)
    await send([1, 2, 3])
    assert await asyncio.wait_for(got, 5) == ([1, 2, 3], a.self_id)


async def test_messages_before_a_handler_are_delivered_to_it(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    await a.make_action("early").send("first")
    await a.make_action("early").send("second")
    await asyncio.sleep(0.2)
    seen: list[object] = []
    b.make_action("early").on_message(lambda d, p, m: seen.append(d))
    assert seen == ["first", "second"]


async def test_targeted_send_reaches_only_the_target(join: JoinFactory) -> None:
    a_id, b_id, c_id = peer_ids(3)
    a, b, c = await join(a_id), await join(b_id), await join(c_id)
    await eventually(lambda: len(a.get_peers()) == 2 and len(c.get_peers()) == 2, 25, "mesh")
    got_b: list[object] = []
    got_c: list[object] = []
    b.make_action("t").on_message(lambda d, p, m: got_b.append(d))
    c.make_action("t").on_message(lambda d, p, m: got_c.append(d))
    await a.make_action("t").send("only c", target=c_id)
    await a.make_action("t").send("both", target=[b_id, c_id])
    await eventually(lambda: len(got_c) == 2, 5, "c's messages")
    await asyncio.sleep(0.1)
    assert got_b == ["both"]
    assert got_c == ["only c", "both"]


async def test_ping_both_ways(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    assert 0 < await a.ping(b.self_id) < 1000
    assert 0 < await b.ping(a.self_id) < 1000


async def test_leave_is_seen_and_connection_closes(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    left: list[str] = []
    b.on_peer_leave(left.append)
    own_leave: list[str] = []
    a.on_peer_leave(own_leave.append)
    pc = a.get_peers()[b.self_id]
    remote_pc = b.get_peers()[a.self_id]
    await a.leave()
    await eventually(lambda: left == [a.self_id], 2, "leave")
    assert b.get_peers() == {}
    await eventually(lambda: pc.connectionState == "closed", 5, "leaver's pc closed")
    # b is in no other room with a, so b closes its side too rather than keep it idle.
    await eventually(lambda: remote_pc.connectionState == "closed", 5, "remote pc closed")
    assert b._shared.links == {}
    assert own_leave == []  # leaving is not reported as everyone else leaving
    with pytest.raises(RoomClosedError):
        await a.make_action("x").send("after leave")
    await a.leave()  # idempotent


async def test_matching_password_connects(join: JoinFactory) -> None:
    a, b = await connected_pair(join, password="s3cret")
    assert await a.ping(b.self_id) > 0


async def test_mismatching_password_yields_join_error_and_no_peer(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    errors: list[JoinErrorEvent] = []
    a = await join(a_id, password="one")
    b = await join(b_id, password="two")
    a.on_join_error(errors.append)
    b.on_join_error(errors.append)
    await eventually(lambda: bool(errors), 15, "a join error")
    assert "incorrect room password" in errors[0].error
    assert errors[0].room_id == "room"
    assert errors[0].app_id == "peermesh-tests"
    await asyncio.sleep(0.5)
    assert a.get_peers() == {}
    assert b.get_peers() == {}


async def test_send_rejects_bad_data_and_unknown_targets(join: JoinFactory) -> None:
    a, _b = await connected_pair(join)
    action = a.make_action("bad")
    with pytest.raises(TypeError):
        await action.send({1, 2})
    with pytest.raises(TypeError):
        await action.send(float("nan"))
    with pytest.raises(TypeError):
        await action.send("x", metadata=object())
    with pytest.raises(PeerUnavailableError):
        await action.send("x", target="Z" * 20)
    with pytest.raises(PeerUnavailableError):
        await a.ping("Z" * 20)
    with pytest.raises(UsageError):
        a.make_action("@_ping")
    with pytest.raises(UsageError):
        a.make_action("x" * 33)


async def test_join_room_validates_its_arguments(join: JoinFactory) -> None:
    with pytest.raises(UsageError):
        await join("short")
    with pytest.raises(UsageError):
        await join(peer_ids(1)[0], room_id="")
    with pytest.raises(UsageError):
        await join(peer_ids(1)[0], ice_addresses=["not-an-ip"])
    with pytest.raises(UsageError):
        await join(peer_ids(1)[0], relay_urls="ws://127.0.0.1:1")
    with pytest.raises(UsageError):
        await join(peer_ids(1)[0], rtc_config={"iceServers": [{"nope": 1}]})
    assert isinstance(peermesh.self_id, str)
    assert len(peermesh.self_id) == 20


async def test_joining_twice_returns_the_same_room(join: JoinFactory) -> None:
    a_id = peer_ids(1)[0]
    first = await join(a_id)
    assert await join(a_id) is first


async def test_malformed_frames_are_dropped_and_counted(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    link = a._members[b.self_id].link
    shared = b._shared
    token = a.token
    header = wire.encode_action_type("evil") + b"\x00\x00\x01\xff"
    garbage = [
        b"\x07rest",  # unknown version byte
        b"\x01\x00",  # truncated room frame header
        b"\x01\x00\x00",  # zero-length token
        b"\x02\x05\x00\x40" + token.encode(),  # presence flag neither 0 nor 1
        encode_room_frame("f" * 64, header + b"x"),  # a room we are not in
        encode_room_frame(token, b"\x00" * 10),  # truncated action header
        encode_room_frame(token, wire.encode_action_type("evil") + b"\x00\x01\x09\xff{bad"),
    ]
    for frame in garbage:
        assert link.send_nowait(frame)
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("ok").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("ok").send("still fine")
    assert await asyncio.wait_for(got.get(), 5) == "still fine"
    assert shared.counters.malformed_frames == 4
    assert shared.counters.frames_for_unknown_rooms == 1
    assert b.counters.malformed_chunks == 1
    assert b.counters.rejected_messages == 1
    assert b.self_id in a.get_peers()
    assert a.self_id in b.get_peers()


async def test_a_peer_that_keeps_sending_garbage_is_disconnected(
    join: JoinFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await _pair_with_limits(join, Limits(max_malformed_inputs=20))
    left: list[str] = []
    b.on_peer_leave(left.append)
    link = a._members[b.self_id].link
    truncated = encode_room_frame(a.token, b"\x00" * 10)
    bad_json = encode_room_frame(a.token, wire.encode_action_type("x") + b"\x00\x01\x09\xff{")
    for _ in range(9):
        assert link.send_nowait(truncated)
        assert link.send_nowait(bad_json)
    await _flush(a, b)
    assert (b.counters.malformed_chunks, b.counters.rejected_messages, left) == (9, 9, [])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warnings if "dropped a malformed" in w]) == 2  # once per kind
    link.send_nowait(truncated)
    link.send_nowait(truncated)
    await eventually(lambda: left == [a.self_id], 5, "the garbage sender disconnected")
    assert b.counters.malformed_peers == 1
    assert "it sent 20 malformed inputs" in caplog.text


async def test_a_peer_flooding_pings_and_presence_gets_bounded_work(join: JoinFactory) -> None:
    a, b = await _pair_with_limits(join, Limits(max_control_rate=20))
    link = a._members[b.self_id].link
    ping = a._control_frame(wire.PING)
    started = time.monotonic()
    for i in range(500):
        assert link.send_nowait(ping)
        assert link.send_nowait(encode_presence_frame(f"{i:064x}", True))  # no such room
    await _flush(a, b)
    elapsed = time.monotonic() - started
    # At most the burst (2 x 20) plus 20 per second were answered; the rest were dropped.
    assert b.counters.rate_limited >= 500 - 40 - 20 * elapsed - 1
    assert b._shared.counters.presence_rate_limited >= 500 - 40 - 20 * elapsed - 1
    await asyncio.sleep(0.1)  # let a few tokens come back: a real ping is answered
    assert await b.ping(a.self_id) >= 0
    assert await a.ping(b.self_id) >= 0


async def test_sending_to_a_peer_that_closed_the_connection_raises_peer_unavailable(
    join: JoinFactory,
) -> None:
    # Before: once the peer had closed the data channel, aiortc's InvalidStateError escaped
    # from send (the channel was "closing" while the link still looked open).
    a, b = await _pair_with_limits(join, Limits(max_malformed_inputs=3))
    link = a._members[b.self_id].link
    garbage = encode_room_frame(a.token, b"\x00" * 10)

    async def send_until_refused() -> None:
        for _ in range(100_000):
            await link.send(garbage)  # b disconnects us after 3 of them
            await asyncio.sleep(0)

    with pytest.raises(PeerUnavailableError):
        await send_until_refused()
    assert not link.send_nowait(garbage)


async def test_oversized_message_is_dropped_and_room_keeps_working(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    a = await join(a_id)
    b = await join(b_id, limits=Limits(max_message_size=100_000))
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("big").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("big").send(b"x" * 200_000)
    await a.make_action("big").send(b"y" * 50_000)
    assert await asyncio.wait_for(got.get(), 5) == b"y" * 50_000
    assert b.counters.rejected_messages >= 1
    assert budget_for(b.limits).held(a_id) == 0


MiB = 1024 * 1024
#: Small budgets for the memory tests (the defaults are 256 MiB and 128 MiB per peer).
SMALL = Limits(memory_budget=8 * MiB, peer_memory=4 * MiB)


async def _pair_with_limits(join: JoinFactory, limits: Limits) -> tuple[Room, Room]:
    """``a`` and ``b`` connected; ``b`` (the receiver in these tests) runs with ``limits``."""
    a_id, b_id = peer_ids(2)
    a = await join(a_id)
    b = await join(b_id, limits=limits)
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    return a, b


async def _flush(sender: Room, receiver: Room) -> None:
    """Wait until everything ``sender`` sent before now has been handled by ``receiver``
    (the data channel is ordered)."""
    got = asyncio.Event()
    receiver.make_action("flush").on_message(lambda d, p, m: got.set())
    await sender.make_action("flush").send(None, receiver.self_id)
    await asyncio.wait_for(got.wait(), 10)


async def test_messages_held_for_an_unset_action_are_bounded_by_bytes(join: JoinFactory) -> None:
    # Before: 256 messages of any size were held (16 GiB of 64 MiB messages), counted nowhere.
    a, b = await _pair_with_limits(join, SMALL)
    later = a.make_action("later")
    for i in range(10):
        await later.send(bytes([i]) * MiB, metadata={"i": i})
    await _flush(a, b)
    budget = budget_for(b.limits)
    assert budget.held(a.self_id) <= SMALL.peer_memory
    assert b.counters.unclaimed_dropped == 7
    got: list[object] = []
    b.make_action("later").on_message(lambda d, p, m: got.append(m["i"]))
    await eventually(lambda: len(got) == 3, 5, "held messages")
    assert got == [7, 8, 9]  # the newest are kept
    assert budget.held(a.self_id) == 0


async def test_json_that_would_not_fit_once_decoded_is_dropped(join: JoinFactory) -> None:
    # Before: 300 KB of "[{},{},...]" was decoded into ~7.5 MB whatever the budget.
    a, b = await _pair_with_limits(join, SMALL)
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("json").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("json").send([{}] * 300_000)
    await a.make_action("json").send({"still": "fine"})
    assert await asyncio.wait_for(got.get(), 10) == {"still": "fine"}
    assert b.counters.rejected_messages == 1
    assert budget_for(b.limits).held() == 0


async def test_oversized_media_announcements_are_dropped(join: JoinFactory) -> None:
    # Before: 64 unmatched @_stream announcements of any size were kept per peer.
    a, b = await _pair_with_limits(join, Limits(max_media_metadata=64 * 1024))
    bulky = {"k": "key", "s": "stream", "m": [{}] * 30_000}  # ~90 KB, ~2 MB decoded
    for _ in range(5):
        await a._send_internal(wire.STREAM, bulky, b.self_id)
    await a._send_internal(wire.STREAM, {"k": "key", "s": "stream", "m": "small"}, b.self_id)
    await _flush(a, b)
    assert b.counters.oversized_messages == 5
    assert b._media.pending(a.self_id) == 1


async def test_a_peer_over_its_fair_share_is_disconnected_and_the_others_keep_working(
    join: JoinFactory, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(memory_budget=6 * MiB, peer_memory=4 * MiB)
    flood_id, honest_id, receiver_id = peer_ids(3)
    flood = await join(flood_id)
    honest = await join(honest_id)
    receiver = await join(receiver_id, limits=limits)
    await eventually(lambda: len(receiver.get_peers()) == 2, 20, "three peers")
    left: list[str] = []
    receiver.on_peer_leave(left.append)
    for i in range(4):  # held for an action nobody listens to: ~4 MiB, its whole cap
        await flood.make_action("later").send(bytes([i]) * (MiB - 1024))
    await _flush(flood, receiver)
    assert budget_for(limits).held(flood_id) > 3 * MiB
    for i in range(3):  # the honest peer's ~3 MiB do not fit next to the flood: it goes
        await honest.make_action("later").send(bytes([i]) * (MiB - 1024))
    await _flush(honest, receiver)
    assert left == [flood_id]
    assert receiver.counters.evicted_peers == 1
    assert "fair share of the memory budget" in caplog.text
    got: list[object] = []
    receiver.make_action("later").on_message(lambda d, p, m: got.append((p, d[0])))
    await eventually(lambda: len(got) == 3, 5, "the honest peer's messages")
    assert got == [(honest_id, 0), (honest_id, 1), (honest_id, 2)]
    assert budget_for(limits).held() == 0


async def test_failing_callback_does_not_break_the_room(
    join: JoinFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await connected_pair(join)
    got: list[object] = []

    def broken(data: object, peer_id: str, metadata: object) -> None:
        raise RuntimeError("user bug")

    b.make_action("cb").on_message(broken)
    b.make_action("cb").on_message(lambda d, p, m: got.append(d))
    await a.make_action("cb").send(1)
    await a.make_action("cb").send(2)
    await eventually(lambda: got == [1, 2], 5, "delivery past a broken callback")
    assert "user bug" in caplog.text


async def test_two_rooms_share_one_connection(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    a1, b1 = await connected_pair(join)
    a2 = await join(a_id, room_id="second")
    b2 = await join(b_id, room_id="second")
    await eventually(lambda: b_id in a2.get_peers() and a_id in b2.get_peers(), 20, "room 2")
    assert a1.get_peers()[b_id] is a2.get_peers()[b_id]
    assert len(a1._shared.links) == 1
    left: list[str] = []
    b1.on_peer_leave(left.append)
    got: list[object] = []
    b2.make_action("x").on_message(lambda d, p, m: got.append(d))
    await a1.leave()
    await eventually(lambda: left == [a_id], 2, "leave of room 1")
    await a2.make_action("x").send("still here")
    await eventually(lambda: got == ["still here"], 5, "message in room 2")
    pc = a2.get_peers()[b_id]
    assert pc.connectionState == "connected"
    await a2.leave()
    await eventually(lambda: pc.connectionState == "closed", 5, "link closed after last room")
