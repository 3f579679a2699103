"""Per-peer sockets and flow-controlled streams between Python peers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from peermesh import (
    PeerUnavailableError,
    Room,
    StreamReader,
    StreamResetError,
    StreamWriter,
    UsageError,
)
from peermesh._sockets import MAX_FRAME
from peermesh._wire import streams as wire
from tests.rooms import JoinFactory, connected_pair, eventually, peer_ids

T = 10  # seconds; generous bound for single steps on a loaded machine


async def _pair_streams(
    a: Room, b: Room, name: str = "bytes", **kw: int
) -> tuple[tuple[StreamReader, StreamWriter], tuple[StreamReader, StreamWriter]]:
    ends_a = await a.open_stream(b.self_id, name, **kw)
    ends_b = await b.open_stream(a.self_id, name, **kw)
    return ends_a, ends_b


# -- sockets -----------------------------------------------------------------------------------


async def test_socket_send_receive_both_ways_with_metadata(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    async with a.socket(b.self_id, "chat") as sa, b.socket(a.self_id, "chat") as sb:
        await sa.send("hello", metadata={"n": 1})
        message = await asyncio.wait_for(sb.receive_message(), T)
        assert tuple(message) == ("hello", a.self_id, {"n": 1})
        await sb.send(b"\x00bytes")
        assert await asyncio.wait_for(sa.receive(), T) == b"\x00bytes"
        for i in range(5):
            await sb.send({"i": i})
        got = []
        async for data in sa:
            got.append(data)
            if len(got) == 5:
                break
        assert got == [{"i": i} for i in range(5)]
    assert sa.closed
    assert sb.closed


async def test_socket_gets_only_its_peers_messages(join: JoinFactory) -> None:
    a_id, b_id, c_id = peer_ids(3)
    a, b, c = await join(a_id), await join(b_id), await join(c_id)
    await eventually(lambda: set(b.get_peers()) == {a_id, c_id}, 20, "three peers")
    await eventually(lambda: b_id in a.get_peers() and b_id in c.get_peers(), 20, "b seen")
    from_c: asyncio.Queue[object] = asyncio.Queue()
    async with b.socket(a_id, "chat") as sock_a, b.socket(c_id, "chat") as sock_c:
        await c.make_action("chat").send("from c", target=b_id)
        await a.make_action("chat").send("from a", target=b_id)
        assert await asyncio.wait_for(sock_a.receive(), T) == "from a"
        assert await asyncio.wait_for(sock_c.receive(), T) == "from c"
        # Another listener of the action still sees everything.
        b.make_action("chat").on_message(lambda d, p, m: from_c.put_nowait(d))
        await c.make_action("chat").send("again", target=b_id)
        assert await asyncio.wait_for(from_c.get(), T) == "again"
        assert await asyncio.wait_for(sock_c.receive(), T) == "again"
        assert sock_a._queue.__len__() == 0


async def test_socket_close_and_misuse(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    sock = a.socket(b.self_id, "chat")
    with pytest.raises(UsageError):
        a.socket(b.self_id, "chat")  # one per peer and name
    with pytest.raises(PeerUnavailableError):
        a.socket("nobody-is-called-so!", "chat")
    with pytest.raises(UsageError):
        a.socket(b.self_id, "@_reserved")
    receiving = asyncio.ensure_future(sock.receive())
    await asyncio.sleep(0)
    await sock.close()
    await sock.close()  # idempotent
    with pytest.raises(UsageError):
        await asyncio.wait_for(receiving, T)
    with pytest.raises(UsageError):
        await sock.send("x")
    assert [d async for d in sock] == []
    assert a.make_action("chat")._on_message == []  # detached
    # The name is free again.
    async with a.socket(b.self_id, "chat") as again:
        await b.socket(a.self_id, "chat").send("back")
        assert await asyncio.wait_for(again.receive(), T) == "back"


async def test_socket_ends_when_peer_leaves(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    sock = a.socket(b.self_id, "chat")
    await b.socket(a.self_id, "chat").send("last words")
    await eventually(lambda: len(sock._queue) == 1, T, "message queued")
    collected: list[object] = []

    async def collect() -> None:
        async for data in sock:
            collected.append(data)

    task = asyncio.ensure_future(collect())
    await b.leave()
    await asyncio.wait_for(task, T)  # iteration ends
    assert collected == ["last words"]
    assert sock.closed
    with pytest.raises(PeerUnavailableError):
        await sock.receive()
    with pytest.raises(PeerUnavailableError):
        await sock.send("anyone?")
    await eventually(lambda: not a._on_leave, T, "leave callback removed")


async def test_socket_ends_when_room_is_left(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    sock = a.socket(b.self_id, "chat")
    receiving = asyncio.ensure_future(sock.receive())
    await asyncio.sleep(0)
    await a.leave()
    with pytest.raises(PeerUnavailableError):
        await asyncio.wait_for(receiving, T)


# -- streams -----------------------------------------------------------------------------------


async def test_stream_round_trip_with_random_chunking(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    (ra, wa), (rb, wb) = await _pair_streams(a, b)
    rng = random.Random(7)
    blobs = {wa: rng.randbytes(3 * 1024 * 1024 + 11), wb: rng.randbytes(1024 * 1024 + 5)}

    async def send(writer: StreamWriter) -> None:
        data = memoryview(blobs[writer])
        while data:
            size = rng.randint(1, 300_000)
            writer.write(data[:size])
            data = data[size:]
            if rng.random() < 0.7:
                await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def receive(reader: StreamReader) -> bytes:
        got = bytearray()
        while not reader.at_eof():
            got += await reader.read(rng.randint(1, 200_000))
            assert reader.buffered <= wire.DEFAULT_WINDOW
        return bytes(got)

    _, _, got_b, got_a = await asyncio.wait_for(
        asyncio.gather(send(wa), send(wb), receive(rb), receive(ra)), 60
    )
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(blobs[wa]).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(blobs[wb]).digest()
    assert await rb.read() == b""
    # Both EOFs crossed: the streams let go of the rooms.
    await eventually(lambda: a.make_action("bytes")._on_message == [], T, "detached")
    await eventually(lambda: b.make_action("bytes")._on_message == [], T, "detached")


async def test_stream_readexactly_readline_eof(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    (_, wa), (rb, wb) = await _pair_streams(a, b, window=1000)
    wa.write(b"first line\nsecond")
    wa.write(b" line\n" + b"x" * 3000 + b"\nabc")
    wa.write_eof()
    assert wa.is_closing()
    with pytest.raises(UsageError):
        wa.write(b"late")
    assert await rb.readline() == b"first line\n"
    assert await rb.readexactly(7) == b"second "
    assert await rb.readline() == b"line\n"
    with pytest.raises(ValueError, match="longer than 2000"):
        await rb.readline(limit=2000)  # consumed the first 2000 x's
    assert await rb.readline() == b"x" * 1000 + b"\n"
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await rb.readexactly(5)
    assert info.value.partial == b"abc"
    assert rb.at_eof()
    assert await rb.read() == b""
    assert await rb.readline() == b""
    await wa.wait_closed()
    wb.close()
    await wb.wait_closed()
    with pytest.raises(UsageError, match="already used"):
        await a.open_stream(b.self_id, "bytes")  # _pair_streams' name, used with b
    _, writer = await a.open_stream(b.self_id, "bytes-2")  # a fresh name is fine
    writer.close()


async def test_back_pressure_bounds_bytes_in_flight(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    window = wire.DEFAULT_WINDOW
    (_, writer), (reader, wb) = await _pair_streams(a, b, window=window)
    total = 8 * 1024 * 1024  # 32 windows; the transport itself moves only a few MB/s
    block = bytes(range(256)) * 4096  # 1 MiB

    async def write_all() -> None:
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    writing = asyncio.ensure_future(write_all())
    # The reader never reads: the writer fills the window, then stalls.
    await eventually(lambda: reader.buffered == window, T, "window filled")
    for _ in range(20):
        await asyncio.sleep(0.02)
        assert writer.bytes_sent <= window + MAX_FRAME
        assert reader.buffered <= window
    assert not writing.done()
    assert writer.buffered > 0

    digest = hashlib.sha256()
    received = 0
    async for chunk in reader:
        digest.update(chunk)
        received += len(chunk)
        assert reader.buffered <= window
        assert writer.bytes_sent - received <= window
    await asyncio.wait_for(writing, T)
    assert received == total
    assert digest.digest() == hashlib.sha256(block * (total // len(block))).digest()
    wb.close()


async def test_stream_ends_when_peer_leaves(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    (ra, wa), (_, wb) = await _pair_streams(a, b, window=1000)
    wb.write(b"partial")
    await eventually(lambda: ra.buffered == 7, T, "bytes arrived")
    wa.write(b"y" * 5000)  # more than b's window: stays queued
    draining = asyncio.ensure_future(wa.drain())
    await asyncio.sleep(0.05)
    assert not draining.done()
    await b.leave()
    with pytest.raises(PeerUnavailableError):
        await asyncio.wait_for(draining, T)
    assert await ra.read(100) == b"partial"  # what arrived can still be read
    with pytest.raises(PeerUnavailableError):
        await ra.read(100)
    with pytest.raises(PeerUnavailableError):
        wa.write(b"more")
    assert wa.is_closing()


async def test_protocol_error_resets_stream_and_spares_the_room(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    reader, writer = await b.open_stream(a.self_id, "bytes", window=100)
    raw = a.make_action("bytes")
    # A data frame beyond the 100 bytes of credit b granted.
    await raw.send(wire.encode_frame(wire.DataFrame(0, b"z" * 101)), target=b.self_id)
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(reader.read(10), T)
    with pytest.raises(StreamResetError):
        await writer.drain()
    # b told a: the reset arrives on the action.
    reset: asyncio.Future[wire.Frame] = asyncio.get_running_loop().create_future()

    def on_frame(data: object, peer_id: str, metadata: object) -> None:
        frame = wire.decode_frame(data)  # b's hello first, then its reset
        if isinstance(frame, wire.Reset) and not reset.done():
            reset.set_result(frame)

    raw.on_message(on_frame)
    assert "credit" in (await asyncio.wait_for(reset, T)).reason
    # The room is fine, and so is a fresh socket on another name.
    assert a.self_id in b.get_peers()
    async with a.socket(b.self_id, "after") as sa, b.socket(a.self_id, "after") as sb:
        await sa.send("still here")
        assert await asyncio.wait_for(sb.receive(), T) == "still here"


async def test_abort_resets_both_ends(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    (ra, wa), (rb, wb) = await _pair_streams(a, b)
    wa.write(b"data")
    await wa.drain()
    wb.abort("changed my mind")
    with pytest.raises(StreamResetError):
        await rb.read()
    await eventually(lambda: wa.is_closing(), T, "reset reaches a")
    with pytest.raises(StreamResetError, match="changed my mind"):
        await ra.read()
    with pytest.raises(StreamResetError):
        wa.write(b"x")
