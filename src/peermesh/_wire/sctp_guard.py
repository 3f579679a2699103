"""What of an SCTP packet may be processed, checked before aiortc sees it (RFC 9260).

aiortc 1.16 trusts the lengths inside a packet that passed its checksum: a chunk whose body
is shorter than its fields raises ``struct.error`` out of the receive path (which ends the
DTLS transport, and with it every room on the connection), a parameter of length 0 makes
``decode_params`` loop forever, and a SACK's gap blocks are walked TSN by TSN whatever
they span. Every such packet is the peer's own to send — the association is authenticated —
so this is about a hostile or broken peer, not an outsider; the answer is the RFC's: a
malformed packet or chunk is dropped, never fatal.

:func:`check_packet` walks a decrypted packet and says which chunks to hand on, in order,
and why the rest (if any) was dropped. :func:`gaps_problem` checks a SACK's gap blocks
against what is outstanding. Both are pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["INIT", "Chunk", "PacketCheck", "check_packet", "gaps_problem"]

COMMON_HEADER = 12
CHUNK_HEADER = 4

DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN = 0, 1, 2, 3, 4, 5, 6, 7
SHUTDOWN_ACK, ERROR, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 8, 9, 10, 11, 14
RECONFIG, FORWARD_TSN = 130, 192

#: The shortest body (after the 4-byte chunk header) each known chunk type may have.
#: DATA needs one byte of user data besides its 12 bytes of fields (RFC 9260 §3.3.1).
MIN_BODY = {
    DATA: 13,
    INIT: 16,
    INIT_ACK: 16,
    SACK: 12,
    HEARTBEAT: 0,
    HEARTBEAT_ACK: 0,
    ABORT: 0,
    SHUTDOWN: 4,
    SHUTDOWN_ACK: 0,
    ERROR: 0,
    COOKIE_ECHO: 0,
    COOKIE_ACK: 0,
    SHUTDOWN_COMPLETE: 0,
    RECONFIG: 0,
    FORWARD_TSN: 4,
}
#: Chunk types whose body is a list of TLV parameters (after ``PARAMS_AT`` fixed bytes).
PARAMS_AT = {INIT: 16, INIT_ACK: 16, HEARTBEAT: 0, HEARTBEAT_ACK: 0, ABORT: 0, ERROR: 0}
#: RE-CONFIG parameters aiortc reads, and the shortest value each may have (RFC 6525):
#: outgoing SSN reset request (12 bytes, then 2 per stream), response, add outgoing streams.
RECONFIG_MIN_VALUE = {13: 12, 16: 8, 17: 8}


@dataclass(frozen=True, slots=True)
class Chunk:
    type: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class PacketCheck:
    """The chunks to process, in order, and why the packet (from ``problem`` on) was cut
    short: ``None`` when all of it may be processed."""

    chunks: tuple[Chunk, ...]
    problem: str | None = None


def _params_problem(body: bytes, at: int, min_value: dict[int, int] | None = None) -> str | None:
    """Why the TLV parameters from ``at`` on cannot be walked, or a value is shorter than
    ``min_value`` asks for its type; ``None`` if all is well."""
    pos = at
    while pos < len(body):
        if len(body) - pos < 4:
            return "a truncated parameter header"
        param_type, length = struct.unpack_from("!HH", body, pos)
        if length < 4 or pos + length > len(body):
            return f"a parameter length of {length}"
        least = min_value.get(param_type) if min_value is not None else None
        value = length - 4
        if least is not None and (value < least or (param_type == 13 and value % 2)):
            return f"a {value}-byte parameter of type {param_type}"
        pos += length + (-length % 4)
    return None


def _body_problem(kind: int, body: bytes) -> str | None:
    if len(body) < MIN_BODY[kind]:
        return f"a {len(body)}-byte body"
    if kind in PARAMS_AT:
        return _params_problem(body, PARAMS_AT[kind])
    if kind == RECONFIG:
        return _params_problem(body, 0, RECONFIG_MIN_VALUE)
    if kind == SACK:
        gaps, duplicates = struct.unpack_from("!HH", body, 8)
        if 12 + 4 * (gaps + duplicates) > len(body):
            return f"{gaps} gap blocks and {duplicates} duplicates in {len(body)} bytes"
    elif kind == FORWARD_TSN and len(body) % 4:
        return "a stream list of odd length"
    return None


def check_packet(packet: bytes) -> PacketCheck:
    """Split a packet whose common header and checksum are already verified into the
    chunks to process (RFC 9260 §3.2, §6.10).

    Processing stops at the first malformed chunk (its length runs past the packet or its
    body cannot hold its fields): the chunks before it are kept, the rest dropped. An
    unknown chunk type is skipped or ends the packet as its two high bits say (00, 01:
    stop; 10, 11: skip and go on; the "report" bit is not acted on). An INIT must be the
    only chunk of its packet; a packet breaking that is dropped whole."""
    chunks: list[Chunk] = []
    pos = COMMON_HEADER
    size = len(packet)
    problem: str | None = None
    while pos < size:
        if size - pos < CHUNK_HEADER:
            problem = "a truncated chunk header"
            break
        kind, flags, length = struct.unpack_from("!BBH", packet, pos)
        if length < CHUNK_HEADER or pos + length > size:
            problem = f"chunk type {kind} with a length of {length}"
            break
        body = packet[pos + CHUNK_HEADER : pos + length]
        pos += length + (-length % 4)
        if kind not in MIN_BODY:
            if kind >> 6 in (0, 1):
                problem = f"unknown chunk type {kind} (stop)"
                break
            continue
        body_problem = _body_problem(kind, body)
        if body_problem is not None:
            problem = f"chunk type {kind} with {body_problem}"
            break
        chunks.append(Chunk(kind, flags, body))
    if len(chunks) > 1 and any(chunk.type == INIT for chunk in chunks):
        return PacketCheck((), "an INIT bundled with other chunks")
    return PacketCheck(tuple(chunks), problem)


def gaps_problem(gaps: list[tuple[int, int]], outstanding: int) -> str | None:
    """Why a SACK's gap-ack blocks cannot be right, or ``None``. ``outstanding`` is how
    many TSNs past the SACK's cumulative TSN we have sent. Each block must start at 1 or
    more, end at or after its start, start after the previous one ends, and end within
    ``outstanding`` — so walking them touches at most ``outstanding`` TSNs."""
    previous_end = 0
    for start, end in gaps:
        if start <= previous_end or end < start or end > outstanding:
            return f"gap block {start}-{end} (after {previous_end}, {outstanding} outstanding)"
        previous_end = end
    return None
