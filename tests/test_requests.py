"""Request/response actions between Python peers on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from peermesh import (
    Limits,
    PeerTimeoutError,
    PeerUnavailableError,
    Room,
    RoomClosedError,
    UsageError,
)
from peermesh._limits import budget_for
from peermesh._requests import (
    RequestAction,
)
from peermesh._rpc import caller_id
from peermesh._wire import actions as wire
from peermesh._wire.frames import encode_room_frame
from peermesh.errors import PeerError, RequestError
from tests.rooms import JoinFactory, connected_pair, eventually, peer_ids


async def mesh(join: JoinFactory, count: int, **kw: Any) -> list[Room]:
    ids = peer_ids(count)
    rooms = [await join(pid, **kw) for pid in ids]

    def full() -> bool:
        return all(set(r.get_peers()) == set(ids) - {r.self_id} for r in rooms)

    await eventually(full, 30, f"a mesh of {count}")
    return rooms


async def test_requests_both_ways_with_text_json_bytes_and_metadata(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    seen: list[tuple[object, str, object]] = []

    def echo(data: object, peer_id: str, metadata: object) -> object:
        seen.append((data, peer_id, metadata))
        if isinstance(data, bytes):
            return data[::-1]
        return {"echo": data, "meta": metadata}

    async def upper(data: object, peer_id: str, metadata: object) -> object:
        await asyncio.sleep(0)
        assert isinstance(data, str)
        return data.upper()

    assert b.make_action("echo", kind="request").on_request(echo) is echo
    a.make_action("upper", kind="request").on_request(upper)
    ask = a.make_action("echo", kind="request")
    assert isinstance(ask, RequestAction)
    assert a.make_action("echo", kind="request") is ask

    assert await ask.request("hi", b.self_id) == {"echo": "hi", "meta": None}
    assert await ask.request([1, {"x": None}], b.self_id, metadata={"m": [1]}) == {
        "echo": [1, {"x": None}],
        "meta": {"m": [1]},
    }
    assert await ask.request(b"\x00\x01\xff", b.self_id, metadata="tag") == b"\xff\x01\x00"
    assert seen == [
        ("hi", a.self_id, None),
        ([1, {"x": None}], a.self_id, {"m": [1]}),
        (b"\x00\x01\xff", a.self_id, "tag"),
    ]
    # and the other way, with an async handler returning text
    reply = await b.make_action("upper", kind="request").request("shout", a.self_id)
    assert reply == "SHOUT"


async def test_error_replies(join: JoinFactory) -> None:
    a, b = await connected_pair(join)

    def handler(data: object, peer_id: str, metadata: object) -> object:
        if data == "boom":
            raise RuntimeError("it went boom")
        if data == "empty":
            raise KeyError()
        if data == "unencodable":
            return {1, 2}
        return None  # replies JSON null

    b.make_action("err", kind="request").on_request(handler)
    ask = a.make_action("err", kind="request")
    with pytest.raises(RequestError) as info:
        await ask.request("boom", b.self_id)
    assert info.value.remote_message == "it went boom"
    assert str(info.value) == "it went boom"
    assert info.value.peer_id == b.self_id
    assert isinstance(info.value, PeerError)
    with pytest.raises(RequestError, match=r"^KeyError$"):
        await ask.request("empty", b.self_id)
    with pytest.raises(RequestError, match="not JSON-serialisable"):
        await ask.request("unencodable", b.self_id)
    assert await ask.request("fine", b.self_id) is None


async def test_bad_local_use(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    a.make_action("msg")
    with pytest.raises(UsageError, match="cannot be redefined"):
        a.make_action("msg", kind="request")
    a.make_action("req", kind="request")
    with pytest.raises(UsageError, match="cannot be redefined"):
        a.make_action("req")
    with pytest.raises(UsageError, match="kind"):
        a.make_action("other", kind="stream")
    ask = a.make_action("req", kind="request")
    with pytest.raises(TypeError):
        await ask.request(object(), b.self_id)
    with pytest.raises(TypeError):
        await ask.request("ok", b.self_id, metadata={1, 2})
    with pytest.raises(PeerUnavailableError):
        await ask.request("ok", "X" * 20)
    with pytest.raises(TypeError):
        ask.request_many(float("nan"))
    assert a._requests.outstanding == 0


async def test_timeout(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    release = asyncio.Event()

    async def slow(data: object, peer_id: str, metadata: object) -> str:
        await release.wait()
        return "late"

    b.make_action("slow", kind="request").on_request(slow)
    with pytest.raises(PeerTimeoutError) as info:
        await a.make_action("slow", kind="request").request("x", b.self_id, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert a._requests.outstanding == 0
    release.set()
    await eventually(lambda: a.counters.unmatched_responses == 1, 5, "the late reply")


async def test_no_handler_answers_unavailable_after_half_a_second(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    b.make_action("nobody", kind="request")
    started = time.monotonic()
    with pytest.raises(RequestError) as info:
        await a.make_action("nobody", kind="request").request("x", b.self_id)
    assert info.value.remote_message == "request handler unavailable"
    assert time.monotonic() - started >= 0.45
    assert b._requests.held == 0


async def test_handler_set_late_answers_held_requests(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    late = b.make_action("late", kind="request")
    pending = asyncio.create_task(a.make_action("late", kind="request").request(1, b.self_id))
    await eventually(lambda: b._requests.held == 1, 5, "a held request")
    late.on_request(lambda data, peer_id, metadata: data + 1)
    assert await asyncio.wait_for(pending, 5) == 2

    # a request for an action b has not made yet is taken up when b makes it
    pending = asyncio.create_task(
        a.make_action("unmade", kind="request").request("q", b.self_id, metadata=7)
    )
    await eventually(lambda: len(b._unclaimed) == 1, 5, "an unclaimed request")
    b.make_action("unmade", kind="request").on_request(lambda d, p, m: [d, m])
    assert await asyncio.wait_for(pending, 5) == ["q", 7]


async def test_request_many_mixed_outcomes(join: JoinFactory) -> None:
    a, b, c, d = await mesh(join, 4)
    release = asyncio.Event()

    async def hang(data: object, peer_id: str, metadata: object) -> None:
        await release.wait()

    def fail(data: object, peer_id: str, metadata: object) -> None:
        raise ValueError("no thanks")

    b.make_action("poll", kind="request").on_request(lambda data, p, m: f"b:{data}")
    c.make_action("poll", kind="request").on_request(fail)
    d.make_action("poll", kind="request").on_request(hang)
    ghost = "Z" * 20
    poll = a.make_action("poll", kind="request")
    outcomes: dict[str, Any] = {}
    order: list[str] = []
    async for peer_id, outcome in poll.request_many(
        "q", [b.self_id, c.self_id, d.self_id, ghost, b.self_id], timeout=1.0
    ):
        outcomes[peer_id] = outcome
        order.append(peer_id)
    release.set()
    assert set(order) == {b.self_id, c.self_id, d.self_id, ghost}
    assert len(order) == 4
    assert order[-1] == d.self_id  # the timeout comes last
    assert outcomes[b.self_id] == "b:q"
    assert isinstance(outcomes[c.self_id], RequestError)
    assert outcomes[c.self_id].remote_message == "no thanks"
    assert isinstance(outcomes[d.self_id], PeerTimeoutError)
    assert isinstance(outcomes[ghost], PeerUnavailableError)

    # targets=None asks every active peer
    release.set()
    everyone = [pid async for pid, _ in poll.request_many("q", timeout=5)]
    assert sorted(everyone) == sorted([b.self_id, c.self_id, d.self_id])
    assert a._requests.outstanding == 0


async def test_breaking_out_of_request_many_cancels_the_rest(join: JoinFactory) -> None:
    a, b, c = await mesh(join, 3)
    b.make_action("part", kind="request").on_request(lambda d, p, m: "quick")

    async def hang(data: object, peer_id: str, metadata: object) -> None:
        await asyncio.Event().wait()

    c.make_action("part", kind="request").on_request(hang)
    results = a.make_action("part", kind="request").request_many("q", timeout=None)
    async for peer_id, outcome in results:
        assert (peer_id, outcome) == (b.self_id, "quick")
        break
    await results.aclose()
    await eventually(lambda: a._requests.outstanding == 0, 5, "the rest cancelled")


async def test_cancelling_a_request_forgets_it(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(data: object, peer_id: str, metadata: object) -> str:
        started.set()
        await release.wait()
        return "too late"

    b.make_action("slow", kind="request").on_request(slow)
    task = asyncio.create_task(a.make_action("slow", kind="request").request("x", b.self_id))
    await asyncio.wait_for(started.wait(), 5)
    assert a._requests.outstanding == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a._requests.outstanding == 0
    release.set()
    await eventually(lambda: a.counters.unmatched_responses == 1, 5, "the late reply dropped")
    assert b.self_id in a.get_peers()


async def test_peer_leaving_fails_its_requests(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    started = asyncio.Event()

    async def hang(data: object, peer_id: str, metadata: object) -> None:
        started.set()
        await asyncio.Event().wait()

    b.make_action("hang", kind="request").on_request(hang)
    task = asyncio.create_task(
        a.make_action("hang", kind="request").request("x", b.self_id, timeout=None)
    )
    await asyncio.wait_for(started.wait(), 5)
    await b.leave()
    with pytest.raises(PeerUnavailableError):
        await asyncio.wait_for(task, 5)
    assert a._requests.outstanding == 0


async def test_leaving_the_room_fails_pending_requests(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    started = asyncio.Event()

    async def hang(data: object, peer_id: str, metadata: object) -> None:
        started.set()
        await asyncio.Event().wait()

    b.make_action("hang", kind="request").on_request(hang)
    ask = a.make_action("hang", kind="request")
    task = asyncio.create_task(ask.request("x", b.self_id))
    many = ask.request_many("y", [b.self_id])
    await asyncio.wait_for(started.wait(), 5)
    await a.leave()
    with pytest.raises(RoomClosedError):
        await asyncio.wait_for(task, 5)
    with pytest.raises(RoomClosedError):
        await asyncio.wait_for(anext(many), 5)
    with pytest.raises(RoomClosedError):
        await ask.request("x", b.self_id)
    with pytest.raises(RoomClosedError):
        ask.request_many("x")
    assert a._requests.outstanding == 0


async def test_one_mebibyte_each_way_with_progress(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    sent: list[tuple[float, str, object]] = []
    received: list[tuple[float, str, object]] = []
    blob = bytes(range(256)) * 4096  # 1 MiB

    def reverse(data: object, peer_id: str, metadata: object) -> bytes:
        assert isinstance(data, bytes)
        return data[::-1]

    action = b.make_action("big", kind="request")
    action.on_request(reverse)
    action.on_receive_progress(lambda f, p, m: received.append((f, p, m)))
    reply = await a.make_action("big", kind="request").request(
        blob,
        b.self_id,
        metadata={"name": "blob"},
        on_progress=lambda f, p, m: sent.append((f, p, m)),
    )
    assert reply == blob[::-1]
    assert len(sent) == wire.chunk_count(len(blob), True)
    assert sent[-1] == (1.0, b.self_id, {"name": "blob"})
    assert [f for f, _, _ in sent] == sorted(f for f, _, _ in sent)
    assert len(received) >= len(sent) - 1
    assert received[-1] == (1.0, a.self_id, {"name": "blob"})
    assert all(m == {"name": "blob"} and p == a.self_id for _, p, m in received)


async def test_concurrent_handlers_are_capped(join: JoinFactory) -> None:
    a_id, b_id = peer_ids(2)
    a = await join(a_id)
    b = await join(
        b_id,
        limits=Limits(
            max_running_requests=3, max_running_requests_per_peer=2, max_waiting_requests=1
        ),
    )
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    manager = b._requests
    release = asyncio.Event()

    async def wait(data: object, peer_id: str, metadata: object) -> object:
        await release.wait()
        return data

    b.make_action("cap", kind="request").on_request(wait)
    ask = a.make_action("cap", kind="request")
    first = [asyncio.create_task(ask.request(i, b.self_id)) for i in range(3)]
    # a's third request waits: a slot of the room is free, but not one of a's
    await eventually(lambda: manager.running == 2 and manager.held == 1, 5, "two running")
    with pytest.raises(RequestError, match=r"^too many concurrent requests$"):
        await ask.request(3, b.self_id)
    release.set()
    assert await asyncio.gather(*first) == [0, 1, 2]
    assert manager.running == manager.held == 0
    assert await ask.request(4, b.self_id) == 4


async def test_malformed_and_foreign_responses_are_ignored(join: JoinFactory) -> None:
    a, b, c = await mesh(join, 3)
    release = asyncio.Event()

    async def slow(data: object, peer_id: str, metadata: object) -> str:
        await release.wait()
        return "real"

    b.make_action("q", kind="request").on_request(slow)
    task = asyncio.create_task(a.make_action("q", kind="request").request("x", b.self_id))
    await eventually(lambda: b._requests.running == 1, 5, "the handler running")
    (request_id,) = a._requests._waiters

    response = wire.encode_action_type(wire.RESPONSE)

    def frames(metadata: object | None, payload: object = None, nonce: int = 900) -> list[bytes]:
        kind, data = wire.encode_payload(payload)
        meta = None if metadata is None else wire.encode_metadata(metadata)
        return [
            encode_room_frame(a.token, chunk)
            for chunk in wire.iter_chunks(response, nonce, kind, data, meta)
        ]

    b_link = b._members[a.self_id].link
    c_link = c._members[a.self_id].link
    injected = [
        (b_link, frames(None, "no metadata", 900)),
        (b_link, frames([request_id], "metadata not an object", 901)),
        (b_link, frames({"r": 5}, "r not a string", 902)),
        (b_link, frames({"e": "x"}, None, 903)),
        (b_link, frames({"r": "U" * 20}, "unknown id", 904)),
        (c_link, frames({"r": request_id}, "from the wrong peer", 905)),
        (c_link, frames({"r": request_id, "e": "wrong peer error"}, None, 906)),
    ]
    for link, chunks in injected:
        for frame in chunks:
            assert link.send_nowait(frame)
    await eventually(
        lambda: a.counters.malformed_responses == 4 and a.counters.unmatched_responses == 3,
        5,
        "the injected replies counted",
    )
    assert not task.done()
    release.set()
    assert await asyncio.wait_for(task, 5) == "real"
    assert set(a.get_peers()) == {b.self_id, c.self_id}


async def test_malformed_requests_are_ignored(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    calls: list[object] = []
    b.make_action("strict", kind="request").on_request(lambda d, p, m: calls.append(d))
    # a plain message on a request action has no request envelope
    await a.make_action("strict").send("not a request", metadata={"x": 1})
    await a.make_action("strict").send("not a request either")
    await eventually(lambda: b.counters.malformed_requests == 2, 5, "malformed requests")
    assert calls == []


async def test_caller_id_in_request_handlers(join: JoinFactory) -> None:
    a, b = await connected_pair(join)

    async def who(data: object, peer_id: str, metadata: object) -> str:
        await asyncio.sleep(0)
        assert caller_id() == peer_id
        return caller_id()

    b.make_action("who", kind="request").on_request(who)
    assert await a.make_action("who", kind="request").request(None, b.self_id) == a.self_id
    with pytest.raises(UsageError):
        caller_id()


async def test_a_request_flood_does_not_starve_another_peer(join: JoinFactory) -> None:
    a, b, c = await mesh(join, 3)
    release = asyncio.Event()

    async def work(data: object, peer_id: str, metadata: object) -> object:
        if peer_id == a.self_id:
            await release.wait()
        return data

    b.make_action("work", kind="request").on_request(work)
    ask = a.make_action("work", kind="request")
    size = 400  # more than b runs and holds at once, with the default limits
    flood = [asyncio.create_task(ask.request(i, b.self_id)) for i in range(size)]
    manager = b._requests

    def settled() -> bool:  # every flood request is running, waiting or answered
        return manager.running + manager.held + sum(t.done() for t in flood) == size

    await eventually(settled, 30, "the flood to reach b")
    # the flood is in progress: c is served all the same
    assert await c.make_action("work", kind="request").request("c", b.self_id) == "c"
    # a runs its share, the rest of its flood waits or is refused, to a
    limits = Limits()
    assert manager.running == limits.max_running_requests_per_peer
    assert manager.held == limits.max_waiting_requests
    rest = [i for i, t in enumerate(flood) if not t.done()]
    assert len(rest) == limits.max_running_requests_per_peer + limits.max_waiting_requests
    for task in flood:
        if task.done():
            with pytest.raises(RequestError, match=r"^too many concurrent requests$"):
                task.result()
    release.set()
    assert await asyncio.gather(*(flood[i] for i in rest)) == rest
    assert manager.running == manager.held == 0


async def test_at_the_room_cap_a_waiting_peer_gets_the_next_free_handler(
    join: JoinFactory,
) -> None:
    a, b, c = await mesh(
        join,
        3,
        limits=Limits(
            max_running_requests=2, max_running_requests_per_peer=2, max_waiting_requests=4
        ),
    )
    manager = b._requests
    gates = [asyncio.Event() for _ in range(8)]
    started: list[object] = []

    async def work(data: object, peer_id: str, metadata: object) -> object:
        started.append(data)
        if peer_id == a.self_id:
            assert isinstance(data, int)
            await gates[data].wait()
        return data

    b.make_action("work", kind="request").on_request(work)
    ask = a.make_action("work", kind="request")
    flood = [asyncio.create_task(ask.request(i, b.self_id)) for i in range(8)]

    def answered() -> int:
        return sum(t.done() for t in flood)

    # two run, four wait, two are refused
    await eventually(lambda: manager.running + manager.held + answered() == 8, 10, "the flood")
    honest = asyncio.create_task(c.make_action("work", kind="request").request("c", b.self_id))
    # c's request takes the place of a's newest waiting one, which a is refused
    await eventually(lambda: honest.done() or answered() == 3, 10, "c's request to reach b")
    first = started[0]
    assert isinstance(first, int)
    gates[first].set()
    assert await asyncio.wait_for(honest, 5) == "c"
    assert started[2] == "c"  # the free handler went to c, not to a's older requests
    for gate in gates:
        gate.set()
    outcomes = await asyncio.gather(*flood, return_exceptions=True)
    refused = [o.remote_message for o in outcomes if isinstance(o, RequestError)]
    assert refused == ["too many concurrent requests"] * 3
    served = sorted(o for o in outcomes if isinstance(o, int))
    assert served == sorted(i for i in started if isinstance(i, int))


async def test_requests_are_charged_to_their_peer_and_one_that_does_not_fit_is_answered(
    join: JoinFactory,
) -> None:
    mib = 1024 * 1024
    a_id, b_id = peer_ids(2)
    a = await join(a_id)
    b = await join(b_id, limits=Limits(memory_budget=8 * mib, peer_memory=4 * mib))
    await eventually(lambda: b_id in a.get_peers() and a_id in b.get_peers(), 20, "pair")
    release = asyncio.Event()

    async def hold(data: bytes, peer_id: str, metadata: object) -> int:
        await release.wait()
        return len(data)

    b.make_action("big", kind="request").on_request(hold)
    ask = a.make_action("big", kind="request")
    size = 3 * mib // 2
    running = [asyncio.create_task(ask.request(bytes(size), b_id)) for _ in range(2)]
    await eventually(lambda: b._requests.running == 2, 10, "two handlers running")
    budget = budget_for(b.limits)
    assert budget.held(a_id) >= 2 * size
    # A third does not fit next to them: it is refused, and told so (not left to time out).
    with pytest.raises(RequestError, match=r"^too many concurrent requests$"):
        await ask.request(bytes(size), b_id, timeout=10)
    release.set()
    assert await asyncio.gather(*running) == [size, size]
    await eventually(lambda: budget.held(a_id) == 0, 5, "the requests' memory released")
