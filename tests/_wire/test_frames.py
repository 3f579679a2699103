"""Tests for room and presence frames, against the §12 vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.frames import (
    HANDOVER_FRAME_VERSION,
    PRESENCE_FRAME_VERSION,
    ROOM_FRAME_VERSION,
    HandoverFrame,
    HandoverSignal,
    PresenceFrame,
    RoomFrame,
    encode_handover_frame,
    encode_presence_frame,
    encode_room_frame,
    parse_frame,
    room_frame_prefix,
)
from peermesh.errors import ProtocolError, UsageError

TOKEN = "2e4f09c7740641f4d3233ddd1ee0cd54aba1e7fdc69e8b3e2ddfcded88bacd3d"
TOKEN_HEX = TOKEN.encode().hex()
HSREADY_CHUNK = bytes.fromhex("405f68737265616479" + "00" * 23 + "000001ff")
HSREADY_FRAME_HEX = "010040" + TOKEN_HEX + "405f68737265616479" + "00" * 23 + "000001ff"
PRESENCE_HEX = "02010040" + TOKEN_HEX


def test_versions() -> None:
    assert ROOM_FRAME_VERSION == 1
    assert PRESENCE_FRAME_VERSION == 2
    assert HANDOVER_FRAME_VERSION == 3


def test_room_frame_prefix() -> None:
    prefix = room_frame_prefix(TOKEN)
    assert prefix.hex() == "010040" + TOKEN_HEX
    assert len(prefix) == 67


def test_framed_hsready_vector() -> None:
    frame = encode_room_frame(TOKEN, HSREADY_CHUNK)
    assert len(frame) == 103
    assert frame.hex() == HSREADY_FRAME_HEX


def test_presence_frame_vector() -> None:
    frame = encode_presence_frame(TOKEN, True)
    assert len(frame) == 68
    assert frame.hex() == PRESENCE_HEX
    assert encode_presence_frame(TOKEN, False).hex() == "02000040" + TOKEN_HEX


def test_parse_hsready_vector() -> None:
    data = bytes.fromhex(HSREADY_FRAME_HEX)
    frame = parse_frame(data)
    assert isinstance(frame, RoomFrame)
    assert frame.token == TOKEN
    assert bytes(frame.chunk) == HSREADY_CHUNK


def test_parse_room_frame_is_zero_copy_for_bytes() -> None:
    data = encode_room_frame("t", b"payload")
    frame = parse_frame(data)
    assert isinstance(frame, RoomFrame)
    assert isinstance(frame.chunk, memoryview)
    assert frame.chunk.obj is data
    assert bytes(frame.chunk) == b"payload"


def test_parse_room_frame_copies_bytearray() -> None:
    data = bytearray(encode_room_frame("t", b"payload"))
    frame = parse_frame(data)
    data[-1] = ord("X")
    assert isinstance(frame, RoomFrame)
    assert bytes(frame.chunk) == b"payload"


def test_parse_room_frame_from_memoryview() -> None:
    data = b"junk" + encode_room_frame("tok", b"abc")
    frame = parse_frame(memoryview(data)[4:])
    assert frame == RoomFrame("tok", b"abc")


def test_parse_room_frame_with_empty_chunk() -> None:
    frame = parse_frame(room_frame_prefix(TOKEN))
    assert isinstance(frame, RoomFrame)
    assert frame.token == TOKEN
    assert bytes(frame.chunk) == b""


def test_parse_presence_vector() -> None:
    assert parse_frame(bytes.fromhex(PRESENCE_HEX)) == PresenceFrame(TOKEN, True)
    assert parse_frame(encode_presence_frame(TOKEN, False)) == PresenceFrame(TOKEN, False)


@pytest.mark.parametrize("signal", list(HandoverSignal))
def test_handover_frame(signal: HandoverSignal) -> None:
    frame = encode_handover_frame(signal)
    assert frame == bytes((3, signal.value))
    assert parse_frame(frame) == HandoverFrame(signal)


def test_parse_presence_ignores_trailing_bytes() -> None:
    assert parse_frame(encode_presence_frame("abc", True) + b"zz") == PresenceFrame("abc", True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x00\x00\x01a", "version"),
        (b"\x04\x00\x01a", "version"),
        (b"\xff", "version"),
        (b"{", "version"),  # a text/JSON message is not a frame
        (b"\x01", "truncated"),
        (b"\x01\x00", "truncated"),
        (b"\x01\x00\x00", "empty token"),
        (b"\x01\x00\x00chunk", "empty token"),
        (b"\x01\x00\x05abc", "past the end"),
        (b"\x01\x00\x40" + b"a" * 63, "past the end"),
        (b"\x01\x00\x02\xc3\xa9chunk", "ASCII"),
        (b"\x01\x00\x01\x80", "ASCII"),
        (b"\x02", "truncated"),
        (b"\x02\x01\x00", "truncated"),
        (b"\x02\x02\x00\x01a", "presence flag"),
        (b"\x02\xff\x00\x01a", "presence flag"),
        (b"\x02\x01\x00\x00", "empty token"),
        (b"\x02\x01\x00\x03ab", "past the end"),
        (b"\x02\x01\x00\x01\xff", "ASCII"),
        (b"\x03", "handover"),
        (b"\x03\x00", "handover"),
        (b"\x03\x03", "handover"),
        (b"\x03\x01\x00", "handover"),  # exactly two bytes
    ],
)
def test_parse_frame_rejects(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_frame(data)


@pytest.mark.parametrize("token", ["", "é", "a" * 65536])
def test_encoders_reject_bad_tokens(token: str) -> None:
    with pytest.raises(UsageError):
        room_frame_prefix(token)
    with pytest.raises(UsageError):
        encode_room_frame(token, b"x")
    with pytest.raises(UsageError):
        encode_presence_frame(token, True)


def test_long_token_round_trip() -> None:
    token = "a" * 65535
    frame = parse_frame(encode_room_frame(token, b"z"))
    assert frame == RoomFrame(token, b"z")


_tokens = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1)


@settings(max_examples=150)
@given(_tokens, st.binary(max_size=300))
def test_room_frame_round_trip(token: str, chunk: bytes) -> None:
    frame = parse_frame(encode_room_frame(token, chunk))
    assert frame == RoomFrame(token, chunk)


@settings(max_examples=100)
@given(_tokens, st.booleans())
def test_presence_frame_round_trip(token: str, present: bool) -> None:
    assert parse_frame(encode_presence_frame(token, present)) == PresenceFrame(token, present)


@settings(max_examples=400)
@given(
    st.binary(max_size=80)
    | st.tuples(
        st.sampled_from([b"\x01", b"\x02", b"\x02\x01", b"\x02\x00", b"\x03"]), st.binary()
    ).map(lambda t: t[0] + t[1])
)
def test_parse_frame_only_raises_protocol_error(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except ProtocolError:
        return
    if isinstance(frame, HandoverFrame):
        assert data == encode_handover_frame(frame.signal)
        return
    assert isinstance(frame, RoomFrame | PresenceFrame)
    assert frame.token
