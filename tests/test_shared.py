"""Shared connections: one link per remote peer, whatever order links open in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import peermesh._signalling
from peermesh import Room
from peermesh._link import PeerLink, wait_links_closed
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


async def test_a_second_link_after_the_first_is_closed_and_the_room_bound(
    idle_pair: tuple[Room, Room],
) -> None:
    a, b = idle_pair
    first_out, first_in = await connect(a, b)
    await eventually(lambda: b.self_id in a.get_peers() and a.self_id in b.get_peers(), 10)
    second_out, second_in = await connect(a, b)
    await eventually(lambda: second_out.is_closed and second_in.is_closed, 5, "duplicate closed")
    assert first_out.is_open
    assert first_in.is_open
    assert a.get_peers()[b.self_id] is first_out.pc


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
