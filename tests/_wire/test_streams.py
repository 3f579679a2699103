"""The sans-I/O stream state machine: framing, credit, sequencing and resets."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.streams import (
    MAX_FRAME,
    Credit,
    DataFrame,
    Eof,
    Frame,
    Hello,
    Reset,
    StreamState,
    decode_frame,
    encode_frame,
)
from peermesh.errors import ProtocolError, UsageError


def pump(src: StreamState, dst: StreamState) -> int:
    """Hand every frame ``src`` can send now to ``dst`` (through the codec)."""
    count = 0
    while (frame := src.next_frame()) is not None:
        dst.receive(decode_frame(encode_frame(frame)))
        count += 1
    return count


def opened(window: int = 100, **kw: int) -> tuple[StreamState, StreamState]:
    a, b = StreamState(window, **kw), StreamState(window, **kw)
    pump(a, b)
    pump(b, a)
    pump(a, b)
    return a, b


# -- codec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(0, b"x"),
        DataFrame(2**40, b"\x00" * MAX_FRAME),
        Hello(5, True),
        Hello(0, False),
        Credit(123),
        Eof(77),
        Reset("why"),
    ],
)
def test_codec_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00" * 8,  # offset but no data
        b"\x00" * 8 + b"x" * (MAX_FRAME + 1),
        "text",
        None,
        [1],
        {"s": "nope"},
        {"s": "credit"},
        {"s": "credit", "limit": -1},
        {"s": "credit", "limit": True},
        {"s": "credit", "limit": 1.5},
        {"s": "credit", "limit": 2**53},
        {"s": "hello", "limit": 1},
        {"s": "eof", "offset": "3"},
    ],
)
def test_malformed_messages_are_protocol_errors(payload: object) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(payload)


# -- the property ------------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 3 * 4096)),
        st.tuples(st.just("read"), st.integers(-1, 2 * 4096)),
        st.tuples(st.just("send_a"), st.integers(1, 5)),  # A hands frames to its transport
        st.tuples(st.just("send_b"), st.integers(1, 5)),
        st.tuples(st.just("deliver_ab"), st.integers(1, 5)),  # transport delivers to B
        st.tuples(st.just("deliver_ba"), st.integers(1, 5)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=_ops,
    window=st.integers(1, 4 * 4096),
    max_frame=st.sampled_from([1, 7, 100, 1000, 4096]),
    seed=st.binary(min_size=1, max_size=64),
)
def test_bytes_arrive_exactly_and_in_flight_stays_within_window(
    ops: list[tuple[str, int]], window: int, max_frame: int, seed: bytes
) -> None:
    """Random write sizes, read sizes and delivery timing (which decides when credit is
    granted and seen) give back exactly the bytes written, and the writer never has more
    than ``window`` bytes beyond what the reader consumed; the reader never buffers more."""
    a = StreamState(window, max_frame=max_frame)  # writer
    b = StreamState(window, max_frame=max_frame)  # reader
    ab: deque[object] = deque()  # encoded payloads on the wire, in order
    ba: deque[object] = deque()
    written = bytearray()
    got = bytearray()
    counter = 0

    def check() -> None:
        assert a.sent - b.consumed <= window
        assert b.read_buffered <= window
        assert b.received <= b.advertised
        assert a.reset_reason is None
        assert b.reset_reason is None

    def send(src: StreamState, wire: deque[object], n: int) -> None:
        for _ in range(n):
            frame = src.next_frame()
            if frame is None:
                return
            wire.append(encode_frame(frame))

    def deliver(wire: deque[object], dst: StreamState, n: int) -> None:
        for _ in range(n):
            if not wire:
                return
            dst.receive(decode_frame(wire.popleft()))

    for op, arg in ops:
        if op == "write":
            data = (seed * (arg // len(seed) + 2))[counter % len(seed) :][:arg]
            counter += 1
            if a.write_buffered + len(data) <= a.write_limit:
                a.write(data)
                written += data
        elif op == "read":
            got += b.read(arg)
        elif op == "send_a":
            send(a, ab, arg)
        elif op == "send_b":
            send(b, ba, arg)
        elif op == "deliver_ab":
            deliver(ab, b, arg)
        else:
            deliver(ba, a, arg)
        check()

    a.write_eof()
    for _ in range(200_000):
        send(a, ab, 1)
        send(b, ba, 1)
        deliver(ab, b, 1)
        deliver(ba, a, 1)
        got += b.read(max(1, window // 3))
        check()
        if b.at_eof and not ab and not ba:
            break
    assert b.at_eof
    assert bytes(got) == bytes(written)
    assert a.eof_sent
    assert a.write_buffered == 0


# -- handshake, credit and protocol errors -----------------------------------------------------


def test_writer_without_credit_sends_nothing() -> None:
    a = StreamState(10)
    a.write(b"x" * 50)
    assert isinstance(a.next_frame(), Hello)
    assert a.next_frame() is None  # no hello (so no credit) from the peer yet


def test_lost_hello_is_resent() -> None:
    a, b = StreamState(10), StreamState(10)
    lost = a.next_frame()  # a's hello never reaches b
    assert lost == Hello(10, False)
    pump(b, a)  # b's hello says it has not seen a's
    assert a.next_frame() == Hello(10, True)
    b.receive(Hello(10, True))
    assert b.next_frame() is None  # an acknowledged hello is not answered
    a.write(b"0123456789abc")
    assert a.next_frame() == DataFrame(0, b"0123456789")
    assert a.next_frame() is None


def test_simultaneous_hellos_settle() -> None:
    a, b = StreamState(10), StreamState(10)
    ha, hb = a.next_frame(), b.next_frame()
    assert ha is not None
    assert hb is not None
    a.receive(hb)
    b.receive(ha)
    pump(a, b)
    pump(b, a)
    assert a.next_frame() is None
    assert b.next_frame() is None
    assert a.peer_limit == b.peer_limit == 10


def test_credit_is_granted_after_half_a_window_is_read() -> None:
    a, b = opened(10)
    a.write(b"x" * 30)
    pump(a, b)
    assert b.read_buffered == 10
    assert a.write_buffered == 20
    b.read(4)
    assert b.next_frame() is None  # less than half a window consumed
    b.read(1)
    assert b.next_frame() == Credit(15)
    assert b.next_frame() is None


def test_eof_and_finished() -> None:
    a, b = opened()
    a.write(b"abc")
    a.write_eof()
    with pytest.raises(UsageError):
        a.write(b"more")
    pump(a, b)
    assert b.eof_received
    assert not b.at_eof
    assert b.read() == b"abc"
    assert b.at_eof
    assert not a.finished
    b.write_eof()
    pump(b, a)
    assert a.finished
    assert b.finished


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(0, b"x" * 11),  # beyond the 10-byte credit
        DataFrame(1, b"x"),  # out of order
        Eof(3),  # EOF claims bytes that never came
    ],
)
def test_violations_reset_the_stream(frame: Frame) -> None:
    a, b = opened(10)
    b.write(b"pending")
    with pytest.raises(ProtocolError):
        b.receive(frame)
    assert b.reset_reason is not None
    assert b.write_buffered == 0
    assert b.read_buffered == 0
    reset = b.next_frame()
    assert isinstance(reset, Reset)
    assert b.next_frame() is None
    assert b.finished
    b.receive(DataFrame(0, b"ignored"))  # frames after a reset are ignored
    a.receive(reset)
    assert a.reset_reason is not None
    assert a.reset_by_peer
    assert a.next_frame() is None
    assert a.finished
    with pytest.raises(UsageError):
        a.write(b"x")


def test_data_after_eof_is_a_violation() -> None:
    _a, b = opened(10)
    b.receive(Eof(0))
    with pytest.raises(ProtocolError):
        b.receive(DataFrame(0, b"x"))


def test_credit_before_hello_is_a_violation() -> None:
    a = StreamState(10)
    with pytest.raises(ProtocolError):
        a.receive(Credit(5))


def test_write_limit() -> None:
    a = StreamState(10, write_limit=5)
    a.write(b"12345")
    with pytest.raises(UsageError):
        a.write(b"6")


@pytest.mark.parametrize("kw", [{"window": 0}, {"max_frame": MAX_FRAME + 1}, {"write_limit": -1}])
def test_bad_parameters(kw: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        StreamState(**kw)
