"""peermesh._datapath: aiortc's SCTP with delayed SACKs, the in-order fast paths, the DTLS
demultiplexing shortcut, direct DTLS record handling and segmented sends — whole messages
arrive intact, also over a lossy, reordering path, fewer SACK packets are sent than DATA
packets received, segmented sends keep every datagram and its order, and the socket
buffers, record fast path and segmented sends really are in use."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import TypeVar

import aioice.ice
import pytest
from aiortc import rtcdtlstransport, rtcsctptransport

from peermesh import Room, _datapath
from peermesh._datapath import dropped_datagrams_of
from tests.lossy import lossy_path
from tests.rooms import JoinFactory, connected_pair, eventually

pytestmark = pytest.mark.slow

T = TypeVar("T")


async def transfer(sender: Room, receiver: Room, sizes: list[int]) -> None:
    """Send one binary message per size from ``sender`` and check each arrives intact."""
    got: asyncio.Queue[bytes] = asyncio.Queue()
    receiver.make_action("blob").on_message(lambda d, p, m: got.put_nowait(d))
    blobs = [os.urandom(n) for n in sizes]
    for blob in blobs:
        await sender.make_action("blob").send(blob)
    for blob in blobs:
        data = await asyncio.wait_for(got.get(), 60)
        assert hashlib.sha256(data).digest() == hashlib.sha256(blob).digest()


def count_sctp_chunks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count, for every association from now on, SACK chunks sent, DATA chunks sent and
    those among them sent again, and DATA chunks received."""
    counts = {"sack_sent": 0, "data_sent": 0, "data_resent": 0, "data_received": 0}
    transport = rtcsctptransport.RTCSctpTransport
    send_chunk = transport._send_chunk
    receive_data_chunk = transport._receive_data_chunk

    async def counting_send(self: object, chunk: object) -> None:
        if isinstance(chunk, rtcsctptransport.SackChunk):
            counts["sack_sent"] += 1
        elif isinstance(chunk, rtcsctptransport.DataChunk):
            counts["data_sent"] += 1
            counts["data_resent"] += chunk._sent_count > 1
        await send_chunk(self, chunk)

    async def counting_receive(self: object, chunk: object) -> None:
        counts["data_received"] += 1
        await receive_data_chunk(self, chunk)

    monkeypatch.setattr(transport, "_send_chunk", counting_send)
    monkeypatch.setattr(transport, "_receive_data_chunk", counting_receive)
    return counts


async def test_one_sack_for_about_two_data_packets(
    join: JoinFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await connected_pair(join)
    counts = count_sctp_chunks(monkeypatch)
    await transfer(a, b, [2 * 1024 * 1024])
    assert counts["data_received"] > 1800  # 2 MiB in 1160-byte chunks, and retransmissions
    # aiortc alone sends one SACK per DATA packet; in order, we send one per two. A packet
    # the kernel drops (both peers share one loop here) makes SACKs immediate until the
    # gap is filled, so the ratio lands between 0.5 and 0.75.
    assert counts["sack_sent"] < 0.85 * counts["data_received"], counts


@pytest.mark.parametrize(("loss", "reorder"), [(0.03, 0.0), (0.0, 0.05), (0.02, 0.03)])
async def test_messages_survive_loss_and_reordering(
    join: JoinFactory, loss: float, reorder: float
) -> None:
    a, b = await connected_pair(join)
    with lossy_path(loss, reorder) as stats:
        await asyncio.gather(
            transfer(a, b, [1, 1200, 16 * 1024, 1024 * 1024 + 7]),
            transfer(b, a, [3000, 512 * 1024]),
        )
    assert stats.dropped + stats.delayed > 20  # the path really was lossy
    assert await a.ping(b.self_id) > 0


def live_instances(cls: type[T]) -> list[T]:
    """Every live instance of ``cls`` the garbage collector tracks."""
    found = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, cls):
                found.append(obj)
        except ReferenceError:  # a weak proxy whose referent is gone
            pass
    return found


def connected_dtls_transports() -> list[rtcdtlstransport.RTCDtlsTransport]:
    return [
        transport
        for transport in live_instances(rtcdtlstransport.RTCDtlsTransport)
        if transport.state == "connected"
    ]


async def test_records_take_the_direct_path(join: JoinFactory) -> None:
    a, b = await connected_pair(join)
    await transfer(a, b, [300_000])
    transports = connected_dtls_transports()
    assert len(transports) >= 2
    # Each handshaken transport carries its direct OpenSSL access, and its counters moved.
    for transport in transports:
        assert isinstance(getattr(transport, "_peermesh_records", None), _datapath._DtlsRecords)
        stats = next(s for s in transport._get_stats().values() if s.type == "transport")
        assert stats.packetsReceived > 0
        assert stats.packetsSent > 0
    assert await a.ping(b.self_id) > 0


RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())


async def test_ice_sockets_get_the_large_receive_buffer(join: JoinFactory) -> None:
    await connected_pair(join)
    # Linux doubles what is asked for (its bookkeeping overhead) and caps it at rmem_max.
    expected = 2 * min(_datapath.UDP_RECEIVE_BUFFER, RMEM_MAX)
    sizes = [
        protocol.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        for protocol in live_instances(aioice.ice.StunProtocol)
        if protocol.transport is not None and not protocol.transport.is_closing()
    ]
    assert sizes
    assert set(sizes) == {expected}, sizes


async def test_a_lost_packet_is_resent_about_once(
    join: JoinFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await connected_pair(join)
    counts = count_sctp_chunks(monkeypatch)
    with lossy_path(0.02) as stats:
        await transfer(a, b, [3 * 1024 * 1024])
    assert stats.dropped > 30  # DATA packets dropped at b, SACKs at a
    # aiortc alone resends a lost chunk with every third later SACK that still misses it
    # (10-20 resends per loss here); RFC 4960 §7.2.4 asks for one fast retransmit.
    assert counts["data_resent"] <= stats.dropped, (counts, stats)


def sctp_packet(
    transport: rtcsctptransport.RTCSctpTransport, *chunks: bytes, tag: int | None = None
) -> bytes:
    """An SCTP packet ``transport`` sends to its peer (its verification tag unless ``tag``)
    carrying ``chunks``, with a valid checksum."""
    verification_tag = transport._remote_verification_tag if tag is None else tag
    header = (
        transport._local_port.to_bytes(2)
        + transport._remote_port.to_bytes(2)
        + verification_tag.to_bytes(4)
    )
    body = b"".join(chunk + b"\x00" * (-len(chunk) % 4) for chunk in chunks)
    checksum = rtcsctptransport.crc32c(header + b"\x00\x00\x00\x00" + body)
    return header + checksum.to_bytes(4, "little") + body


def chunk(kind: int, body: bytes, flags: int = 0, length: int | None = None) -> bytes:
    return bytes([kind, flags]) + (4 + len(body) if length is None else length).to_bytes(2) + body


def sack(cumulative: int, gaps: list[tuple[int, int]], declared: int | None = None) -> bytes:
    count = len(gaps) if declared is None else declared
    blocks = b"".join(start.to_bytes(2) + end.to_bytes(2) for start, end in gaps)
    return chunk(
        3, cumulative.to_bytes(4) + (65536).to_bytes(4) + count.to_bytes(2) + bytes(2) + blocks
    )


def flip(packet: bytes, at: int) -> bytes:
    return packet[:at] + bytes([packet[at] ^ 1]) + packet[at + 1 :]


HEARTBEAT = chunk(4, (1).to_bytes(2) + (8).to_bytes(2) + b"ping")


def crafted_packets(
    attacker: rtcsctptransport.RTCSctpTransport, victim: rtcsctptransport.RTCSctpTransport
) -> dict[str, tuple[bytes, bool]]:
    """Packets a hostile peer can write into its own association, by name, each with
    whether the victim should count it dropped. aiortc 1.16 alone ends the association on
    the first four, loops forever on the zero-length parameters, and walks the gap blocks
    TSN by TSN."""
    acked = victim._last_sacked_tsn
    tag = attacker._remote_verification_tag
    packets = {
        "truncated SACK then a chunk": (sctp_packet(attacker, sack(acked, [], 5), HEARTBEAT), True),
        "truncated DATA then a chunk": (sctp_packet(attacker, chunk(0, bytes(6)), HEARTBEAT), True),
        "FORWARD-TSN garbage": (sctp_packet(attacker, chunk(192, b"\xff" * 7)), True),
        "RE-CONFIG garbage": (sctp_packet(attacker, chunk(130, b"\x00\x0d\x00\x08junk")), True),
        "RE-CONFIG zero-length parameter": (sctp_packet(attacker, chunk(130, bytes(8))), True),
        "HEARTBEAT zero-length parameter": (sctp_packet(attacker, chunk(4, bytes(8))), True),
        "huge gap blocks": (sctp_packet(attacker, sack(acked, [(1, 65535)] * 290)), True),
        "chunk length past the packet": (
            sctp_packet(attacker, HEARTBEAT, chunk(4, b"hb", length=900)),
            True,
        ),
        "bad CRC32c": (flip(sctp_packet(attacker, HEARTBEAT), 8), True),
        "INIT with a wrong tag": (
            sctp_packet(attacker, chunk(1, (7).to_bytes(4) + bytes(12)), tag=tag),
            True,
        ),
        "ABORT with a wrong tag": (sctp_packet(attacker, chunk(6, b""), tag=tag ^ 1), True),
        "SHUTDOWN with a wrong tag": (
            sctp_packet(attacker, chunk(7, acked.to_bytes(4)), tag=tag ^ 1),
            True,
        ),
    }
    for kind in (0x3F, 0x7F, 0xBF, 0xFF):  # unknown chunk types, each "action" bit pattern
        stops = kind >> 6 in (0, 1)
        packets[f"unknown chunk type {kind:#x}"] = (
            sctp_packet(attacker, chunk(kind, b"junk"), HEARTBEAT),
            stops,
        )
    return packets


async def test_malformed_sctp_packets_from_the_peer_are_dropped(join: JoinFactory) -> None:
    """RFC 9260: a malformed packet is dropped, never the association. Each packet goes
    from the hostile peer's own live association over the real DTLS connection."""
    a, b = await connected_pair(join)
    victim = a._shared.links[b.self_id].pc.sctp
    attacker = b._shared.links[a.self_id].pc.sctp
    assert victim is not None
    assert attacker is not None
    for name, (packet, counted) in crafted_packets(attacker, victim).items():
        before = _datapath.dropped_packets_of(victim)
        await attacker.transport._send_data(packet)
        if counted:
            await eventually(lambda n=before: _datapath.dropped_packets_of(victim) > n, 5, name)
        assert await a.ping(b.self_id, timeout=5) > 0, name
        assert await b.ping(a.self_id, timeout=5) > 0, name
        assert victim._association_state == victim.State.ESTABLISHED, name
        assert _datapath.dropped_packets_of(victim) == before + counted, name
    await transfer(b, a, [1_000_000])
    await transfer(a, b, [1_000_000])


#: Runs of equal sizes, a shorter one ending a run, single ones, and a run longer than
#: one segmented send may carry.
MIXED_SIZES = [1200] * 5 + [700] + [1200] * 3 + [90, 90, 1250, 40] + [1000] * 150 + [1]
MIXED = [bytes([i % 256]) * size for i, size in enumerate(MIXED_SIZES)]


async def send_now_and_receive(datagrams: list[bytes]) -> list[bytes]:
    """``_send_now`` the datagrams from a transport of the running loop on 127.0.0.1 to a
    plain socket; return what that socket receives, datagram by datagram."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.settimeout(2)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        _datapath._send_now(transport, receiver.getsockname(), datagrams)
        return [receiver.recv(65536) for _ in datagrams]
    finally:
        transport.close()
        receiver.close()


async def test_segmented_sends_keep_every_datagram_and_its_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_datapath._Segmenter, "sends", 0)
    monkeypatch.setattr(_datapath._Segmenter, "datagrams", 0)
    assert await send_now_and_receive(MIXED) == MIXED
    if _datapath._Segmenter.enabled:  # Linux 4.18+: runs left in few system calls
        assert _datapath._Segmenter.datagrams >= len(MIXED) - 4
        assert _datapath._Segmenter.sends <= 8


async def test_a_kernel_that_refuses_segmented_sends_gets_them_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_datapath._Segmenter, "enabled", True)
    monkeypatch.setattr(_datapath, "UDP_SEGMENT", 0x7FFF)  # an option no kernel knows
    assert await send_now_and_receive(MIXED) == MIXED
    assert not _datapath._Segmenter.enabled  # and later sends do not try again


@pytest.mark.skipif(sys.platform != "linux", reason="UDP_SEGMENT is Linux-only")
async def test_a_transfer_uses_segmented_sends(join: JoinFactory) -> None:
    assert _datapath._Segmenter.enabled
    a, b = await connected_pair(join)
    before = _datapath._Segmenter.datagrams
    await transfer(a, b, [2 * 1024 * 1024])
    # 2 MiB is about 1900 DATA packets: most of them left in runs, several per call.
    assert _datapath._Segmenter.datagrams - before > 1000


async def test_garbage_datagrams_on_the_connection_are_dropped(join: JoinFactory) -> None:
    """Datagrams that are not valid STUN, DTLS or SRTP, sent by the peer over the ICE pair
    the connection uses, are dropped; the connection carries on."""
    a, b = await connected_pair(join)
    victim = a._shared.links[b.self_id].pc.sctp
    attacker = b._shared.links[a.self_id].pc.sctp
    assert victim is not None
    assert attacker is not None
    ice = attacker.transport.transport._connection
    record = bytes([23, 0xFE, 0xFD, 0, 1]) + bytes(6) + (40).to_bytes(2)
    garbage = {
        "STUN header only": bytes([0, 1, 0, 8]) + bytes(16),
        "STUN with a bad attribute length": bytes([0, 1, 0, 8, 0x21, 0x12, 0xA4, 0x42])
        + bytes(12)
        + b"\x00\x06\xff\xff",
        "DTLS record with a bad MAC": record + os.urandom(40),
        "DTLS record longer than the datagram": record[:-2] + (9000).to_bytes(2) + bytes(8),
        "DTLS handshake garbage": bytes([22, 0xFE, 0xFD]) + os.urandom(60),
        "SRTP-looking garbage": bytes([0x80, 96]) + os.urandom(60),
        "SRTCP-looking garbage": bytes([0x80, 200]) + os.urandom(60),
        "unknown first byte": bytes([70]) + os.urandom(30),
        "empty": b"",
    }
    dtls = victim.transport
    for name, datagram in garbage.items():
        dropped = dropped_datagrams_of(dtls)
        for _ in range(20):
            await ice.send(datagram)
        assert await a.ping(b.self_id, timeout=5) > 0, name
        assert await b.ping(a.self_id, timeout=5) > 0, name
        assert victim._association_state == victim.State.ESTABLISHED, name
        if datagram and not name.startswith("DTLS handshake"):  # (OpenSSL may keep those)
            assert dropped_datagrams_of(dtls) - dropped == 20, name
    await transfer(b, a, [1_000_000])
