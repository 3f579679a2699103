"""Shared connections: one link per remote peer, whatever order links open in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import peermesh._shared
import peermesh._signalling
from peermesh import Room
from peermesh._link import PEERMESH_SDP_MARKER, PeerLink, _marked, wait_links_closed
from peermesh._signalling import passive_room
from peermesh.torrent import join_room
from tests.rooms import LOOPBACK, eventually, peer_ids

#: Nothing listens here: the rooms' own signalling stays idle (backing off).
UNREACHABLE = ["ws://127.0.0.1:9"]


@pytest.fixture
async def idle_pair() -> AsyncIterator[tuple[Room, Room]]:
    a_id, b_id = peer_ids(2, "x")
    options = {"app_id": "shared-tests", "relay_urls": UNREACHABLE, **LOOPBACK}
    a = await join_room("room", peer_id=a_id, **options)
    b = await join_room("room", peer_id=b_id, **options)
    try:
        yield a, b
    finally:
        await a.leave()
        await b.leave()
        await wait_links_closed()


async def connect(offerer: Room, answerer: Room) -> tuple[PeerLink, PeerLink]:
    """Negotiate a link from ``offerer`` to ``answerer`` by hand, as a signaller would."""
    out = offerer._shared.new_link(
        offerer, initiator=True, configuration=offerer.configuration, ice_addresses=("127.0.0.1",)
    )
    offer = await out.create_offer()
    inbound = answerer._shared.new_link(
        answerer,
        initiator=False,
        configuration=answerer.configuration,
        ice_addresses=("127.0.0.1",),
        remote_id=offerer.self_id,
    )
    answer = await inbound.accept_offer(offer)
    out.remote_id = answerer.self_id
    await out.accept_answer(answer)
    return out, inbound


async def test_crossing_links_converge_on_one_connection(idle_pair: tuple[Room, Room]) -> None:
    a, b = idle_pair
    (a_out, b_in), (b_out, a_in) = await asyncio.gather(connect(a, b), connect(b, a))
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    await eventually(
        lambda: sum(link.is_open for link in (a_out, b_in, b_out, a_in)) == 2,
        5,
        "one connection left",
    )
    # Both sides kept the two ends of the same connection.
    kept = {a._shared.links[b.self_id], b._shared.links[a.self_id]}
    assert kept in ({a_out, b_in}, {b_out, a_in})
    assert all(link.is_open for link in kept)
    assert a._shared.counters.duplicate_links + b._shared.counters.duplicate_links >= 1
    # The room works over the surviving connection.
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("x").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("x").send("over the leader's link")
    assert await asyncio.wait_for(got.get(), 5) == "over the leader's link"
    assert await b.ping(a.self_id) > 0


async def connect_as_trystero(offerer: Room, answerer: Room) -> tuple[PeerLink, PeerLink]:
    """:func:`connect`, with both ends treated as if the other side were Trystero (its SDP
    without peermesh's marker)."""
    out, inbound = await connect(offerer, answerer)
    out.remote_is_peermesh = inbound.remote_is_peermesh = False
    return out, inbound


def watch(room: Room) -> list[str]:
    seen: list[str] = []
    room.on_peer_join(lambda p: seen.append(f"join {p[:1]}"))
    room.on_peer_leave(lambda p: seen.append(f"leave {p[:1]}"))
    return seen


@pytest.mark.parametrize("keep", ["first", "second"])
async def test_a_second_link_to_a_peer_in_use_is_resolved_without_a_leave(
    idle_pair: tuple[Room, Room], monkeypatch: pytest.MonkeyPatch, keep: str
) -> None:
    """Both sides keep the same one of the two links (the shared rule's tie-break, the
    offerer's fingerprint, is forced here); if that is the new one, the rooms move over to
    it and re-admit the peer without the app seeing it leave and join again."""
    a, b = idle_pair
    order: dict[PeerLink, str] = {}
    real = peermesh._shared._offerer_fingerprint

    def fingerprint(link: PeerLink) -> str:
        rank = order.get(link)
        return real(link) if rank is None else rank

    monkeypatch.setattr(peermesh._shared, "_offerer_fingerprint", fingerprint)
    seen_a, seen_b = watch(a), watch(b)
    first = await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    for link in first:
        order[link] = "1" if keep == "second" else "0"
    second = await connect(a, b)
    for link in second:
        order[link] = "0" if keep == "second" else "1"
    kept_out, kept_in = first if keep == "first" else second
    dropped = second if keep == "first" else first
    await eventually(
        lambda: (
            all(link.is_open for link in (kept_out, kept_in))
            and all(link.is_closed for link in dropped)
        ),
        5,
        f"only the {keep} pair left",
    )
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    assert a.get_peers()[b.self_id] is kept_out.pc
    assert b.get_peers()[a.self_id] is kept_in.pc
    assert await a.ping(b.self_id) > 0
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("x").on_message(lambda d, p, m: got.put_nowait(d))
    await a.make_action("x").send("still here")
    assert await asyncio.wait_for(got.get(), 5) == "still here"
    assert seen_a == [f"join {b.self_id[:1]}"]
    assert seen_b == [f"join {a.self_id[:1]}"]


async def test_a_move_under_traffic_loses_and_reorders_nothing(
    idle_pair: tuple[Room, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages flow both ways, every fifth one several chunks long, while a second link
    that both sides prefer opens: every send returns normally, every message arrives once
    and in order, and the old link is closed by the handover, not by its idle timer."""
    a, b = idle_pair
    monkeypatch.setattr(peermesh._shared, "RETIRE_IDLE", 120.0)
    order: dict[PeerLink, str] = {}
    real = peermesh._shared._offerer_fingerprint
    monkeypatch.setattr(
        peermesh._shared, "_offerer_fingerprint", lambda link: order.get(link) or real(link)
    )
    seen_a, seen_b = watch(a), watch(b)
    first = await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    for link in first:
        order[link] = "1"
    got: dict[str, list[int]] = {a.self_id: [], b.self_id: []}
    sent = {a.self_id: 0, b.self_id: 0}
    for room in (a, b):
        room.make_action("seq").on_message(
            lambda data, peer_id, meta, me=room.self_id: got[me].append(data[0])
        )
    stop = asyncio.Event()

    async def pump(room: Room, to: str) -> None:
        send = room.make_action("seq").send
        while not stop.is_set():
            i = sent[room.self_id]
            await send([i, "x" * (40_000 if i % 5 == 0 else 10)], to)
            sent[room.self_id] = i + 1
            await asyncio.sleep(0)

    pumps = asyncio.gather(pump(a, b.self_id), pump(b, a.self_id))
    try:
        await asyncio.sleep(0.2)
        second = await connect(a, b)
        for link in second:
            order[link] = "0"
        await eventually(lambda: all(link.is_closed for link in first), 15, "first pair closed")
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await pumps  # any failed send fails the test here
    assert all(link.is_open for link in second)
    assert sent[a.self_id] > 20
    assert sent[b.self_id] > 20
    await eventually(
        lambda: len(got[b.self_id]) >= sent[a.self_id] and len(got[a.self_id]) >= sent[b.self_id],
        10,
        "every message",
    )
    assert got[b.self_id] == list(range(sent[a.self_id]))
    assert got[a.self_id] == list(range(sent[b.self_id]))
    assert seen_a == [f"join {b.self_id[:1]}"]
    assert seen_b == [f"join {a.self_id[:1]}"]


async def test_a_handover_the_peer_never_confirms_ends_after_the_idle_timer(
    idle_pair: tuple[Room, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    """b ignores handover frames (as a peer that lost them would): a's old link is closed
    by its idle timer, and a's sends, which wait for the old link to be delivered, go on."""
    a, b = idle_pair
    monkeypatch.setattr(peermesh._shared, "RETIRE_IDLE", 0.3)
    monkeypatch.setattr(b._shared, "_on_handover", lambda link, info, frame: None)
    order: dict[PeerLink, str] = {}
    real = peermesh._shared._offerer_fingerprint
    monkeypatch.setattr(
        peermesh._shared, "_offerer_fingerprint", lambda link: order.get(link) or real(link)
    )
    first = await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    for link in first:
        order[link] = "1"
    second = await connect(a, b)
    for link in second:
        order[link] = "0"
    a_first = first[0]
    await eventually(lambda: a.get_peers().get(b.self_id) is second[0].pc, 10, "a moved")
    assert a_first.retired
    got: asyncio.Queue[object] = asyncio.Queue()
    b.make_action("x").on_message(lambda d, p, m: got.put_nowait(d))
    await asyncio.wait_for(a.make_action("x").send("after the timer"), 10)
    assert a_first.is_closed
    assert await asyncio.wait_for(got.get(), 5) == "after the timer"


async def test_with_a_trystero_peer_the_first_link_is_kept(
    idle_pair: tuple[Room, Room],
) -> None:
    """Trystero keeps its first connection and destroys a second one, so with a peer whose
    SDP lacks peermesh's marker we do the same."""
    a, b = idle_pair
    first_out, first_in = await connect_as_trystero(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    second_out, second_in = await connect_as_trystero(a, b)
    await eventually(lambda: second_out.is_closed and second_in.is_closed, 5, "duplicate closed")
    assert first_out.is_open
    assert first_in.is_open
    assert a.get_peers()[b.self_id] is first_out.pc


def test_our_sdp_carries_the_marker_after_the_timing_line() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    assert _marked(sdp).split("\r\n")[3:5] == ["t=0 0", PEERMESH_SDP_MARKER]


async def test_leaving_abandons_unopened_links_without_join_errors(
    idle_pair: tuple[Room, Room],
) -> None:
    a, b = idle_pair
    errors: list[object] = []
    b.on_join_error(errors.append)
    out = a._shared.new_link(
        a, initiator=True, configuration=a.configuration, ice_addresses=("127.0.0.1",)
    )
    inbound = b._shared.new_link(
        b,
        initiator=False,
        configuration=b.configuration,
        ice_addresses=("127.0.0.1",),
        remote_id=a.self_id,
    )
    await inbound.accept_offer(await out.create_offer())  # a never applies the answer
    await b.leave()
    assert inbound.is_closed
    assert errors == []


async def test_two_leader_links_converge_on_the_same_one_both_sides(
    idle_pair: tuple[Room, Room],
) -> None:
    # Two strategies can each produce a connection the leader offered, opening in different
    # orders on the two sides; both sides must keep the same one.
    a, b = idle_pair
    first, second = await asyncio.gather(connect(a, b), connect(a, b))
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    await eventually(
        lambda: sum(link.is_open for link in (*first, *second)) == 2, 5, "one pair left open"
    )
    kept_out, kept_in = first if first[0].is_open else second
    assert kept_out.is_open
    assert kept_in.is_open
    assert a._shared.links == {b.self_id: kept_out}
    assert b._shared.links == {a.self_id: kept_in}
    assert await a.ping(b.self_id) > 0


# -- a link the peer gave up (SharedLinks.bound_to_live_link, still_used) ----------------------


async def test_a_signal_that_shows_the_link_given_up_closes_it_first(
    idle_pair: tuple[Room, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal a Trystero peer sends only without a connection to us (``gives_up``)
    closes the link it has given up before the new one is made: one leave, then one join.
    Any other signal is taken care of by the link, an idle link whose peer answers a ping
    is still used, and a peermesh peer (which closes what it gives up) keeps its link."""
    a, b = idle_pair
    seen = watch(a)
    old_out, _ = await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    assert a._shared.bound_to_live_link(a, b.self_id, gives_up=True)  # peermesh: kept
    old_out.remote_is_peermesh = False
    assert a._shared.bound_to_live_link(a, b.self_id, gives_up=False)
    monkeypatch.setattr(peermesh._shared, "CHECK_IDLE_AFTER", 0.0)
    assert await a._shared.still_used(old_out)  # b answers the ping
    assert old_out.is_open

    assert not a._shared.bound_to_live_link(a, b.self_id, gives_up=True)
    assert not old_out.is_open
    await asyncio.wait_for(a._shared.given_up_closed(b.self_id), 5)
    assert old_out.is_closed
    assert seen == ["join x", "leave x"]
    new_out, _ = await connect(a, b)
    await eventually(lambda: seen == ["join x", "leave x", "join x"], 10, "the peer back")
    assert a._shared.links == {b.self_id: new_out}
    assert await a.ping(b.self_id) > 0


# -- passive rooms: presence follows ``room.dormant`` (wire notes §9.1) -----------------------


def remote_tokens(room: Room, peer_id: str) -> set[str]:
    """The room tokens ``peer_id`` told ``room``'s table it is in (by presence frames)."""
    return room._shared._info[room._shared.links[peer_id]].remote_tokens


async def test_a_dormant_room_is_advertised_only_while_awake(idle_pair: tuple[Room, Room]) -> None:
    a, b = idle_pair
    options = {"app_id": "shared-tests", "relay_urls": UNREACHABLE, **LOOPBACK}
    backup = await join_room("backup", peer_id=b.self_id, passive=True, **options)
    try:
        assert backup.dormant
        await connect(a, b)  # the link opens while the passive room is dormant
        await eventually(lambda: b.self_id in a.get_peers(), 10, "a and b to meet")
        await eventually(lambda: b.token in remote_tokens(a, b.self_id), 5, "room presence")
        await asyncio.sleep(0.2)
        assert backup.token not in remote_tokens(a, b.self_id)

        passive_room(backup).wake()  # as a signaller does for a non-passive peer
        assert not backup.dormant
        await eventually(lambda: backup.token in remote_tokens(a, b.self_id), 5, "presence=1")

        passive_room(backup).check()  # no peer, nothing negotiating: dormant again
        assert backup.dormant
        await eventually(lambda: backup.token not in remote_tokens(a, b.self_id), 5, "presence=0")
        assert b.token in remote_tokens(a, b.self_id)  # the other room is untouched
    finally:
        await backup.leave()


async def test_a_woken_room_stays_awake_while_it_has_a_peer(
    idle_pair: tuple[Room, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peermesh._signalling, "PASSIVE_GRACE", 0.2)
    a, b = idle_pair
    options = {"app_id": "shared-tests", "relay_urls": UNREACHABLE, **LOOPBACK}
    await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers(), 10, "a and b to meet")
    backup = await join_room("backup", peer_id=b.self_id, passive=True, **options)
    a_backup = await join_room("backup", peer_id=a.self_id, **options)
    try:
        await asyncio.sleep(0.3)
        assert backup.dormant
        assert a.self_id not in backup.get_peers()  # a never heard of b's dormant room
        passive_room(backup).wake()
        await eventually(
            lambda: a.self_id in backup.get_peers() and b.self_id in a_backup.get_peers(),
            10,
            "the rooms to bind on the shared link",
        )
        await asyncio.sleep(0.6)  # several grace periods: a peer keeps it awake
        assert not backup.dormant
        await a_backup.leave()
        await eventually(lambda: backup.dormant, 5, "dormant once its last peer left")
        assert backup.token not in remote_tokens(a, b.self_id)
    finally:
        await a_backup.leave()
        await backup.leave()
