"""Named RPC (``room.expose`` / ``room.call``) between Python peers on loopback."""

from __future__ import annotations

import asyncio

import pytest

from peermesh import UsageError
from peermesh._rpc import RPC_ACTION, caller_id
from peermesh.errors import RequestError
from tests.rooms import JoinFactory, connected_pair


async def test_expose_and_call(join: JoinFactory) -> None:
    a, b = await connected_pair(join)

    @b.expose
    def add(x: int, y: int = 0) -> int:
        return x + y

    @b.expose(name="whoami")
    async def identify(greeting: str) -> str:
        await asyncio.sleep(0)
        return f"{greeting}, {caller_id()}"

    def raw(data: bytes) -> bytes:
        return data

    assert b.expose(lambda: "anon", name="anon") is not None
    assert b.expose(raw) is raw
    assert add(1, 2) == 3  # the decorator returns the function itself
    assert await a.call(b.self_id, "add", 1, 2) == 3
    assert await a.call(b.self_id, "add", 5, y=10) == 15
    assert await a.call(b.self_id, "whoami", "hello") == f"hello, {a.self_id}"
    assert await a.call(b.self_id, "anon") == "anon"
    assert await a.call(b.self_id, "raw", "text") == "text"

    @a.expose
    def add_one(x: int) -> int:
        return x + 1

    assert await b.call(a.self_id, "add_one", 41) == 42


async def test_call_errors(join: JoinFactory) -> None:
    a, b = await connected_pair(join)

    @b.expose
    def divide(x: float, y: float) -> float:
        return x / y

    @b.expose
    async def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(RequestError) as info:
        await a.call(b.self_id, "nope")
    assert str(info.value) == "no such function: nope"
    assert info.value.remote_message == "no such function: nope"
    with pytest.raises(RequestError, match=r"^ZeroDivisionError: "):
        await a.call(b.self_id, "divide", 1, 0)
    with pytest.raises(RequestError, match=r"^ValueError: bad input$"):
        await a.call(b.self_id, "broken")
    with pytest.raises(RequestError, match=r"^TypeError: "):
        await a.call(b.self_id, "divide", 1)
    with pytest.raises(TypeError):
        await a.call(b.self_id, "divide", object(), 1)
    # a hand-made request that is not a call
    rpc = a.make_action(RPC_ACTION, kind="request")
    for bad in ("divide", {"a": [1]}, {"f": "divide", "a": "12"}, {"f": "divide", "k": []}):
        with pytest.raises(RequestError, match=r"^malformed RPC call$"):
            await rpc.request(bad, b.self_id)
    assert await rpc.request({"f": "divide", "a": [6, 3]}, b.self_id) == 2


async def test_expose_rejects_bad_use(join: JoinFactory) -> None:
    a, _ = await connected_pair(join)
    with pytest.raises(UsageError):
        a.expose(42)  # type: ignore[call-overload]
    with pytest.raises(UsageError):
        a.expose(lambda: None, name="")
    with pytest.raises(UsageError, match="cannot be redefined"):
        a.make_action(RPC_ACTION)
    with pytest.raises(UsageError):
        caller_id()
