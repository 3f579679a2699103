"""sctp_guard: which chunks of a packet aiortc may be given (RFC 9260 §3.2, §6.10)."""

from __future__ import annotations

import struct

from aiortc import rtcsctptransport as sctp
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.sctp_guard import Chunk, check_packet, gaps_problem

HEADER = struct.pack("!HHLL", 5000, 5000, 0x1234, 0)


def chunk(kind: int, body: bytes, flags: int = 0, length: int | None = None) -> bytes:
    size = 4 + len(body) if length is None else length
    raw = struct.pack("!BBH", kind, flags, size) + body
    return raw + b"\x00" * (-len(raw) % 4)


def data(tsn: int = 1, user: bytes = b"x") -> bytes:
    return chunk(0, struct.pack("!LHHL", tsn, 1, 0, 51) + user, flags=3)


def sack(gaps: list[tuple[int, int]] = [], declared: int | None = None) -> bytes:  # noqa: B006
    count = len(gaps) if declared is None else declared
    body = struct.pack("!LLHH", 7, 65536, count, 0)
    return chunk(3, body + b"".join(struct.pack("!HH", *gap) for gap in gaps))


def kinds(packet: bytes) -> list[int]:
    return [c.type for c in check_packet(packet).chunks]


def test_a_well_formed_bundle_is_handed_on_whole() -> None:
    checked = check_packet(HEADER + data() + sack([(2, 3)]) + chunk(4, b"\x00\x01\x00\x08hbhb"))
    assert checked.problem is None
    assert [c.type for c in checked.chunks] == [0, 3, 4]
    assert checked.chunks[0].body[-1:] == b"x"


def test_a_truncated_chunk_ends_the_packet_and_keeps_what_came_before() -> None:
    truncated_sack = chunk(3, b"\x00" * 8)
    truncated_data = chunk(0, b"\x00" * 6)
    assert kinds(HEADER + truncated_sack + data()) == []
    assert kinds(HEADER + truncated_data + sack()) == []
    assert kinds(HEADER + data() + truncated_sack) == [0]
    assert "chunk type 3" in (check_packet(HEADER + truncated_sack).problem or "")


def test_lengths_that_do_not_fit_are_refused() -> None:
    assert kinds(HEADER + data() + chunk(0, b"\x00" * 13, length=200)) == [0]
    assert kinds(HEADER + chunk(3, b"", length=2) + data()) == []
    assert kinds(HEADER + data() + b"\x03\x00") == [0]  # a truncated chunk header
    assert kinds(HEADER + sack(declared=290)) == []  # more gap blocks than bytes
    assert kinds(HEADER + data(user=b"")) == []  # DATA without user data


def test_unknown_chunk_types_follow_their_action_bits() -> None:
    for kind, kept in ((0x3F, []), (0x7F, []), (0xBF, [0]), (0xFF, [0])):
        assert kinds(HEADER + chunk(kind, b"junk") + data()) == kept, hex(kind)


def test_garbage_in_forward_tsn_and_reconfig_is_refused() -> None:
    assert kinds(HEADER + chunk(192, b"\x00\x00")) == []
    assert kinds(HEADER + chunk(192, b"\x00\x00\x00\x05\x00\x01\x00")) == []
    assert kinds(HEADER + chunk(192, b"\x00\x00\x00\x05\x00\x01\x00\x02")) == [192]
    reset = struct.pack("!LLL", 1, 2, 3) + b"\x00\x01"
    assert kinds(HEADER + chunk(130, struct.pack("!HH", 13, 4 + len(reset)) + reset)) == [130]
    assert kinds(HEADER + chunk(130, struct.pack("!HH", 13, 4 + 13) + reset + b"\x00")) == []
    assert kinds(HEADER + chunk(130, struct.pack("!HH", 16, 8) + b"\x00" * 4)) == []
    assert kinds(HEADER + chunk(130, b"\x00\x0d\x00\x00" + b"\x00" * 12)) == []
    assert kinds(HEADER + chunk(130, b"\x00\x0d\x00\x40" + b"\x00" * 12)) == []


def test_a_parameter_of_length_zero_is_refused() -> None:
    # aiortc's decode_params would loop on it forever.
    for kind in (1, 4, 5, 6, 9):
        body = (b"\x00" * 16 if kind == 1 else b"") + b"\x00\x01\x00\x00" + b"\x00" * 8
        assert kinds(HEADER + chunk(kind, body)) == [], kind


def test_an_init_must_travel_alone() -> None:
    init = chunk(1, struct.pack("!LLHHL", 1, 65536, 1, 1, 1))
    assert kinds(HEADER + init) == [1]
    checked = check_packet(HEADER + init + data())
    assert checked.chunks == ()
    assert checked.problem == "an INIT bundled with other chunks"


def test_gap_blocks_must_be_ordered_and_within_what_was_sent() -> None:
    assert gaps_problem([(2, 3), (5, 9)], 9) is None
    assert gaps_problem([], 0) is None
    assert gaps_problem([(2, 3), (3, 4)], 9) is not None  # overlapping
    assert gaps_problem([(5, 9), (2, 3)], 9) is not None  # out of order
    assert gaps_problem([(0, 3)], 9) is not None  # starts at the cumulative TSN
    assert gaps_problem([(4, 3)], 9) is not None  # ends before it starts
    assert gaps_problem([(1, 65535)], 9) is not None  # covers TSNs never sent


# -- every chunk handed on is one aiortc can take ---------------------------------------------

KNOWN = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 130, 192]


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    raw = HEADER
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from([*KNOWN, 0x3F, 0xBF]))
        body = draw(st.binary(max_size=48))
        if draw(st.booleans()):  # a plausible parameter list inside
            value = draw(st.binary(max_size=16))
            declared = draw(st.sampled_from([0, 3, 4 + len(value), 200]))
            param_type = draw(st.sampled_from([1, 13, 16, 17]))
            body = body[:16] + struct.pack("!HH", param_type, declared) + value
        length = draw(st.one_of(st.none(), st.integers(0, 80)))
        raw += chunk(kind, body, length=length)
    return raw + draw(st.binary(max_size=3))


def parse_with_aiortc(checked: Chunk) -> sctp.Chunk:
    """Parse a chunk ``check_packet`` handed on as aiortc does (RE-CONFIG parameters too);
    aiortc's errors propagate."""
    parsed = sctp.CHUNK_TYPES[checked.type](flags=checked.flags, body=checked.body)
    if isinstance(parsed, sctp.ReconfigChunk):
        for param_type, value in parsed.params:
            param_class = sctp.RECONFIG_PARAM_TYPES.get(param_type)
            if param_class is not None:
                param_class.parse(value)
    return parsed


@settings(max_examples=3000, deadline=None)
@given(packets())
def test_aiortc_can_parse_every_chunk_handed_on(packet: bytes) -> None:
    for checked in check_packet(packet).chunks:
        parse_with_aiortc(checked)
