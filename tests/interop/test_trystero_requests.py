"""Request/response actions between a Python peer and a real Trystero 0.25.4 peer, both ways,
on torrent and nostr: replies (text, JSON, 1 MiB of bytes with metadata), error texts,
timeouts and the "request handler unavailable" answer of a peer with no handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peermesh.errors import PeerTimeoutError, RequestError
from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import MIB, SMALL_ID, Medium, connect
from tests.interop.jspeer import GeneratedBytes, ReceivedBytes, decode_data, deterministic_bytes

pytestmark = pytest.mark.interop

UNAVAILABLE = "request handler unavailable"


async def test_python_requests_trystero(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    py = await connect(signal_medium, js, "req-py-to-js")
    try:
        await js.request_action("ask", "echo")
        ask = py.room.make_action("ask", kind="request")

        # success: text, JSON, 1 MiB of bytes with metadata (echoed back by the handler)
        assert await ask.request("hello trystero", js.self_id, timeout=10) == "hello trystero"
        ev = await js.wait_event("request", action="ask", peerId=SMALL_ID)
        assert decode_data(ev["data"]) == "hello trystero"
        assert "metadata" not in ev

        doc = {"n": [1, 2.5, None], "ok": True, "s": "é✓"}
        assert await ask.request(doc, js.self_id, metadata={"k": 1}, timeout=10) == doc
        ev = await js.wait_event("request", action="ask", peerId=SMALL_ID)
        assert decode_data(ev["data"]) == doc
        assert ev["metadata"] == {"k": 1}

        blob = deterministic_bytes(MIB, "request py->js")
        reply = await ask.request(blob, js.self_id, metadata={"name": "big.bin"}, timeout=30)
        assert reply == blob
        ev = await js.wait_event("request", action="ask", peerId=SMALL_ID)
        assert (ev["data"]["length"], ev["data"]["sha256"]) == (
            MIB,
            GeneratedBytes(MIB, "request py->js").sha256,
        )
        assert ev["metadata"] == {"name": "big.bin"}

        # request_many over every peer (just the one Trystero peer here)
        outcomes = [o async for o in ask.request_many("to all", timeout=10)]
        assert outcomes == [(js.self_id, "to all")]

        # the handler's error text travels
        await js.request_action("ask", "error", error_text="no thanks: quota exceeded")
        with pytest.raises(RequestError) as err:
            await ask.request("x", js.self_id, timeout=10)
        assert err.value.remote_message == "no thanks: quota exceeded"

        # a handler slower than the caller's timeout
        await js.request_action("ask", "slow", delay_ms=3000)
        with pytest.raises(PeerTimeoutError):
            await ask.request("slowly", js.self_id, timeout=0.5)
        assert isinstance(PeerTimeoutError("x"), TimeoutError)

        # no handler: Trystero answers after its 500 ms grace
        await js.request_action("ask", "none")
        with pytest.raises(RequestError) as err:
            await ask.request("anyone?", js.self_id, timeout=10)
        assert err.value.remote_message == UNAVAILABLE

        # the late reply of the slow handler was dropped quietly; the room still works
        await js.request_action("ask", "echo")
        assert await ask.request("still here", js.self_id, timeout=10) == "still here"
        assert py.errors == []
    finally:
        await py.room.leave()


async def test_trystero_requests_python(
    signal_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    py = await connect(signal_medium, js, "req-js-to-py")
    try:
        seen: list[tuple[Any, str, Any]] = []
        mode = {"value": "echo"}

        async def handler(data: Any, peer_id: str, metadata: Any) -> Any:
            seen.append((data, peer_id, metadata))
            if mode["value"] == "error":
                raise ValueError("python says no: bad input")
            if mode["value"] == "slow":
                await asyncio.sleep(3)
            return data

        py.room.make_action("ask", kind="request").on_request(handler)
        py.room.make_action("unhandled", kind="request")  # made, but no handler

        res = await js.request("ask", "hello python", SMALL_ID, timeout_ms=10_000)
        assert (res.ok, res.value) == (True, "hello python")
        assert seen.pop() == ("hello python", js.self_id, None)

        doc = {"list": [1, "two", None], "nested": {"ok": False}}
        res = await js.request("ask", doc, SMALL_ID, metadata={"m": [1]}, timeout_ms=10_000)
        assert (res.ok, res.value) == (True, doc)
        assert seen.pop() == (doc, js.self_id, {"m": [1]})

        spec = GeneratedBytes(MIB, "request js->py")
        res = await js.request(
            "ask", spec, SMALL_ID, metadata={"name": "js.bin"}, timeout_ms=30_000, timeout=40
        )
        assert res.ok, res
        assert res.value == ReceivedBytes(length=MIB, sha256=spec.sha256)
        assert seen.pop() == (spec.materialize(), js.self_id, {"name": "js.bin"})

        mode["value"] = "error"
        res = await js.request("ask", "x", SMALL_ID, timeout_ms=10_000)
        # Trystero wraps the remote text in its own Error: "Trystero: <text>"
        assert (res.ok, res.kind, res.message) == (
            False,
            "rejected",
            "Trystero: python says no: bad input",
        )

        mode["value"] = "slow"
        res = await js.request("ask", "slowly", SMALL_ID, timeout_ms=500)
        assert (res.ok, res.kind) == (False, "timeout")

        res = await js.request("unhandled", "anyone?", SMALL_ID, timeout_ms=10_000)
        assert (res.ok, res.kind, res.message) == (False, "rejected", f"Trystero: {UNAVAILABLE}")

        mode["value"] = "echo"
        res = await js.request("ask", "still here", SMALL_ID, timeout_ms=10_000)
        assert (res.ok, res.value) == (True, "still here")
        assert py.errors == []
    finally:
        await py.room.leave()
