"""The interop harness itself, JS ⇄ JS: two (or three) real Trystero peers in Node on a local
bittorrent-tracker. If these fail, the interop tests against peermesh mean nothing.

Join order: Trystero's torrent strategy ignores a relayed offer from a larger id while it has
offers out, so the peer with the *larger* id answers. A late joiner with the larger id must
wait for the earlier peer's next announce (up to the 10 s interval); joining the larger id
first is fast. ``join_all`` therefore joins in descending id order, and
``test_join_slow_order`` covers the other order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.interop.jspeer import (
    GeneratedBytes,
    JsPeer,
    JsPeerCommandError,
    JsPeerExited,
    JsPeerTimeout,
    decode_data,
    deterministic_bytes,
    sha256_hex,
)

pytestmark = pytest.mark.interop

APP_ID = "peermesh-harness"
MIB = 1024 * 1024


def room_name() -> str:
    return f"harness-{uuid.uuid4().hex[:12]}"


async def start_peers(factory: Any, n: int) -> list[JsPeer]:
    return list(await asyncio.gather(*(factory(name=f"js{i}") for i in range(n))))


async def join_all(
    peers: list[JsPeer],
    tracker: str,
    room: str,
    *,
    passwords: list[str | None] | None = None,
    actions: tuple[str, ...] = ("chat", "blob"),
    timeout: float = 15.0,
) -> float:
    """Join in descending id order and wait until every pair sees each other; return seconds."""
    order = sorted(range(len(peers)), key=lambda i: peers[i].self_id, reverse=True)
    t0 = time.monotonic()
    for i in order:
        pw = passwords[i] if passwords else None
        await peers[i].join(room, tracker, app_id=APP_ID, password=pw, actions=actions)
        await asyncio.sleep(0.05)
    waits = [
        p.wait_event("peer-join", timeout=timeout, peerId=q.self_id)
        for p in peers
        for q in peers
        if p is not q
    ]
    await asyncio.gather(*waits)
    return time.monotonic() - t0


def progress_of(peer: JsPeer, event: str, **fields: Any) -> list[float]:
    return [e["percent"] for e in peer.pending_events(event, **fields)]


def test_generator_vector() -> None:
    """deterministic_bytes() matches jspeer.mjs's deterministicBytes (vector computed by Node's
    shake256; the send tests also compare the sha256 the JS side reports for what it generated)."""
    assert deterministic_bytes(0, 1) == b""
    assert deterministic_bytes(16, "x") == deterministic_bytes(32, "x")[:16]
    assert deterministic_bytes(8, 7).hex() == "dc7b1ee8d87c2e62"


async def test_driver_basics(js_peer_factory: Any) -> None:
    """Command errors, event queueing, timeouts with stderr, and process exit handling."""
    peer = await js_peer_factory(name="solo")
    assert len(peer.self_id) == 20
    assert await peer.peers() == []
    status = await peer.status()
    assert status["selfId"] == peer.self_id
    assert status["joined"] is False

    with pytest.raises(JsPeerCommandError, match="unknown command"):
        await peer.command({"cmd": "nope"})
    with pytest.raises(JsPeerCommandError, match="not in a room"):
        await peer.send("chat", "x")
    with pytest.raises(JsPeerCommandError, match="relayUrls is required"):
        await peer.command({"cmd": "join", "appId": "a", "roomId": "r", "relayUrls": []})
    with pytest.raises(JsPeerCommandError, match="cannot import strategy package"):
        await peer.join("r", "ws://127.0.0.1:9", strategy="no-such-strategy")
    with pytest.raises(JsPeerTimeout, match=r"(?s)no event matching 'peer-join'.*stderr"):
        await peer.wait_event("peer-join", timeout=0.2)

    # exit: the result arrives, then the process ends and waiting fails fast
    assert await peer.command({"cmd": "exit"}) is None
    with pytest.raises(JsPeerExited):
        await peer.wait_event("never", timeout=5)
    await peer.close()
    assert peer.returncode is not None
    with pytest.raises(JsPeerExited):
        await peer.peers()


async def test_polyfill_selftest(js_peer_factory: Any) -> None:
    """rtc-polyfill.mjs alone: implicit setLocalDescription() makes an offer and an answer,
    and the emulated `bufferedamountlow` fires (listeners and the on-property) whenever a
    fast sender fills the channel, so 16 MiB go through without a 10 s back-pressure stall."""
    (peer,) = await start_peers(js_peer_factory, 1)
    r = await peer.command({"cmd": "polyfill-selftest", "bytes": 16 * MIB}, timeout=30)
    print(f"polyfill selftest: {r}")
    assert r["offerType"] == "offer"
    assert r["answerType"] == "answer"
    assert r["received"] == 16 * MIB
    assert r["localThreshold"] == 65535
    assert r["remoteThreshold"] == 0
    assert r["waits"] > 0
    assert r["maxBuffered"] > 65535
    # One event per wait, plus one more when the last send left the buffer above the
    # threshold (it drains after the loop, with nobody waiting).
    assert r["waits"] <= r["propertyHandlerCalls"] <= r["waits"] + 1
    assert r["transferMs"] < 8000


async def test_messages_both_ways(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    a, b = await start_peers(js_peer_factory, 2)
    join_s = await join_all([a, b], bittorrent_tracker, room_name())
    print(f"join (fast order) took {join_s * 1000:.0f} ms")
    assert sorted(await a.peers()) == [b.self_id]
    assert sorted(await b.peers()) == [a.self_id]

    for src, dst in ((a, b), (b, a)):
        # string
        await src.send("chat", "héllo ✓")
        msg = await dst.wait_message("chat", peer_id=src.self_id)
        assert msg["data"] == {"type": "string", "value": "héllo ✓"}
        assert "metadata" not in msg

        # JSON
        payload = {"n": 1, "list": [1, 2.5, None, True], "s": "x"}
        await src.send("chat", payload)
        msg = await dst.wait_message("chat", peer_id=src.self_id)
        assert decode_data(msg["data"]) == payload

        # small bytes round-trip through base64 both ways
        small = deterministic_bytes(1000, "small")
        await src.send("blob", small, metadata={"kind": "small"})
        msg = await dst.wait_message("blob", peer_id=src.self_id)
        assert decode_data(msg["data"]) == small
        assert msg["metadata"] == {"kind": "small"}

        # 1 MiB generated on the JS side, with metadata and progress
        dst.clear_events()
        src.clear_events()
        spec = GeneratedBytes(MIB, f"big-{src.name}")
        expected = sha256_hex(spec.materialize())
        meta = {"name": "big.bin", "size": MIB}
        t0 = time.monotonic()
        res = await src.send("blob", spec, metadata=meta, timeout=30)
        msg = await dst.wait_message("blob", peer_id=src.self_id, timeout=30)
        took = time.monotonic() - t0
        print(
            f"1 MiB {src.name}->{dst.name}: delivered in {took * 1000:.0f} ms "
            f"(send promise {res['ms']:.0f} ms)"
        )
        assert res["length"] == MIB
        assert res["sha256"] == expected
        assert res["targets"] == [dst.self_id]
        data = msg["data"]
        assert data["type"] == "bytes"
        assert data["length"] == MIB
        assert data["sha256"] == expected
        assert "base64" not in data  # > 64 KiB: digest only
        assert msg["metadata"] == meta
        recv_progress = progress_of(dst, "progress", action="blob", peerId=src.self_id)
        send_progress = progress_of(src, "send-progress", action="blob", peerId=dst.self_id)
        # 1 metadata chunk + ceil(1 MiB / 16348) data chunks = 66
        assert len(recv_progress) == 66
        assert len(send_progress) == 66
        for prog in (recv_progress, send_progress):
            assert prog == sorted(prog)
            assert prog[-1] == 1.0
            assert 0 < prog[0] < 0.05
        assert all(e.get("metadata") == meta for e in dst.pending_events("progress", action="blob"))

    for p in (a, b):
        assert p.fatal_events() == []


async def test_backpressure_large_send(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    """wrtc never fires `bufferedamountlow`; without rtc-polyfill.mjs's emulation Trystero
    waits 10 s for it and then silently drops the rest of the message. 1 MiB does not even
    reach the 64 KiB threshold on wrtc (its SCTP stack absorbs several MB at once), so this
    sends 16 MiB (no progress events, which would slow the sender down)."""
    a, b = await start_peers(js_peer_factory, 2)
    await join_all([a, b], bittorrent_tracker, room_name())
    spec = GeneratedBytes(16 * MIB, "backpressure")
    t0 = time.monotonic()
    res = await a.send("blob", spec, metadata={"big": True}, progress=False, timeout=30)
    msg = await b.wait_message("blob", peer_id=a.self_id, timeout=30)
    took = time.monotonic() - t0
    await asyncio.sleep(0.1)  # let the last poll (2 ms timer) settle
    stats = (await a.status())["polyfill"]
    print(
        f"16 MiB a->b delivered in {took * 1000:.0f} ms (send promise {res['ms']:.0f} ms); "
        f"polyfill {stats}"
    )
    assert msg["data"]["length"] == 16 * MIB
    assert msg["data"]["sha256"] == res["sha256"] == spec.sha256
    assert took < 8, "a bufferedamountlow wait must not have timed out (10 s)"
    # Whether Trystero's loop outruns wrtc's SCTP buffer depends on the machine; when it did,
    # every wait must have been ended by an emulated event.
    if stats["maxBufferedAmount"] > 65535:
        assert stats["bufferedAmountLowEvents"] == stats["aboveThresholdEpisodes"] > 0


async def test_ping_and_targeted_send(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    a, b, c = await start_peers(js_peer_factory, 3)
    join_s = await join_all([a, b, c], bittorrent_tracker, room_name())
    print(f"3-peer join took {join_s * 1000:.0f} ms")

    for src, dst in ((a, b), (b, c), (c, a)):
        ms = await src.ping(dst.self_id)
        assert 0 <= ms < 1000

    # targeted at one peer: only that peer gets it
    res = await a.send("chat", "only b", target=b.self_id)
    assert res["targets"] == [b.self_id]
    msg = await b.wait_message("chat", peer_id=a.self_id)
    assert msg["data"]["value"] == "only b"
    # broadcast as a fence: c's first chat message must be the broadcast, not "only b"
    res = await a.send("chat", "everyone")
    assert sorted(res["targets"]) == sorted([b.self_id, c.self_id])
    msg_c = await c.wait_message("chat", peer_id=a.self_id)
    assert msg_c["data"]["value"] == "everyone"
    assert (await b.wait_message("chat", peer_id=a.self_id))["data"]["value"] == "everyone"

    # targeted at a list, bytes
    spec = GeneratedBytes(100_000, 42)
    res = await c.send("blob", spec, target=[a.self_id, b.self_id], metadata=[1, "two"])
    for dst in (a, b):
        msg = await dst.wait_message("blob", peer_id=c.self_id)
        assert msg["data"]["sha256"] == spec.sha256 == res["sha256"]
        assert msg["metadata"] == [1, "two"]

    # errors come back as ok:false, the process survives
    with pytest.raises(Exception, match="no active peer"):
        await a.ping("0" * 20)
    assert (await a.status())["joined"] is True


async def test_leave_is_seen_within_2s(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    a, b = await start_peers(js_peer_factory, 2)
    await join_all([a, b], bittorrent_tracker, room_name())
    t0 = time.monotonic()
    await a.leave()
    await b.wait_event("peer-leave", timeout=2.0, peerId=a.self_id)
    print(f"leave seen after {(time.monotonic() - t0) * 1000:.0f} ms")
    assert await b.peers() == []
    assert await a.peers() == []
    with pytest.raises(Exception, match="not in a room"):
        await a.send("chat", "gone")


async def test_password_match_connects(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    a, b = await start_peers(js_peer_factory, 2)
    await join_all([a, b], bittorrent_tracker, room_name(), passwords=["s3cret", "s3cret"])
    await a.send("chat", "pw ok")
    assert (await b.wait_message("chat"))["data"]["value"] == "pw ok"
    assert not a.pending_events("join-error")
    assert not b.pending_events("join-error")


async def test_password_mismatch_fails(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    a, b = await start_peers(js_peer_factory, 2)
    room = room_name()
    order = sorted([(a, "one"), (b, "two")], key=lambda x: x[0].self_id, reverse=True)
    for peer, pw in order:
        await peer.join(room, bittorrent_tracker, app_id=APP_ID, password=pw)
        await asyncio.sleep(0.05)
    larger = order[0][0]
    smaller = order[1][0]
    # The larger id answers the smaller id's offer and cannot decrypt it.
    err = await larger.wait_event("join-error", timeout=10, peerId=smaller.self_id)
    assert "password" in err["error"]
    await asyncio.sleep(1.5)
    for p in (a, b):
        assert not p.pending_events("peer-join")
        assert await p.peers() == []


async def test_join_slow_order(js_peer_factory: Any, bittorrent_tracker: str) -> None:
    """Smaller id joins first and finishes its announce warm-up; the larger id joins late and
    must wait for the smaller one's next announce (10 s interval)."""
    a, b = await start_peers(js_peer_factory, 2)
    small, large = sorted([a, b], key=lambda p: p.self_id)
    room = room_name()
    await small.join(room, bittorrent_tracker, app_id=APP_ID, actions=["chat"])
    # Past the warm-up announces: Trystero announces at once, then after 233, 533 and
    # 1333 ms more (cumulative ~2.1 s after its tracker socket opens), then every 10 s.
    await asyncio.sleep(2.6)
    t0 = time.monotonic()
    await large.join(room, bittorrent_tracker, app_id=APP_ID, actions=["chat"])
    await asyncio.gather(
        small.wait_event("peer-join", timeout=14, peerId=large.self_id),
        large.wait_event("peer-join", timeout=14, peerId=small.self_id),
    )
    print(f"join (slow order, late larger id) took {(time.monotonic() - t0) * 1000:.0f} ms")
    await large.send("chat", "late")
    assert (await small.wait_message("chat"))["data"]["value"] == "late"
