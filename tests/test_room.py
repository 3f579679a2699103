"""Rooms between Python peers on loopback, through the embedded tracker."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import peermesh
from peermesh import JoinErrorEvent, PeerUnavailableError, RoomClosedError, UsageError
from peermesh._link import PeerLink
from peermesh._wire import actions as wire
from peermesh._wire.frames import encode_room_frame
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


async def test_oversized_message_is_dropped_and_room_keeps_working(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    b._reassembler = wire.Reassembler(max_message_size=100_000)
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("big").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("big").send(b"x" * 200_000)
    await a.make_action("big").send(b"y" * 50_000)
    assert await asyncio.wait_for(got.get(), 5) == b"y" * 50_000
    assert b.counters.rejected_messages >= 1
    assert b._reassembler.pending() == 0


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
