"""The ``on_peer_handshake`` admission hook between Python peers (wire notes §7)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peermesh import HandshakeReceive, HandshakeSend, JoinErrorEvent, UsageError
from tests.rooms import JoinFactory, eventually, peer_ids


class Recorder:
    """Remembers what one side's hook saw and which peers joined, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.errors: list[JoinErrorEvent] = []

    def joined(self, peer_id: str) -> None:
        self.log.append(("joined", peer_id))


async def test_hook_exchanges_data_and_gates_the_join(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    sides = {a_id: Recorder(), b_id: Recorder()}

    def hook_for(me: str) -> Any:
        async def hook(
            peer_id: str, send: HandshakeSend, receive: HandshakeReceive, is_initiator: bool
        ) -> None:
            rec = sides[me]
            rec.log.append(("hook", (peer_id, is_initiator)))
            await send({"token": f"from-{me}"}, metadata={"v": 1})
            data, metadata = await receive()
            rec.log.append(("got", (data, metadata)))
            await asyncio.sleep(0.2)  # the peer must stay invisible meanwhile
            rec.log.append(("hook done", None))

        return hook

    rooms = {}
    for me in (a_id, b_id):
        rooms[me] = await join(me, on_peer_handshake=hook_for(me))
        rooms[me].on_peer_join(sides[me].joined)
    await eventually(lambda: all(len(s.log) == 4 for s in sides.values()), 20, "both joins")
    for me, other in ((a_id, b_id), (b_id, a_id)):
        assert sides[me].log == [
            ("hook", (other, me < other)),
            ("got", ({"token": f"from-{other}"}, {"v": 1})),
            ("hook done", None),
            ("joined", other),
        ]


async def test_a_rejecting_hook_is_a_join_error_and_nobody_joins(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    errors: list[JoinErrorEvent] = []
    joins: list[str] = []

    def reject(peer_id: str, send: HandshakeSend, receive: HandshakeReceive, init: bool) -> None:
        raise PermissionError(f"{peer_id} is not on the list")

    a = await join(a_id, on_peer_handshake=reject, handshake_timeout=3)
    b = await join(b_id, handshake_timeout=3)
    a.on_join_error(errors.append)
    b.on_join_error(errors.append)
    a.on_peer_join(joins.append)
    b.on_peer_join(joins.append)
    await eventually(lambda: errors, 20, "a join error")
    assert errors[0] == JoinErrorEvent(f"{b_id} is not on the list", a.app_id, "room", b_id)
    await asyncio.sleep(0.5)
    assert joins == []
    assert a.get_peers() == {}
    assert b.get_peers() == {}


async def test_a_hook_that_never_finishes_times_out(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    errors: list[JoinErrorEvent] = []

    async def wait_forever(peer_id: str, send: Any, receive: HandshakeReceive, init: bool) -> None:
        await receive()  # the other side sends nothing

    a = await join(a_id, on_peer_handshake=wait_forever, handshake_timeout=0.5)
    a.on_join_error(errors.append)
    await join(b_id)
    await eventually(lambda: errors, 20, "the handshake timeout")
    assert errors[0].error == "handshake timed out after 500ms"
    assert errors[0].peer_id == b_id
    assert a.get_peers() == {}


async def test_password_and_hook_compose(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    seen: list[object] = []

    async def hook(peer_id: str, send: HandshakeSend, receive: HandshakeReceive, i: bool) -> None:
        await send("hello")
        data, _ = await receive()
        seen.append(data)

    a = await join(a_id, password="pw", on_peer_handshake=hook)
    b = await join(b_id, password="pw", on_peer_handshake=hook)
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    assert seen == ["hello", "hello"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_peer_handshake": "not callable"}, "on_peer_handshake"),
        ({"handshake_timeout": 0}, "handshake_timeout"),
        ({"handshake_timeout": -1.5}, "handshake_timeout"),
    ],
)
async def test_bad_admission_options_are_usage_errors(
    join: JoinFactory, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        await join(peer_ids(1)[0], **options)
