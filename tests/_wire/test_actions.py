"""Tests for action chunks, payload typing, chunking and reassembly (§6.3–§6.5, §12)."""

from __future__ import annotations

import json
import math
import random
import sys
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peermesh._limits import MemoryBudget
from peermesh._wire.actions import (
    HEADER_SIZE,
    HSDATA,
    HSREADY,
    INTERNAL_PREFIX,
    LEAVE,
    MAX_CHUNK_PAYLOAD,
    MAX_CHUNK_SIZE,
    MAX_META_PAYLOAD,
    PING,
    PONG,
    RESPONSE,
    SIGNAL,
    STREAM,
    TAG_BINARY,
    TAG_JSON,
    TAG_LAST,
    TAG_META,
    TRACK,
    TYPE_FIELD_SIZE,
    ActionChunk,
    MessageReceived,
    PayloadKind,
    Reassembler,
    ReceiveProgress,
    chunk_count,
    decode_payload,
    decoded_size,
    encode_action_type,
    encode_metadata,
    encode_payload,
    iter_chunks,
    next_nonce,
    parse_chunk,
)
from peermesh._wire.frames import RoomFrame, parse_frame, room_frame_prefix
from peermesh.errors import ProtocolError, UsageError

TOKEN = "2e4f09c7740641f4d3233ddd1ee0cd54aba1e7fdc69e8b3e2ddfcded88bacd3d"
HSREADY_FRAME_HEX = "010040" + TOKEN.encode().hex() + "405f68737265616479" + "00" * 23 + "000001ff"
_NO_META = object()


def header(name: str, nonce: int, tag: int, progress: int) -> bytes:
    """An independent construction of the 36-byte header, for comparisons."""
    return name.encode().ljust(32, b"\0") + nonce.to_bytes(2, "big") + bytes([tag, progress])


def chunks_for(
    name: str, nonce: int, value: object, meta: object = _NO_META, *, prefix: bytes = b""
) -> list[bytes]:
    kind, payload = encode_payload(value)
    metadata = None if meta is _NO_META else encode_metadata(meta)
    return list(
        iter_chunks(encode_action_type(name), nonce, kind, payload, metadata, prefix=prefix)
    )


def parsed_for(name: str, nonce: int, value: object, meta: object = _NO_META) -> list[ActionChunk]:
    return [parse_chunk(c) for c in chunks_for(name, nonce, value, meta)]


def raw_chunk(name: str, nonce: int, tag: int, payload: bytes, progress: int = 255) -> ActionChunk:
    return parse_chunk(header(name, nonce, tag, progress) + payload)


# --------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert (HEADER_SIZE, TYPE_FIELD_SIZE, MAX_CHUNK_SIZE, MAX_CHUNK_PAYLOAD) == (
        36,
        32,
        16384,
        16348,
    )
    assert (TAG_LAST, TAG_META, TAG_BINARY, TAG_JSON) == (1, 2, 4, 8)
    assert MAX_META_PAYLOAD + HEADER_SIZE + 67 == 65536
    internal = [HSREADY, HSDATA, LEAVE, PING, PONG, SIGNAL, STREAM, TRACK, RESPONSE]
    assert internal == [
        "@_hsready",
        "@_hsdata",
        "@_leave",
        "@_ping",
        "@_pong",
        "@_signal",
        "@_stream",
        "@_track",
        "@_response",
    ]
    assert INTERNAL_PREFIX == "@_"
    assert all(name.startswith(INTERNAL_PREFIX) for name in internal)


def test_next_nonce_wraps() -> None:
    assert next_nonce(0) == 1
    assert next_nonce(41) == 42
    assert next_nonce(65535) == 0


# --------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    ("value", "kind", "encoded"),
    [
        ("hi", PayloadKind.TEXT, b"hi"),
        ("", PayloadKind.TEXT, b""),
        ("é€😀", PayloadKind.TEXT, "é€😀".encode()),
        (b"\x01\x02\x03", PayloadKind.BINARY, b"\x01\x02\x03"),
        (b"", PayloadKind.BINARY, b""),
        (bytearray(b"ab"), PayloadKind.BINARY, b"ab"),
        (memoryview(b"xyz")[1:], PayloadKind.BINARY, b"yz"),
        ({"a": 1}, PayloadKind.JSON, b'{"a":1}'),
        (42, PayloadKind.JSON, b"42"),
        (1.5, PayloadKind.JSON, b"1.5"),
        (True, PayloadKind.JSON, b"true"),
        (None, PayloadKind.JSON, b"null"),
        ([1, "x", None], PayloadKind.JSON, b'[1,"x",null]'),
        ((1, 2), PayloadKind.JSON, b"[1,2]"),
        ({"k": "é"}, PayloadKind.JSON, '{"k":"é"}'.encode()),
    ],
)
def test_encode_payload(value: object, kind: PayloadKind, encoded: bytes) -> None:
    got_kind, got = encode_payload(value)
    assert got_kind is kind
    assert type(got) is bytes
    assert got == encoded


def test_encode_payload_does_not_copy_bytes() -> None:
    data = b"x" * 1000
    assert encode_payload(data)[1] is data


def test_encode_payload_copies_mutable_buffers() -> None:
    buf = bytearray(b"abc")
    _, encoded = encode_payload(buf)
    buf[0] = 0
    assert encoded == b"abc"


def test_encode_payload_lone_surrogates() -> None:
    assert encode_payload("a\ud800") == (PayloadKind.TEXT, b"a\xef\xbf\xbd")
    kind, encoded = encode_payload({"s": "\ud800é"})
    assert kind is PayloadKind.JSON
    assert json.loads(encoded) == {"s": "\ud800é"}  # escaped, like JSON.stringify


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, [1, math.nan], {1, 2}, object(), {"b": b"x"}, {(1,): 2}],
)
def test_encode_payload_rejects_non_json(value: object) -> None:
    with pytest.raises(TypeError):
        encode_payload(value)


def test_encode_payload_rejects_circular() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="JSON"):
        encode_payload(loop)


def test_decode_payload() -> None:
    assert decode_payload(PayloadKind.BINARY, memoryview(b"\x00\xff")) == b"\x00\xff"
    assert type(decode_payload(PayloadKind.BINARY, memoryview(b"ab"))) is bytes
    assert decode_payload(PayloadKind.TEXT, "é".encode()) == "é"
    assert decode_payload(PayloadKind.JSON, b'{"a":[1,null]}') == {"a": [1, None]}


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (PayloadKind.TEXT, b"\xff"),
        (PayloadKind.TEXT, b"\xc3"),
        (PayloadKind.JSON, b"\xff"),
        (PayloadKind.JSON, b""),
        (PayloadKind.JSON, b"{"),
        (PayloadKind.JSON, b"NaN"),
        (PayloadKind.JSON, b"[Infinity]"),
        (PayloadKind.JSON, b"-Infinity"),
        (PayloadKind.JSON, b"[" * 100_000 + b"]" * 100_000),
        (PayloadKind.JSON, b"1" * 5000),  # beyond Python's int digit limit
    ],
)
def test_decode_payload_rejects(kind: PayloadKind, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(kind, data)


# --------------------------------------------------------------------------- type field


def test_encode_action_type() -> None:
    assert encode_action_type("chat") == b"chat" + b"\0" * 28
    assert encode_action_type("x" * 32) == b"x" * 32
    assert encode_action_type("é" * 16) == "é".encode() * 16


@pytest.mark.parametrize("name", ["", "x" * 33, "é" * 17, "a\0b", "\ud800"])
def test_encode_action_type_rejects(name: str) -> None:
    with pytest.raises(UsageError):
        encode_action_type(name)


# --------------------------------------------------------------------------- §6.4 vectors


def test_vector_hi_on_chat() -> None:
    (chunk,) = chunks_for("chat", 0, "hi")
    assert chunk.hex() == "63686174" + "00" * 28 + "0000" + "01" + "ff" + "6869"


def test_vector_object() -> None:
    (chunk,) = chunks_for("chat", 0, {"a": 1})
    assert chunk == header("chat", 0, 0x09, 0xFF) + b'{"a":1}'


def test_vector_number() -> None:
    (chunk,) = chunks_for("chat", 0, 42)
    assert chunk == header("chat", 0, 0x09, 0xFF) + b"42"


def test_vector_bytes_with_metadata() -> None:
    first, second = chunks_for("file", 3, b"\x01\x02\x03", {"name": "f"})
    assert first == header("file", 3, 0x0E, 0x80) + b'{"name":"f"}'
    assert second == header("file", 3, 0x0D, 0xFF) + b"\x01\x02\x03"
    assert first[32:36].hex() == "00030e80"
    assert second[32:36].hex() == "00030dff"


def test_vector_40000_bytes_three_chunks() -> None:
    payload = bytes(range(256)) * 156 + bytes(64)
    assert len(payload) == 40000
    chunks = chunks_for("file", 0, payload)
    assert [len(c) for c in chunks] == [16384, 16384, 7340]
    assert [c[34] for c in chunks] == [0x0C, 0x0C, 0x0D]
    assert [c[35] for c in chunks] == [85, 170, 255]
    assert b"".join(c[36:] for c in chunks) == payload
    assert all(c[:32] == encode_action_type("file") for c in chunks)


def test_vector_framed_hsready() -> None:
    (frame,) = chunks_for(HSREADY, 0, "", prefix=room_frame_prefix(TOKEN))
    assert len(frame) == 103
    assert frame.hex() == HSREADY_FRAME_HEX


def test_empty_payload_without_metadata_is_one_empty_last_chunk() -> None:
    for value, tag in (("", 0x01), (b"", 0x0D)):
        (chunk,) = chunks_for("x", 7, value)
        assert chunk == header("x", 7, tag, 255)


def test_empty_payload_with_metadata_is_one_meta_last_chunk() -> None:
    (chunk,) = chunks_for("x", 0, "", {"m": 1})
    assert chunk == header("x", 0, 0x03, 255) + b'{"m":1}'
    (chunk,) = chunks_for("x", 0, b"", None)  # JSON null metadata still counts
    assert chunk == header("x", 0, 0x0F, 255) + b"null"


def test_exact_multiple_of_chunk_payload() -> None:
    chunks = chunks_for("x", 0, b"a" * (2 * MAX_CHUNK_PAYLOAD), {"k": 0})
    assert [len(c) for c in chunks] == [HEADER_SIZE + 7, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE]
    assert [c[34] for c in chunks] == [0x0E, 0x0C, 0x0D]
    assert [c[35] for c in chunks] == [85, 170, 255]


@pytest.mark.parametrize(
    ("length", "meta", "count"),
    [
        (0, False, 1),
        (0, True, 1),
        (1, False, 1),
        (1, True, 2),
        (16348, False, 1),
        (16349, False, 2),
        (16349, True, 3),
        (40000, False, 3),
        (64 * 1024 * 1024, False, 4106),
    ],
)
def test_chunk_count(length: int, meta: bool, count: int) -> None:
    assert chunk_count(length, meta) == count


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 510, 511, 1000, 4106])
def test_progress_bytes_match_math_round(total: int) -> None:
    payload = bytes(MAX_CHUNK_PAYLOAD * total)
    chunks = iter_chunks(encode_action_type("p"), 0, PayloadKind.BINARY, payload)
    got = [c[35] for c in chunks]
    assert len(got) == total
    # Math.round(x) == floor(x + 0.5) for every value that occurs here.
    assert got == [math.floor((i + 1) / total * 255 + 0.5) for i in range(total)]
    assert got[-1] == 255


def test_iter_chunks_checks_arguments_eagerly() -> None:
    field = encode_action_type("x")
    with pytest.raises(UsageError):
        iter_chunks(b"short", 0, PayloadKind.TEXT, b"")
    with pytest.raises(UsageError):
        iter_chunks(field, -1, PayloadKind.TEXT, b"")
    with pytest.raises(UsageError):
        iter_chunks(field, 65536, PayloadKind.TEXT, b"")
    with pytest.raises(UsageError):
        iter_chunks(field, 0, PayloadKind.TEXT, b"", b"x" * (MAX_META_PAYLOAD + 1))
    assert len(list(iter_chunks(field, 0, PayloadKind.TEXT, b"", b"x" * MAX_META_PAYLOAD))) == 1


def test_iter_chunks_with_prefix_yields_room_frames() -> None:
    prefix = room_frame_prefix(TOKEN)
    payload = bytes(range(256)) * 100
    frames = chunks_for("file", 9, payload, {"n": 1}, prefix=prefix)
    plain = chunks_for("file", 9, payload, {"n": 1})
    assert frames == [prefix + c for c in plain]
    parsed = [parse_frame(f) for f in frames]
    assert all(isinstance(f, RoomFrame) and f.token == TOKEN for f in parsed)


# --------------------------------------------------------------------------- parse_chunk


def test_parse_chunk_fields_and_zero_copy() -> None:
    data = header("chat", 513, 0x09, 200) + b'{"a":1}'
    chunk = parse_chunk(data)
    assert chunk.action_type == "chat"
    assert chunk.nonce == 513
    assert chunk.last is True
    assert chunk.is_meta is False
    assert chunk.kind is PayloadKind.JSON
    assert chunk.progress == 200
    assert isinstance(chunk.payload, memoryview)
    assert chunk.payload.obj is data
    assert bytes(chunk.payload) == b'{"a":1}'


def test_parse_chunk_from_room_frame_view() -> None:
    frame = parse_frame(chunks_for("chat", 1, "hi", prefix=room_frame_prefix(TOKEN))[0])
    assert isinstance(frame, RoomFrame)
    chunk = parse_chunk(frame.chunk)
    assert (chunk.action_type, chunk.nonce, chunk.kind, bytes(chunk.payload)) == (
        "chat",
        1,
        PayloadKind.TEXT,
        b"hi",
    )


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        (0x00, PayloadKind.TEXT),
        (0x01, PayloadKind.TEXT),
        (0x08, PayloadKind.JSON),
        (0x04, PayloadKind.BINARY),
        (0x0C, PayloadKind.BINARY),
        (0x0F, PayloadKind.BINARY),
        (0xF1, PayloadKind.TEXT),  # unknown high bits are ignored
    ],
)
def test_parse_chunk_kind_from_tag(tag: int, kind: PayloadKind) -> None:
    chunk = parse_chunk(header("a", 0, tag, 0))
    assert chunk.kind is kind
    assert chunk.last is bool(tag & 1)
    assert chunk.is_meta is bool(tag & 2)


def test_parse_chunk_strips_every_nul() -> None:
    field = b"\0ch\0at" + b"\0" * 26
    chunk = parse_chunk(field + b"\x00\x00\x01\xff")
    assert chunk.action_type == "chat"


def test_parse_chunk_full_32_byte_type() -> None:
    assert parse_chunk(header("y" * 32, 0, 1, 255)).action_type == "y" * 32


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter"),
        (header("chat", 0, 1, 255)[:35], "shorter"),
        (b"\xff" + b"\0" * 31 + b"\0\0\x01\xff", "UTF-8"),
        (b"\xc3" + b"\0" * 31 + b"\0\0\x01\xff", "UTF-8"),
        (b"\0" * 36, "empty"),
        (header("a", 0, 1, 255) + bytes(MAX_CHUNK_PAYLOAD + 1), "exceeds"),
        (header("a", 0, 3, 255) + bytes(MAX_META_PAYLOAD + 1), "exceeds"),
    ],
)
def test_parse_chunk_rejects(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_chunk(data)


def test_parse_chunk_size_limits() -> None:
    assert len(parse_chunk(header("a", 0, 1, 255) + bytes(MAX_CHUNK_PAYLOAD)).payload) == 16348
    meta = parse_chunk(header("a", 0, 2, 0) + bytes(40000))
    assert meta.is_meta
    assert len(meta.payload) == 40000
    with pytest.raises(ProtocolError):
        parse_chunk(header("a", 0, 2, 0) + bytes(101), max_meta_payload=100)


@settings(max_examples=400)
@given(
    st.binary(max_size=120)
    | st.tuples(
        st.binary(min_size=32, max_size=32), st.binary(min_size=4, max_size=4), st.binary()
    ).map(lambda t: t[0] + t[1] + t[2])
)
def test_parse_chunk_only_raises_protocol_error(data: bytes) -> None:
    try:
        chunk = parse_chunk(data)
    except ProtocolError:
        return
    assert chunk.action_type
    assert "\0" not in chunk.action_type
    assert 0 <= chunk.nonce <= 0xFFFF
    assert len(chunk.payload) == len(data) - HEADER_SIZE


# --------------------------------------------------------------------------- Reassembler


def feed_all(
    reassembler: Reassembler, peer: str, chunks: list[ActionChunk]
) -> list[ReceiveProgress | MessageReceived | None]:
    return [reassembler.feed(peer, c) for c in chunks]


def test_reassembler_single_chunk_message() -> None:
    r = Reassembler()
    (event,) = feed_all(r, "p", parsed_for("chat", 5, "hi"))
    assert event == MessageReceived("p", "chat", 5, PayloadKind.TEXT, "hi", None, 1.0)
    assert r.pending() == 0


def test_reassembler_multi_chunk_with_metadata() -> None:
    payload = bytes(range(256)) * 156 + bytes(64)
    r = Reassembler()
    events = feed_all(r, "p", parsed_for("file", 3, payload, {"name": "f"}))
    assert events[:3] == [
        ReceiveProgress("p", "file", 3, 64 / 255, {"name": "f"}),
        ReceiveProgress("p", "file", 3, 128 / 255, {"name": "f"}),
        ReceiveProgress("p", "file", 3, 191 / 255, {"name": "f"}),
    ]
    final = events[3]
    assert isinstance(final, MessageReceived)
    assert final.data == payload
    assert type(final.data) is bytes
    assert final.metadata == {"name": "f"}
    assert final.kind is PayloadKind.BINARY
    assert final.progress == 1.0
    assert r.pending() == 0
    assert r.buffered() == 0


def test_reassembler_pending_while_in_progress() -> None:
    r = Reassembler()
    chunks = parsed_for("file", 0, bytes(40000))
    r.feed("p", chunks[0])
    assert r.pending() == 1
    assert r.pending("p") == 1
    assert r.pending("q") == 0
    assert r.buffered("p") == MAX_CHUNK_PAYLOAD
    r.feed("p", chunks[1])
    assert r.buffered() == 2 * MAX_CHUNK_PAYLOAD
    assert isinstance(r.feed("p", chunks[2]), MessageReceived)
    assert (r.pending(), r.pending("p"), r.buffered("p")) == (0, 0, 0)


def test_reassembler_empty_payload_with_metadata() -> None:
    r = Reassembler()
    (event,) = feed_all(r, "p", parsed_for("x", 1, "", {"r": "id"}))
    assert event == MessageReceived("p", "x", 1, PayloadKind.TEXT, "", {"r": "id"}, 1.0)
    (event,) = feed_all(r, "p", parsed_for("x", 2, b"", [1]))
    assert event == MessageReceived("p", "x", 2, PayloadKind.BINARY, b"", [1], 1.0)


def test_reassembler_json_and_text_multi_chunk() -> None:
    value = {"s": "é" * 20000, "n": [1, 2, None]}
    text = "€😀" * 9000
    r = Reassembler()
    json_events = feed_all(r, "p", parsed_for("j", 0, value))
    text_events = feed_all(r, "p", parsed_for("t", 0, text, "meta"))
    assert json_events[-1] == MessageReceived("p", "j", 0, PayloadKind.JSON, value, None, 1.0)
    assert text_events[-1] == MessageReceived("p", "t", 0, PayloadKind.TEXT, text, "meta", 1.0)
    assert all(isinstance(e, ReceiveProgress) for e in json_events[:-1] + text_events[:-1])


def test_reassembler_interleaved_peers_actions_nonces() -> None:
    a = parsed_for("file", 0, b"a" * 40000)
    b = parsed_for("file", 1, b"b" * 40000)
    c = parsed_for("chat", 0, "c" * 20000)
    r = Reassembler()
    order = [("p", a[0]), ("q", a[0]), ("p", b[0]), ("p", c[0]), ("q", a[1]), ("p", a[1])]
    order += [("p", c[1]), ("p", b[1]), ("p", a[2]), ("q", a[2]), ("p", b[2])]
    done = [e for e in (r.feed(peer, ch) for peer, ch in order) if isinstance(e, MessageReceived)]
    assert [(e.peer_id, e.action_type, e.nonce) for e in done] == [
        ("p", "chat", 0),
        ("p", "file", 0),
        ("q", "file", 0),
        ("p", "file", 1),
    ]
    assert [e.data for e in done] == ["c" * 20000, b"a" * 40000, b"a" * 40000, b"b" * 40000]
    assert r.pending() == 0


def test_reassembler_message_too_large_poisons_until_last_chunk() -> None:
    chunks = parsed_for("file", 4, bytes(40000))
    r = Reassembler(max_message_size=20000)
    assert isinstance(r.feed("p", chunks[0]), ReceiveProgress)
    with pytest.raises(ProtocolError, match="size limit"):
        r.feed("p", chunks[1])
    assert r.pending() == 0
    assert r.buffered("p") == 0
    assert r.poisoned("p") == 1
    assert r.feed("p", chunks[2]) is None  # ignored, and clears the poison
    assert r.poisoned("p") == 0
    # The same key works again afterwards.
    small = parsed_for("file", 4, b"ok")
    assert feed_all(r, "p", small)[-1] == MessageReceived(
        "p", "file", 4, PayloadKind.BINARY, b"ok", None, 1.0
    )


def test_reassembler_first_chunk_too_large() -> None:
    chunks = parsed_for("file", 0, bytes(40000))
    r = Reassembler(max_message_size=100)
    with pytest.raises(ProtocolError):
        r.feed("p", chunks[0])
    assert r.poisoned("p") == 1
    assert r.feed("p", chunks[1]) is None
    assert r.feed("p", chunks[2]) is None
    assert r.poisoned("p") == 0
    assert r.pending() == 0


def test_reassembler_single_chunk_too_large_needs_no_poison() -> None:
    r = Reassembler(max_message_size=10)
    with pytest.raises(ProtocolError):
        r.feed("p", parsed_for("x", 0, "eleven char")[0])
    assert r.poisoned("p") == 0
    assert r.feed("p", parsed_for("x", 1, "ten chars!")[0]) is not None


def test_reassembler_too_many_partials_rejects_newest() -> None:
    messages = [parsed_for("file", n, bytes(20000)) for n in range(3)]
    r = Reassembler(max_partial_per_peer=2)
    r.feed("p", messages[0][0])
    r.feed("p", messages[1][0])
    with pytest.raises(ProtocolError, match="too many"):
        r.feed("p", messages[2][0])
    assert r.pending("p") == 2
    # Another peer has its own budget.
    assert isinstance(r.feed("q", messages[2][0]), ReceiveProgress)
    # The rejected message's last chunk is ignored rather than delivered truncated.
    assert r.feed("p", messages[2][1]) is None
    # The older transfers are intact.
    assert isinstance(r.feed("p", messages[0][1]), MessageReceived)
    assert isinstance(r.feed("p", messages[1][1]), MessageReceived)
    assert r.pending("p") == 0
    assert r.pending() == 1


def test_reassembler_buffer_limit_per_peer() -> None:
    a = parsed_for("file", 0, bytes(40000))
    b = parsed_for("file", 1, bytes(40000))
    r = Reassembler(max_buffered_per_peer=40000)
    r.feed("p", a[0])
    r.feed("p", b[0])
    with pytest.raises(ProtocolError, match="memory budget"):
        r.feed("p", a[1])  # would hold 3 x 16348 bytes
    assert r.pending("p") == 1
    assert r.buffered("p") == MAX_CHUNK_PAYLOAD
    c = parsed_for("file", 2, bytes(40000))
    assert isinstance(r.feed("p", c[0]), ReceiveProgress)
    with pytest.raises(ProtocolError, match="memory budget"):
        r.feed("p", c[1])
    assert r.feed("p", a[2]) is None
    assert isinstance(r.feed("p", b[1]), ReceiveProgress)
    assert isinstance(r.feed("p", b[2]), MessageReceived)  # exactly 40000 bytes held
    assert r.feed("p", c[2]) is None
    assert r.poisoned("p") == 0
    assert r.buffered() == 0


def test_metadata_of_a_partial_message_counts_toward_the_budget() -> None:
    # Before: metadata counted 0 bytes, so 64 KiB "[{},{},...]" metadata (~1.5 MB decoded)
    # per partial message was free.
    meta = [{}] * 20000  # 60 KiB of JSON, ~1.5 MB once decoded
    chunks = parsed_for("file", 0, bytes(40000), meta)
    r = Reassembler()
    assert isinstance(r.feed("p", chunks[0]), ReceiveProgress)
    assert r.buffered("p") >= 20000 * 64
    for chunk in chunks[1:]:
        r.feed("p", chunk)
    assert r.buffered() == 0

    small = Reassembler(max_buffered_per_peer=1024 * 1024)
    with pytest.raises(ProtocolError, match="memory budget"):
        small.feed("p", chunks[0])
    assert all(small.feed("p", chunk) is None for chunk in chunks[1:])
    assert (small.pending(), small.buffered(), small.poisoned("p")) == (0, 0, 0)


def test_json_that_would_not_fit_once_decoded_is_refused_before_decoding() -> None:
    budget = MemoryBudget(2**40, 4 * 1024 * 1024)
    r = Reassembler(budget=budget)
    bomb = parsed_for("data", 0, [{}] * 100_000)  # 300 KB of JSON, ~7.5 MB decoded
    for chunk in bomb[:-1]:
        assert isinstance(r.feed("p", chunk), ReceiveProgress)
    with pytest.raises(ProtocolError, match="memory budget"):
        r.feed("p", bomb[-1])
    assert (r.buffered(), budget.held()) == (0, 0)
    # The same bytes as binary, and ordinary JSON, still go through; their size is reported.
    (binary,) = [r.feed("p", c) for c in parsed_for("data", 1, b"[{}]" * 25_000)][-1:]
    assert isinstance(binary, MessageReceived)
    assert binary.size >= 100_000
    (doc,) = [r.feed("p", c) for c in parsed_for("data", 2, {"a": list(range(1000))})][-1:]
    assert isinstance(doc, MessageReceived)
    assert doc.size >= 1000 * 28


def test_reassemblers_sharing_a_budget_charge_one_peer_once_across_rooms() -> None:
    budget = MemoryBudget(2**40, 40000)
    rooms = [Reassembler(budget=budget), Reassembler(budget=budget)]
    a, b = parsed_for("file", 0, bytes(40000)), parsed_for("file", 0, bytes(40000))
    rooms[0].feed("p", a[0])
    rooms[0].feed("p", a[1])
    with pytest.raises(ProtocolError, match="memory budget"):
        rooms[1].feed("p", b[0])  # "p" already holds 2 x 16348 bytes in the other room
    assert isinstance(rooms[1].feed("q", b[0]), ReceiveProgress)  # another peer is not held up
    rooms[0].drop_peer("p")
    assert budget.held("p") == 0
    assert budget.held() == MAX_CHUNK_PAYLOAD


JSON_SHAPES = {
    "empty objects": [{}] * 20000,
    "empty arrays": [[]] * 20000,
    "nested arrays": [[[]]] * 20000,
    "small objects": [{"a": 1}] * 20000,
    "distinct keys": [{f"k{i}": 1} for i in range(20000)],
    "one wide object": {str(i): [] for i in range(20000)},
    "large ints": [1000 + i for i in range(20000)],
    "floats": [1.5] * 20000,
    "short strings": ["ab"] * 20000,
    "records": [{"name": f"n{i}", "age": 30, "tags": ["a", "b"], "x": 1.5} for i in range(5000)],
    "latin-1 text": "é" * 20000,
    "wide text": "\u0100" * 20000,
    "astral text": "a😀" * 20000,
    "astral at the end": "a" * 80000 + "😀",
}


def decoding_peak(kind: PayloadKind, data: bytes) -> int:
    """Peak bytes allocated while :func:`decode_payload` decodes ``data`` (tracemalloc)."""
    tracemalloc.start()
    try:
        decode_payload(kind, data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", JSON_SHAPES)
def test_decoded_size_is_not_below_what_decoding_allocates(shape: str) -> None:
    kind, data = PayloadKind.JSON, encode_payload([JSON_SHAPES[shape]])[1]
    peak = decoding_peak(kind, data)
    assert peak <= decoded_size(kind, data) <= 3 * peak + 1024


@pytest.mark.parametrize("text", ["plain ascii", "Latin-1: é", "wide: Ā", "astral: 😀"])
def test_decoded_size_of_text_covers_decoding_it(text: str) -> None:
    kind, data = encode_payload(text * 1000)
    assert decoding_peak(kind, data) <= decoded_size(kind, data)


@pytest.mark.parametrize("char", ["\u0100", "\U0001f600", "\ud800"])
def test_decoded_size_counts_a_json_escape_as_its_character(char: str) -> None:
    # json.dumps escapes every non-ASCII character and JSON.stringify lone surrogates: the
    # text is ASCII, but the decoded string is as wide as its widest (escaped) character.
    data = json.dumps(["a" * 20000 + char]).encode()
    assert data.isascii()
    [decoded] = decode_payload(PayloadKind.JSON, data)
    assert sys.getsizeof(decoded) <= decoded_size(PayloadKind.JSON, data)


@pytest.mark.parametrize("bad_meta", [b"{not json", b"\xff\xfe", b"NaN", b""])
def test_reassembler_corrupt_metadata(bad_meta: bytes) -> None:
    field = encode_action_type("file")
    chunks = [parse_chunk(c) for c in iter_chunks(field, 0, PayloadKind.BINARY, b"xy", bad_meta)]
    r = Reassembler()
    with pytest.raises(ProtocolError, match="metadata"):
        r.feed("p", chunks[0])
    assert r.pending() == 0
    assert r.feed("p", chunks[1]) is None
    assert r.poisoned("p") == 0


def test_reassembler_corrupt_metadata_on_single_chunk() -> None:
    (chunk,) = [
        parse_chunk(c)
        for c in iter_chunks(encode_action_type("x"), 0, PayloadKind.TEXT, b"", b"{bad")
    ]
    r = Reassembler()
    with pytest.raises(ProtocolError):
        r.feed("p", chunk)
    assert (r.pending(), r.poisoned("p")) == (0, 0)


def test_reassembler_metadata_too_large() -> None:
    chunks = parsed_for("file", 0, b"xy", {"pad": "z" * 50})
    r = Reassembler(max_meta_size=20)
    with pytest.raises(ProtocolError, match="metadata"):
        r.feed("p", chunks[0])
    assert r.feed("p", chunks[1]) is None


def test_reassembler_metadata_chunk_mid_message() -> None:
    r = Reassembler()
    r.feed("p", raw_chunk("x", 0, 0x00, b"part", 85))
    with pytest.raises(ProtocolError, match="metadata chunk"):
        r.feed("p", raw_chunk("x", 0, TAG_META, b"{}", 170))
    assert r.pending() == 0
    assert r.feed("p", raw_chunk("x", 0, TAG_LAST, b"end")) is None
    assert r.poisoned("p") == 0


def test_reassembler_kind_change_mid_message() -> None:
    r = Reassembler()
    r.feed("p", raw_chunk("x", 0, 0x00, b"part", 128))
    with pytest.raises(ProtocolError, match="kind"):
        r.feed("p", raw_chunk("x", 0, TAG_LAST | TAG_BINARY, b"end"))
    assert (r.pending(), r.poisoned("p")) == (0, 0)


def test_reassembler_invalid_utf8_text() -> None:
    r = Reassembler()
    with pytest.raises(ProtocolError, match="UTF-8"):
        r.feed("p", raw_chunk("x", 0, TAG_LAST, b"\xff"))
    r.feed("p", raw_chunk("x", 1, 0, b"ok \xc3", 128))
    with pytest.raises(ProtocolError, match="UTF-8"):
        r.feed("p", raw_chunk("x", 1, TAG_LAST, b"\x28"))
    assert r.pending() == 0
    # A character split across chunks is fine.
    r.feed("p", raw_chunk("x", 2, 0, b"ok \xc3", 128))
    event = r.feed("p", raw_chunk("x", 2, TAG_LAST, b"\xa9"))
    assert isinstance(event, MessageReceived)
    assert event.data == "ok é"


def test_reassembler_invalid_json() -> None:
    r = Reassembler()
    with pytest.raises(ProtocolError, match="JSON"):
        r.feed("p", raw_chunk("x", 0, TAG_LAST | TAG_JSON, b"{nope"))
    r.feed("p", raw_chunk("x", 1, TAG_JSON, b'{"a":', 128))
    with pytest.raises(ProtocolError, match="JSON"):
        r.feed("p", raw_chunk("x", 1, TAG_LAST | TAG_JSON, b"}"))
    assert r.pending() == 0


def test_reassembler_drop_peer() -> None:
    r = Reassembler(max_message_size=20000)
    big = parsed_for("file", 0, bytes(40000))
    r.feed("p", big[0])
    r.feed("p", parsed_for("file", 1, bytes(20000))[0])
    r.feed("q", big[0])
    with pytest.raises(ProtocolError):
        r.feed("p", big[1])  # poisons (p, file, 0)
    assert (r.pending("p"), r.poisoned("p")) == (1, 1)
    r.drop_peer("p")
    r.drop_peer("never-seen")
    assert (r.pending("p"), r.poisoned("p"), r.buffered("p")) == (0, 0, 0)
    assert r.pending() == 1
    r.clear()
    assert (r.pending(), r.buffered()) == (0, 0)


def test_reassembler_poison_set_is_bounded() -> None:
    r = Reassembler(max_message_size=100, max_poisoned_per_peer=3)
    firsts = [parsed_for("file", n, bytes(20000)) for n in range(5)]
    for message in firsts:
        with pytest.raises(ProtocolError):
            r.feed("p", message[0])
    assert r.poisoned("p") == 3
    # The two oldest were forgotten: their tails now start fresh (and fail the limit).
    with pytest.raises(ProtocolError):
        r.feed("p", firsts[0][1])
    assert r.feed("p", firsts[4][1]) is None


def test_reassembler_copies_views_of_writable_buffers() -> None:
    buf = bytearray(b"first")
    r = Reassembler()
    view = memoryview(buf)
    r.feed("p", ActionChunk("x", 0, False, False, PayloadKind.BINARY, 128, view))
    buf[:] = b"XXXXX"
    event = r.feed("p", ActionChunk("x", 0, True, False, PayloadKind.BINARY, 255, b"-last"))
    assert isinstance(event, MessageReceived)
    assert event.data == b"first-last"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_size": 0},
        {"max_partial_per_peer": -1},
        {"max_meta_size": 1.5},
        {"max_buffered_per_peer": True},
        {"max_poisoned_per_peer": 0},
    ],
)
def test_reassembler_rejects_bad_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Reassembler(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class Sent:
    peer: str
    action: str
    nonce: int
    value: object
    meta: object


_TEXT_ALPHABET = 'aZ09 é€😀\n"\\{'


@st.composite
def sent_messages(draw: st.DrawFn) -> Sent:
    kind = draw(st.sampled_from(list(PayloadKind)))
    size = draw(
        st.sampled_from([0, 1, 16347, 16348, 16349, 32696, 40000])
        | st.integers(0, 300)
        | st.integers(16_000, 100_000)
    )
    rng = random.Random(draw(st.integers(0, 2**32)))
    value: object
    if kind is PayloadKind.BINARY:
        value = rng.randbytes(size)
    elif kind is PayloadKind.TEXT:
        value = "".join(rng.choices(_TEXT_ALPHABET, k=size // 2))
    else:
        value = draw(
            st.sampled_from(
                [
                    {"s": "".join(rng.choices(_TEXT_ALPHABET, k=size // 2)), "n": size},
                    ["x" * size, None, True, 1.5],
                    size,
                    None,
                ]
            )
        )
    meta = draw(
        st.just(_NO_META)
        | st.none()
        | st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=8), max_size=3)
    )
    return Sent(
        draw(st.sampled_from(["p1", "p2", "p3"])),
        draw(st.sampled_from(["chat", "file", HSDATA, "ü" * 16])),
        draw(st.integers(0, 0xFFFF)),
        value,
        meta,
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(
        sent_messages(), min_size=1, max_size=5, unique_by=lambda m: (m.peer, m.action, m.nonce)
    ),
    st.randoms(use_true_random=False),
)
def test_round_trip_interleaved(messages: list[Sent], rng: random.Random) -> None:
    prefix = room_frame_prefix(TOKEN)
    queues = [chunks_for(m.action, m.nonce, m.value, m.meta, prefix=prefix) for m in messages]
    for m, queue in zip(messages, queues, strict=True):
        kind, payload = encode_payload(m.value)
        assert len(queue) == chunk_count(len(payload), m.meta is not _NO_META)
        assert all(len(c) <= len(prefix) + MAX_CHUNK_SIZE for c in queue[1:])
    owner = {(m.peer, m.action, m.nonce): m for m in messages}
    positions = [0] * len(queues)
    r = Reassembler()
    received: dict[tuple[str, str, int], MessageReceived] = {}
    progress: dict[tuple[str, str, int], list[float]] = {}
    while live := [i for i, q in enumerate(queues) if positions[i] < len(q)]:
        i = rng.choice(live)
        data = queues[i][positions[i]]
        positions[i] += 1
        frame = parse_frame(data)
        assert isinstance(frame, RoomFrame)
        assert frame.token == TOKEN
        event = r.feed(messages[i].peer, parse_chunk(frame.chunk))
        assert event is not None
        key = (event.peer_id, event.action_type, event.nonce)
        assert owner[key] is messages[i]
        if isinstance(event, MessageReceived):
            assert key not in received
            received[key] = event
        else:
            assert key not in received
            progress.setdefault(key, []).append(event.fraction)
    assert r.pending() == 0
    assert r.buffered() == 0
    assert set(received) == set(owner)
    for m, queue in zip(messages, queues, strict=True):
        key = (m.peer, m.action, m.nonce)
        event = received[key]
        kind, _ = encode_payload(m.value)
        assert event.kind is kind
        assert event.data == m.value
        assert event.metadata == (None if m.meta is _NO_META else m.meta)
        assert event.progress == 1.0
        fractions = progress.get(key, [])
        assert len(fractions) == len(queue) - 1
        assert fractions == sorted(fractions)
        assert all(0 < f < 1 for f in fractions)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p", "q"]),
            st.sampled_from(["a", "b"]),
            st.integers(0, 2),
            st.integers(0, 255),
            st.binary(max_size=40),
        ),
        max_size=40,
    )
)
def test_reassembler_survives_arbitrary_chunks(
    chunks: list[tuple[str, str, int, int, bytes]],
) -> None:
    r = Reassembler(
        max_message_size=60,
        max_partial_per_peer=2,
        max_meta_size=20,
        max_buffered_per_peer=80,
        max_poisoned_per_peer=2,
    )
    for peer, action, nonce, tag, payload in chunks:
        try:
            event = r.feed(peer, raw_chunk(action, nonce, tag, payload, tag))
        except ProtocolError:
            pass
        else:
            assert event is None or event.peer_id == peer
        assert r.pending() == r.pending("p") + r.pending("q")
        for p in ("p", "q"):
            assert r.pending(p) <= 2
            assert r.buffered(p) <= 80
            assert r.poisoned(p) <= 2


def test_iter_chunks_accepts_buffers() -> None:
    field = encode_action_type("b")
    payload = bytes(range(256)) * 200
    expected = list(iter_chunks(field, 1, PayloadKind.BINARY, payload))
    assert list(iter_chunks(field, 1, PayloadKind.BINARY, bytearray(payload))) == expected
    assert list(iter_chunks(field, 1, PayloadKind.BINARY, memoryview(payload))) == expected


def test_large_metadata_is_one_chunk_and_reassembles() -> None:
    meta = {"blob": "m" * 30000}
    chunks = chunks_for("file", 0, b"data", meta)
    assert len(chunks) == 2
    assert len(chunks[0]) == HEADER_SIZE + len(json.dumps(meta, separators=(",", ":")))
    events = feed_all(Reassembler(), "p", [parse_chunk(c) for c in chunks])
    assert events[-1] == MessageReceived("p", "file", 0, PayloadKind.BINARY, b"data", meta, 1.0)


def test_reassembler_small_view_of_big_buffer() -> None:
    big = bytes(100_000)
    r = Reassembler()
    r.feed("p", ActionChunk("x", 0, False, False, PayloadKind.BINARY, 1, memoryview(big)[:3]))
    event = r.feed("p", ActionChunk("x", 0, True, False, PayloadKind.BINARY, 255, b"!"))
    assert isinstance(event, MessageReceived)
    assert event.data == b"\0\0\0!"


def test_encode_metadata() -> None:
    assert encode_metadata({"name": "f"}) == b'{"name":"f"}'
    assert encode_metadata(None) == b"null"
    assert encode_metadata({"r": "é"}) == '{"r":"é"}'.encode()
    assert json.loads(encode_metadata(["\udc00"])) == ["\udc00"]
    with pytest.raises(TypeError):
        encode_metadata({"x": math.nan})
    with pytest.raises(TypeError):
        encode_metadata(b"bytes")
