"""Faster per-packet paths through aiortc 1.16 and aioice 0.13 (installed on import).

Every data-channel byte crosses aioice, DTLS and aiortc's pure-Python SCTP in packets of
at most 1200 bytes, so per-packet work sets the throughput (``make bench``). These
replacements keep the behaviour on the wire and make the common case cheap:

* **Demultiplexing.** aioice parses every datagram as STUN before handing it on. A
  datagram whose first byte is 20–63 is DTLS (RFC 7983 §7) and goes straight through.
* **Socket buffers.** aioice sizes the receive buffer of each UDP socket it binds to
  256 KiB (``aioice.turn.UDP_SOCKET_BUFFER_SIZE``), which a burst of packets overruns
  while the event loop is busy: every dropped packet costs SCTP a retransmission and a
  halved congestion window. We make that :data:`UDP_RECEIVE_BUFFER` (the kernel caps it
  at ``net.core.rmem_max``); the memory is the kernel's and is used only while packets
  wait.
* **Received TSNs.** aiortc's ``_mark_received`` sorts the set of out-of-order TSNs and
  rebuilds two collections for every packet. A packet with the next TSN, while nothing
  is out of order or duplicated, only advances the cumulative TSN.
* **Reassembly.** aiortc rescans a stream's whole reassembly list after every chunk,
  which is quadratic in the fragments of a message. A chunk appended at the end of the
  list that is not a message's last fragment cannot complete any message, so the scan
  is skipped for it.
* **DTLS records.** pyOpenSSL costs four wrapped calls per packet, two of which raise and
  catch an exception when there is nothing to read. Once the handshake is done, each
  datagram is fed to OpenSSL and its records read with direct calls into preallocated
  buffers, every record it holds is read (aiortc reads one per datagram), the outgoing
  memory BIO is drained only while it has bytes, and each outgoing datagram goes straight
  to the nominated ICE pair's socket instead of through three coroutine layers. The
  handshake, its retransmissions and every error path stay aiortc's; SRTP is handled as
  aiortc does.
* **Segmented sends.** A system call per datagram costs about as much as all the Python
  work for it. The datagrams one event-loop step produces (a congestion window of DATA,
  a burst of SACKs) are sent at the end of that step, and on Linux each run of
  equal-sized ones leaves in a single ``sendmsg`` with ``UDP_SEGMENT`` (generic
  segmentation offload, kernel 4.18+): the kernel cuts it into the very same datagrams,
  so nothing changes on the wire. Where the kernel refuses, or the socket is full, the
  datagrams go through the transport's ``sendto`` one by one, in order.
* **SACK processing.** aiortc scans the whole in-flight queue for chunks to retransmit
  before every transmission, and restarts the T3 timer (a cancelled and a new timer
  handle) for every SACK. The scan runs only while some chunk is marked for
  retransmission, and a restart only moves a deadline that the running timer checks
  when it fires.
* **Fast retransmit** (RFC 4960 §7.2.4). aiortc strikes a fast-retransmitted chunk again
  with every later SACK that still reports it missing — which they all do until the
  resend has crossed the path — a 64 MiB transfer that lost 34 packets resent 651
  chunks. A resent chunk is struck again only by a SACK that newly acknowledges a chunk
  sent after the resend, so a resend is repeated only when it was itself lost.
* **Single-chunk packets.** A packet holding exactly one DATA or SACK chunk (nearly all
  of them in a transfer) is checked — length, verification tag, CRC32c — and handed to
  its handler without aiortc's generic parser and dispatch. A chunk whose body is too
  short for its fields is dropped with a log line (aiortc's parser would let
  ``struct.error`` end the association), and so is a SACK whose gap blocks overlap or
  cover TSNs never sent.
* **Malformed packets.** Every other packet is checked by
  :mod:`peermesh._wire.sctp_guard` and its chunks handed to aiortc one by one: a chunk
  that aiortc could not parse (and would let end the association, or loop on forever),
  an INIT bundled with other chunks, an unknown chunk type whose high bits say "stop", a
  SACK whose gap blocks are out of order or cover TSNs never sent — each is dropped with
  what follows it in the packet, counted per transport (:func:`dropped_packets_of`) and
  logged (the first per transport at INFO).
* **Proof of life.** Every datagram from the peer that authenticates (a DTLS record that
  decrypts, an SRTP or SRTCP packet that unprotects) is counted per transport
  (:func:`proofs_of`), and so is every one dropped (:func:`dropped_datagrams_of`);
  ``PeerLink`` reads the first count for its liveness verdict
  (:mod:`peermesh._wire.liveness`). A DTLS shutdown (``_write_ssl`` once handshaken) sends
  what is queued at once, the SCTP ABORT before it included: the ICE connection closes
  right after, and a datagram left for the end of the loop step would be dropped.
* **Delayed SACK** (RFC 4960 §6.2). aiortc answers every packet with its own SACK packet,
  doubling the packet count. We acknowledge every second packet carrying DATA, and any
  other within :data:`SACK_DELAY` seconds; a packet that shows a gap or a duplicate, or
  arrives while a SACK is already owed for out-of-order data, is acknowledged at once,
  as the RFC asks.

:func:`install` is idempotent and checks that aiortc's internals look as expected; if
they do not (another aiortc version), it leaves everything as it was and logs why.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
import time
from typing import Any

from peermesh._wire.sctp_guard import INIT, check_packet, gaps_problem

__all__ = [
    "SACK_DELAY",
    "UDP_RECEIVE_BUFFER",
    "dropped_datagrams_of",
    "dropped_packets_of",
    "install",
    "proofs_of",
]

logger = logging.getLogger(__name__)

#: Receive buffer asked for on each ICE UDP socket.
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024
#: Longest wait before a DATA packet is acknowledged (RFC 4960 allows up to 200 ms).
SACK_DELAY = 0.01
#: Packets carrying DATA that are acknowledged together.
SACK_EVERY = 2

_installed = False
#: DTLS content type of application data records (RFC 6347 §4.1).
_APPLICATION_DATA = 23


def install() -> None:
    """Install the fast paths (idempotent); see the module docstring."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        import aioice.ice
        import aioice.turn
        import OpenSSL.SSL
        import pylibsrtp
        from aiortc import clock
        from aiortc import rtcdtlstransport as dtls
        from aiortc import rtcsctptransport as sctp

        protocol = aioice.ice.StunProtocol
        transport = sctp.RTCSctpTransport
        for owner, name in (
            (protocol, "datagram_received"),
            (transport, "_mark_received"),
            (transport, "_receive_data_chunk"),
            (transport, "_handle_data"),
            (transport, "_send_sack"),
            (transport, "_get_inbound_stream"),
            (transport, "_reset_deferred_streams"),
            (transport, "_receive_sack_chunk"),
            (transport, "_receive_chunk"),
            (transport, "_transmit"),
            (transport, "_t3_expired"),
            (transport, "_t3_start"),
            (transport, "_t3_cancel"),
            (transport, "_t3_restart"),
            (transport, "_update_rto"),
            (transport, "_maybe_abandon"),
            (transport, "_update_advanced_peer_ack_point"),
            (transport, "_data_channel_flush"),
            (transport, "_flight_size_decrease"),
            (transport, "_flight_size_increase"),
            (sctp, "tsn_plus_one"),
            (sctp, "uint32_gt"),
            (sctp, "uint32_gte"),
            (sctp, "crc32c"),
            (sctp, "DataChunk"),
            (sctp, "SackChunk"),
            (dtls.RTCDtlsTransport, "_recv_next"),
            (dtls.RTCDtlsTransport, "_send_data"),
            (dtls.RTCDtlsTransport, "_write_ssl"),
            (dtls.RTCDtlsTransport, "_handle_rtp_data"),
            (dtls.RTCDtlsTransport, "_handle_rtcp_data"),
            (dtls, "is_rtcp"),
            (clock, "current_ms"),
            (pylibsrtp, "Error"),
        ):
            if not callable(getattr(owner, name, None)):
                raise AttributeError(f"{getattr(owner, '__name__', owner)}.{name}")
        # Constants read when the patches are made: a miss must leave everything as it was.
        for owner, name in (
            (sctp, "SCTP_DATA_LAST_FRAG"),
            (sctp, "SCTP_COMMON_HEADER_LENGTH"),
            (sctp, "SCTP_CHUNK_HEADER_LENGTH"),
            (sctp, "USERDATA_MAX_LENGTH"),
            (sctp, "SCTP_TSN_MODULO"),
            (aioice.turn, "UDP_SOCKET_BUFFER_SIZE"),
        ):
            if not isinstance(getattr(owner, name, None), int):
                raise AttributeError(f"{owner.__name__}.{name}")
        connected = getattr(getattr(dtls, "State", None), "CONNECTED", None)
        if connected is None:
            raise AttributeError("rtcdtlstransport.State.CONNECTED")
        ssl_lib = OpenSSL.SSL._lib  # type: ignore[attr-defined]
        for name in ("SSL_read", "SSL_write", "SSL_get_error", "BIO_read", "BIO_write"):
            if not callable(getattr(ssl_lib, name, None)):
                raise AttributeError(f"OpenSSL lib.{name}")
    except (ImportError, AttributeError) as exc:
        logger.warning("aiortc internals differ from 1.16 (%s): data path left as it is", exc)
        return
    # aioice sets every socket it binds to this size right after creating it.
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = UDP_RECEIVE_BUFFER
    _patch_demux(protocol)
    _patch_sctp(transport, sctp)
    _patch_sctp_sender(transport, sctp)
    _patch_dtls(dtls, clock.current_ms, ssl_lib, OpenSSL.SSL._ffi)  # type: ignore[attr-defined]


def _patch_demux(protocol: Any) -> None:
    original = protocol.datagram_received

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64:  # DTLS (RFC 7983): never a STUN message
            self.receiver.data_received(data, self.local_candidate.component)
            return
        original(self, data, addr)

    protocol.datagram_received = datagram_received


def _patch_sctp(transport: Any, sctp: Any) -> None:
    original_mark = transport._mark_received
    original_send_sack = transport._send_sack
    chunk_types = sctp.CHUNK_TYPES
    sack_type = sctp.SackChunk
    tsn_modulo = sctp.SCTP_TSN_MODULO
    tsn_plus_one = sctp.tsn_plus_one
    uint32_gt = sctp.uint32_gt
    last_frag = sctp.SCTP_DATA_LAST_FRAG

    data_type = sctp.DataChunk.type
    single_types = {data_type: sctp.DataChunk, sctp.SackChunk.type: sctp.SackChunk}
    crc32c = sctp.crc32c
    header = sctp.SCTP_COMMON_HEADER_LENGTH + sctp.SCTP_CHUNK_HEADER_LENGTH

    def single_chunk(self: Any, data: bytes) -> Any:
        """The packet's only chunk if it is one DATA or SACK chunk with this association's
        tag and a valid checksum; None for anything else, which aiortc's parser gets.
        Raises ValueError for such a chunk whose body is too short."""
        if len(data) < header:
            return None
        chunk_class = single_types.get(data[12])
        length = (data[14] << 8) | data[15]
        if (
            chunk_class is None
            or (length + 3) & ~3 != len(data) - 12
            or length < 4
            or int.from_bytes(data[4:8]) != self._local_verification_tag
            or int.from_bytes(data[8:12], "little")
            != crc32c(data[0:8] + b"\x00\x00\x00\x00" + data[12:])
        ):
            return None
        try:
            return chunk_class(flags=data[13], body=data[header : 12 + length])
        except struct.error as exc:  # a body too short for its fields
            raise ValueError(f"malformed {chunk_class.__name__}: {exc}") from None

    def _mark_received(self: Any, tsn: int) -> bool:
        if (
            not self._sack_misordered
            and not self._sack_duplicates
            and tsn == tsn_plus_one(self._last_received_tsn)
        ):
            self._last_received_tsn = tsn
            return False
        return bool(original_mark(self, tsn))

    async def _receive_data_chunk(self: Any, chunk: Any) -> None:
        self._sack_needed = True
        if self._mark_received(chunk.tsn):
            self._peermesh_sack_now = True  # a duplicate: acknowledge at once
            return
        stream = self._get_inbound_stream(chunk.stream_id)
        reassembly = stream.reassembly
        appended = not reassembly or uint32_gt(chunk.tsn, reassembly[-1].tsn)
        stream.add_chunk(chunk)
        self._advertised_rwnd -= len(chunk.user_data)
        if appended and not chunk.flags & last_frag:
            # Nothing can be complete (see the module docstring).
            if self._reconfig_deferred is not None:
                await self._reset_deferred_streams()
            return
        for message in stream.pop_messages():
            self._advertised_rwnd += len(message[2])
            await self._receive(*message)
        await self._reset_deferred_streams()

    async def _send_sack(self: Any) -> None:
        timer = getattr(self, "_peermesh_sack_timer", None)
        if timer is not None:
            timer.cancel()
            self._peermesh_sack_timer = None
        self._peermesh_unacked = 0
        await original_send_sack(self)

    def _sack_timer_fired(self: Any) -> None:
        self._peermesh_sack_timer = None
        if self._sack_needed:
            task = asyncio.ensure_future(self._send_sack())
            task.add_done_callback(_log_failure)

    async def _handle_data(self: Any, data: bytes) -> None:
        # aiortc's handler sends a SACK after any packet that carried DATA. Ours (or, for
        # a packet of one DATA or SACK chunk, the shortcut) does not: it is decided here
        # whether one goes now or a little later.
        self._peermesh_sack_now = False
        misordered_before = bool(self._sack_misordered)
        try:
            chunk = single_chunk(self, data)
        except ValueError as exc:
            _dropped(self, str(exc))
            return
        if chunk is None:
            await handle_packet(self, data)
        elif chunk.type == data_type:
            await self._receive_data_chunk(chunk)
        elif sack_ok(self, chunk):
            await self._receive_sack_chunk(chunk)
        if not self._sack_needed:
            return
        unacked = getattr(self, "_peermesh_unacked", 0) + 1
        self._peermesh_unacked = unacked
        if (
            self._peermesh_sack_now
            or misordered_before
            or self._sack_misordered
            or self._sack_duplicates
            or unacked >= SACK_EVERY
        ):
            await self._send_sack()
        elif getattr(self, "_peermesh_sack_timer", None) is None:
            loop = asyncio.get_running_loop()
            self._peermesh_sack_timer = loop.call_later(SACK_DELAY, _sack_timer_fired, self)

    async def handle_packet(self: Any, data: bytes) -> None:
        # aiortc's own _handle_data, without its SACK, on chunks sctp_guard has checked:
        # aiortc would raise out of a short body, loop forever on a parameter of length 0,
        # or walk gap blocks without bound.
        if len(data) < header:
            _dropped(self, f"a {len(data)}-byte packet")
            return
        if int.from_bytes(data[8:12], "little") != crc32c(
            data[0:8] + b"\x00\x00\x00\x00" + data[12:]
        ):
            _dropped(self, "a bad checksum")
            return
        checked = check_packet(data)
        chunks = checked.chunks
        expected_tag = 0 if chunks and chunks[0].type == INIT else self._local_verification_tag
        if int.from_bytes(data[4:8]) != expected_tag:
            _dropped(self, "a wrong verification tag")
            return
        if checked.problem is not None:
            _dropped(self, checked.problem)
        for checked_chunk in chunks:
            chunk_class = chunk_types.get(checked_chunk.type)
            if chunk_class is None:
                continue
            chunk = chunk_class(flags=checked_chunk.flags, body=checked_chunk.body)
            if chunk_class is sack_type and not sack_ok(self, chunk):
                continue
            await self._receive_chunk(chunk)

    def sack_ok(self: Any, chunk: Any) -> bool:
        if not chunk.gaps:
            return True
        sent = self._sent_queue
        highest = sent[-1].tsn if sent else self._last_sacked_tsn
        outstanding = (highest - chunk.cumulative_tsn) % tsn_modulo
        problem = gaps_problem(chunk.gaps, outstanding if outstanding < tsn_modulo // 2 else 0)
        if problem is not None:
            _dropped(self, f"a SACK with {problem}")
            return False
        return True

    transport._mark_received = _mark_received
    transport._receive_data_chunk = _receive_data_chunk
    transport._handle_data = _handle_data
    transport._send_sack = _send_sack


def _patch_sctp_sender(transport: Any, sctp: Any) -> None:
    original_transmit = transport._transmit
    original_t3_expired = transport._t3_expired
    original_t3_start = transport._t3_start
    original_t3_cancel = transport._t3_cancel
    uint32_gt = sctp.uint32_gt
    uint32_gte = sctp.uint32_gte
    mtu = sctp.USERDATA_MAX_LENGTH
    modulo = sctp.SCTP_TSN_MODULO
    # Defaults, overridden per instance: whether any sent chunk may be marked for
    # retransmission, the T3 deadline when it is later than the running timer, and for a
    # resent chunk the first TSN sent after the resend.
    transport._peermesh_retransmits = False
    transport._peermesh_t3_deadline = None
    sctp.DataChunk._peermesh_resent_below = None

    def gap_blocks(self: Any, chunk: Any) -> tuple[int, bool]:
        """aiortc's gap-block handling with the fast retransmit rule above; returns the
        bytes newly acknowledged and whether a chunk was marked lost."""
        cumulative = chunk.cumulative_tsn
        seen = set()
        highest_seen = cumulative
        # sack_ok has refused blocks that overlap or cover TSNs never sent: this walks
        # at most the sent queue.
        for start, end in chunk.gaps:
            for pos in range(start, end + 1):
                highest_seen = (cumulative + pos) % modulo
                seen.add(highest_seen)
        done_bytes = 0
        highest_newly_acked = cumulative
        for schunk in self._sent_queue:
            if uint32_gt(schunk.tsn, highest_seen):
                break
            if schunk.tsn in seen:
                if not schunk._acked:
                    done_bytes += schunk._book_size
                    schunk._acked = True
                    highest_newly_acked = schunk.tsn
                self._flight_size_decrease(schunk)
        outbound = self._outbound_queue
        first_unsent = outbound[0].tsn if outbound else self._local_tsn
        loss = False
        for schunk in self._sent_queue:
            if uint32_gt(schunk.tsn, highest_newly_acked):
                break
            if schunk.tsn in seen:
                continue
            resent_below = schunk._peermesh_resent_below
            if resent_below is not None and not uint32_gte(highest_newly_acked, resent_below):
                continue  # its resend may still be on the way
            schunk._misses += 1
            if schunk._misses == 3:
                schunk._misses = 0
                if not self._maybe_abandon(schunk):
                    schunk._retransmit = True
                    schunk._peermesh_resent_below = first_unsent
                    self._peermesh_retransmits = True
                schunk._acked = False
                self._flight_size_decrease(schunk)
                loss = True
        return done_bytes, loss

    async def _receive_sack_chunk(self: Any, chunk: Any) -> None:
        cumulative = chunk.cumulative_tsn
        if uint32_gt(self._last_sacked_tsn, cumulative):
            return
        received_time = time.time()
        self._last_sacked_tsn = cumulative
        cwnd_fully_utilized = self._flight_size >= self._cwnd
        done = 0
        done_bytes = 0
        sent = self._sent_queue
        while sent and uint32_gte(cumulative, sent[0].tsn):
            schunk = sent.popleft()
            done += 1
            if not schunk._acked:
                done_bytes += schunk._book_size
            self._flight_size_decrease(schunk)
            if done == 1 and schunk._sent_count == 1:
                self._update_rto(received_time - schunk._sent_time)
        loss = False
        if chunk.gaps:
            gap_bytes, loss = gap_blocks(self, chunk)
            done_bytes += gap_bytes

        # Congestion window: aiortc's rules, unchanged.
        if self._fast_recovery_exit is None:
            if done and cwnd_fully_utilized:
                if self._cwnd <= self._ssthresh:
                    self._cwnd += min(done_bytes, mtu)
                else:
                    self._partial_bytes_acked += done_bytes
                    if self._partial_bytes_acked >= self._cwnd:
                        self._partial_bytes_acked -= self._cwnd
                        self._cwnd += mtu
            if loss:
                self._ssthresh = max(self._cwnd // 2, 4 * mtu)
                self._cwnd = self._ssthresh
                self._partial_bytes_acked = 0
                self._fast_recovery_exit = sent[-1].tsn
                self._fast_recovery_transmit = True
        elif uint32_gte(cumulative, self._fast_recovery_exit):
            self._fast_recovery_exit = None

        if not sent:
            self._t3_cancel()
        elif done:
            self._t3_restart()
        self._update_advanced_peer_ack_point()
        await self._data_channel_flush()
        await self._transmit()

    async def _transmit(self: Any) -> None:
        if self._peermesh_retransmits or self._forward_tsn_chunk is not None:
            await original_transmit(self)
            self._peermesh_retransmits = any(c._retransmit for c in self._sent_queue)
            return
        # Nothing to resend: aiortc's loop for new data.
        burst = (2 if self._fast_recovery_exit is not None else 4) * mtu
        cwnd = min(self._flight_size + burst, self._cwnd)
        outbound = self._outbound_queue
        sent = self._sent_queue
        now = time.time()
        while outbound and self._flight_size < cwnd:
            chunk = outbound.popleft()
            sent.append(chunk)
            self._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = now
            await self._send_chunk(chunk)
            if not self._t3_handle:
                self._t3_start()

    def _t3_restart(self: Any) -> None:
        handle = self._t3_handle
        deadline = self._loop.time() + self._rto
        if handle is not None and deadline >= handle.when():
            self._peermesh_t3_deadline = deadline  # checked when the timer fires
            return
        if handle is not None:
            handle.cancel()
        self._peermesh_t3_deadline = None
        self._t3_handle = self._loop.call_at(deadline, self._t3_expired)

    def _t3_start(self: Any) -> None:
        self._peermesh_t3_deadline = None
        original_t3_start(self)

    def _t3_cancel(self: Any) -> None:
        self._peermesh_t3_deadline = None
        original_t3_cancel(self)

    def _t3_expired(self: Any) -> None:
        deadline = self._peermesh_t3_deadline
        self._peermesh_t3_deadline = None
        if deadline is not None and deadline > self._loop.time():
            self._t3_handle = self._loop.call_at(deadline, self._t3_expired)
            return
        self._peermesh_retransmits = True
        original_t3_expired(self)

    transport._receive_sack_chunk = _receive_sack_chunk
    transport._transmit = _transmit
    transport._t3_restart = _t3_restart
    transport._t3_start = _t3_start
    transport._t3_cancel = _t3_cancel
    transport._t3_expired = _t3_expired


#: Largest datagram read from or written to OpenSSL's memory BIOs (aiortc uses the same).
DATAGRAM_MAX = 1500
#: ``UDP_SEGMENT`` from <netinet/udp.h> (Linux), the socket option of segmented sends.
UDP_SEGMENT = 103
#: Most datagrams and bytes in one segmented send (the kernel's UDP_MAX_SEGMENTS is 64,
#: or 128 from Linux 6.6; the total must fit one IP packet before segmentation).
SEGMENTS_MAX = 64
SEGMENTED_BYTES_MAX = 65000


class _Segmenter:
    """Whether segmented sends work here: tried on Linux, off for good after the first
    refusal that is not a full socket buffer."""

    enabled = sys.platform == "linux"
    #: Segmented ``sendmsg`` calls made, and the datagrams they carried (for tests).
    sends = 0
    datagrams = 0


def _send_now(transport: Any, addr: Any, datagrams: list[bytes]) -> None:
    """Send ``datagrams`` to ``addr`` in order: runs of equal size in one segmented
    ``sendmsg`` each (see the module docstring), singles with ``sendto``, straight on the
    transport's socket while its own buffer is empty; whatever cannot go that way goes
    through ``transport.sendto``, which queues it behind anything already queued."""
    start = 0
    count = len(datagrams)
    raw = transport.get_extra_info("socket")
    if (
        _Segmenter.enabled
        and count > 1
        and raw is not None
        and not transport.is_closing()
        and not transport.get_write_buffer_size()
    ):
        sock = socket.socket(raw.family, socket.SOCK_DGRAM, 0, raw.fileno())
        try:
            while start < count:
                size = len(datagrams[start])
                limit = min(count, start + SEGMENTS_MAX, start + SEGMENTED_BYTES_MAX // size)
                end = start + 1
                while end < limit and len(datagrams[end]) == size:
                    end += 1
                if end < limit and len(datagrams[end]) < size:
                    end += 1  # a shorter datagram may end a run
                if end - start == 1:
                    sock.sendto(datagrams[start], addr)
                else:
                    option = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                    sock.sendmsg([b"".join(datagrams[start:end])], option, 0, addr)
                    _Segmenter.sends += 1
                    _Segmenter.datagrams += end - start
                start = end
        except (BlockingIOError, InterruptedError):
            pass  # the socket is full: the transport queues the rest
        except OSError as exc:
            if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                _Segmenter.enabled = False
                logger.debug("segmented UDP sends refused (%s); sending one by one", exc)
        finally:
            sock.detach()
    for datagram in datagrams[start:]:
        transport.sendto(datagram, addr)


class _DtlsRecords:
    """Direct OpenSSL access for one handshaken DTLS connection (see the module docstring).

    Single-threaded like the event loop that owns the transport; the buffers are reused
    for every datagram and their contents copied out at once.
    """

    __slots__ = (
        "connection",
        "dropped",
        "ffi",
        "incoming",
        "lib",
        "loop",
        "outgoing",
        "proofs",
        "read_buffer",
        "ssl",
        "unsent",
    )

    def __init__(self, lib: Any, ffi: Any, ssl_connection: Any, ice_connection: Any) -> None:
        self.lib = lib
        self.ffi = ffi
        self.ssl = ssl_connection._ssl
        self.incoming = ssl_connection._into_ssl
        self.outgoing = ssl_connection._from_ssl
        self.connection = ice_connection
        self.read_buffer = ffi.new("char[]", DATAGRAM_MAX)
        #: Datagrams from the peer that authenticated (see :func:`proofs_of`), and those
        #: dropped (see :func:`dropped_datagrams_of`).
        self.proofs = 0
        self.dropped = 0
        self.loop = asyncio.get_running_loop()
        self.unsent: list[bytes] = []

    def records(self, datagram: bytes) -> tuple[list[bytes], bool]:
        """Feed one datagram to OpenSSL; return its plaintext records, and whether the
        peer closed the connection (a close_notify)."""
        lib = self.lib
        lib.BIO_write(self.incoming, datagram, len(datagram))
        records = []
        while True:
            read = lib.SSL_read(self.ssl, self.read_buffer, DATAGRAM_MAX)
            if read > 0:
                records.append(self.ffi.buffer(self.read_buffer, read)[:])
                continue
            error = lib.SSL_get_error(self.ssl, read)
            if error == lib.SSL_ERROR_WANT_READ:
                return records, False
            lib.ERR_clear_error()
            # Anything else is a record OpenSSL refused (aiortc drops it as well).
            closed = error == lib.SSL_ERROR_ZERO_RETURN
            if not closed:
                self.drop("a DTLS record OpenSSL refused")
            return records, closed

    def drop(self, what: str) -> None:
        """Count (and log, the first at INFO) a datagram from the peer that was dropped."""
        self.dropped += 1
        level = logging.INFO if self.dropped == 1 else logging.DEBUG
        logger.log(level, "dropped a datagram from the peer (%d so far): %s", self.dropped, what)

    def encrypt(self, plaintext: bytes) -> None:
        """Write one record; raise :class:`ConnectionError` if OpenSSL refuses it."""
        if self.lib.SSL_write(self.ssl, plaintext, len(plaintext)) <= 0:
            self.lib.ERR_clear_error()
            raise ConnectionError("DTLS refused to encrypt a record")

    def pending_datagrams(self) -> list[bytes]:
        """Drain what OpenSSL wrote for the peer, one datagram per read."""
        datagrams = []
        read = self.lib.BIO_read(self.outgoing, self.read_buffer, DATAGRAM_MAX)
        while read > 0:
            datagrams.append(self.ffi.buffer(self.read_buffer, read)[:])
            read = self.lib.BIO_read(self.outgoing, self.read_buffer, DATAGRAM_MAX)
        return datagrams

    def send(self, datagram: bytes) -> None:
        """Queue one datagram for the nominated pair (what aioice's ``send`` ends in); the
        queue goes out at the end of this event-loop step (:meth:`send_unsent`)."""
        if not self.unsent:
            self.loop.call_soon(self.send_unsent)
        self.unsent.append(datagram)

    def send_unsent(self) -> None:
        datagrams, self.unsent = self.unsent, []
        if not datagrams:
            return  # sent already (see _write_ssl)
        pair = self.connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            # aioice would raise; aiortc drops such errors (SCTP retransmits, or is closing).
            logger.debug("dropped %d datagrams: not connected", len(datagrams))
            return
        _send_now(pair.protocol.transport, pair.remote_addr, datagrams)


def _patch_dtls(dtls: Any, current_ms: Any, lib: Any, ffi: Any) -> None:
    import pylibsrtp

    transport = dtls.RTCDtlsTransport
    original_recv_next = transport._recv_next
    original_send_data = transport._send_data
    original_write_ssl = transport._write_ssl
    connected = dtls.State.CONNECTED
    is_rtcp = dtls.is_rtcp
    srtp_error = pylibsrtp.Error

    def records_of(self: Any) -> _DtlsRecords | None:
        """The fast path for this transport once its handshake is done, else None."""
        records: _DtlsRecords | None = getattr(self, "_peermesh_records", None)
        if records is None and self._RTCDtlsTransport__handshake_done:
            ice = getattr(self.transport, "_connection", None)
            if ice is None or not hasattr(ice, "_nominated") or not hasattr(ice, "_queue"):
                return None
            records = _DtlsRecords(lib, ffi, self._ssl, ice)
            self._peermesh_records = records
        return records

    def flush(self: Any, records: _DtlsRecords) -> None:
        for datagram in records.pending_datagrams():
            records.send(datagram)
            self._RTCDtlsTransport__tx_bytes += len(datagram)
            self._RTCDtlsTransport__tx_packets += 1

    async def _recv_next(self: Any) -> None:
        records = records_of(self)
        if records is None:
            await original_recv_next(self)
            return
        ice = records.connection
        if not ice._nominated:
            raise ConnectionError("Cannot receive data, not connected")
        item = await ice._queue.get()
        if item is None:
            raise ConnectionError("Connection lost while receiving data")
        data = item[0]
        self._RTCDtlsTransport__rx_bytes += len(data)
        self._RTCDtlsTransport__rx_packets += 1
        if not data:
            records.drop("an empty datagram")
            return
        first_byte = data[0]
        if 19 < first_byte < 64:
            dropped = records.dropped
            plaintexts, closed = records.records(data)
            if plaintexts:
                records.proofs += 1
            elif first_byte == _APPLICATION_DATA and records.dropped == dropped:
                # DTLS discards a record that fails its MAC or replays one, silently.
                records.drop("a DTLS record that did not authenticate")
            flush(self, records)
            if closed:
                raise ConnectionError("DTLS shut down by the remote party")
            receiver = self._data_receiver
            if receiver is not None:
                for plaintext in plaintexts:
                    await receiver._handle_data(plaintext)
        elif 127 < first_byte < 192 and self._rx_srtp:
            arrival_time_ms = current_ms()
            try:
                if is_rtcp(data):
                    packet = self._rx_srtp.unprotect_rtcp(data)
                    records.proofs += 1
                    await self._handle_rtcp_data(packet)
                else:
                    packet = self._rx_srtp.unprotect(data)
                    records.proofs += 1
                    await self._handle_rtp_data(packet, arrival_time_ms=arrival_time_ms)
            except srtp_error as exc:
                records.drop(f"an SRTP packet that did not unprotect ({exc})")
        else:  # not STUN (aioice hands on what it cannot parse), DTLS, SRTP or SRTCP
            records.drop(f"a datagram that is not STUN, DTLS or SRTP (first byte {first_byte})")

    async def _send_data(self: Any, data: bytes) -> None:
        records = records_of(self)
        if records is None or self._state != connected:
            await original_send_data(self, data)
            return
        records.encrypt(data)
        flush(self, records)

    async def _write_ssl(self: Any) -> None:
        records = records_of(self)
        if records is None:
            await original_write_ssl(self)
        else:
            # Only the shutdown gets here once handshaken: what is queued (an SCTP ABORT,
            # then the close_notify) must leave now, before the ICE connection closes.
            flush(self, records)
            records.send_unsent()

    transport._recv_next = _recv_next
    transport._send_data = _send_data
    transport._write_ssl = _write_ssl


def proofs_of(dtls_transport: Any) -> int | None:
    """How many datagrams from the peer of ``dtls_transport`` authenticated so far (DTLS
    records that decrypted, SRTP and SRTCP packets that unprotected), or None where the
    fast path does not run (not installed, or the handshake is not done): the count is
    only meaningful while it grows."""
    records = getattr(dtls_transport, "_peermesh_records", None)
    return records.proofs if isinstance(records, _DtlsRecords) else None


def dropped_datagrams_of(dtls_transport: Any) -> int:
    """How many datagrams from the peer of ``dtls_transport`` were dropped since the
    handshake: DTLS records that did not authenticate or that OpenSSL refused, SRTP and
    SRTCP packets that did not unprotect, and datagrams that are none of STUN, DTLS, SRTP
    (a malformed STUN message is handed on by aioice as data, and counted here)."""
    records = getattr(dtls_transport, "_peermesh_records", None)
    return records.dropped if isinstance(records, _DtlsRecords) else 0


def dropped_packets_of(sctp_transport: Any) -> int:
    """How many SCTP packets (or their tails) from the peer of ``sctp_transport`` were
    dropped as malformed so far."""
    count = getattr(sctp_transport, "_peermesh_dropped", 0)
    return count if isinstance(count, int) else 0


def _dropped(sctp_transport: Any, problem: str) -> None:
    count = dropped_packets_of(sctp_transport) + 1
    sctp_transport._peermesh_dropped = count
    level = logging.INFO if count == 1 else logging.DEBUG
    logger.log(level, "dropped a malformed SCTP packet (%d so far): %s", count, problem)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("delayed SACK failed", exc_info=task.exception())
