"""Faster per-packet paths through aiortc 1.16 and aioice 0.13 (installed on import).

Every data-channel byte crosses aioice, DTLS and aiortc's pure-Python SCTP in packets of
at most 1200 bytes, so per-packet work sets the throughput (``make bench``). These
replacements keep the behaviour on the wire and make the common case cheap:

* **Demultiplexing.** aioice parses every datagram as STUN before handing it on. A
  datagram whose first byte is 20–63 is DTLS (RFC 7983 §7) and goes straight through.
* **Socket buffers.** aioice leaves its UDP sockets at the kernel's default receive
  buffer (208 KiB here), which a burst of packets overruns while the event loop is busy:
  every dropped packet costs SCTP a retransmission and a halved congestion window. We
  ask for :data:`UDP_RECEIVE_BUFFER` (the kernel caps it at ``net.core.rmem_max``); the
  memory is the kernel's and is used only while packets wait.
* **Received TSNs.** aiortc's ``_mark_received`` sorts the set of out-of-order TSNs and
  rebuilds two collections for every packet. A packet with the next TSN, while nothing
  is out of order or duplicated, only advances the cumulative TSN.
* **Reassembly.** aiortc rescans a stream's whole reassembly list after every chunk,
  which is quadratic in the fragments of a message. A chunk appended at the end of the
  list that is not a message's last fragment cannot complete any message, so the scan
  is skipped for it.
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
import logging
import socket
from typing import Any

__all__ = ["SACK_DELAY", "UDP_RECEIVE_BUFFER", "install"]

logger = logging.getLogger(__name__)

#: Receive buffer asked for on each ICE UDP socket.
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024
#: Longest wait before a DATA packet is acknowledged (RFC 4960 allows up to 200 ms).
SACK_DELAY = 0.01
#: Packets carrying DATA that are acknowledged together.
SACK_EVERY = 2

_installed = False


def install() -> None:
    """Install the fast paths (idempotent); see the module docstring."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        import aioice.ice
        from aiortc import rtcsctptransport as sctp

        protocol = aioice.ice.StunProtocol
        transport = sctp.RTCSctpTransport
        for owner, name in (
            (protocol, "datagram_received"),
            (protocol, "connection_made"),
            (transport, "_mark_received"),
            (transport, "_receive_data_chunk"),
            (transport, "_handle_data"),
            (transport, "_send_sack"),
            (transport, "_get_inbound_stream"),
            (transport, "_reset_deferred_streams"),
            (sctp, "tsn_plus_one"),
            (sctp, "uint32_gt"),
        ):
            if not callable(getattr(owner, name, None)):
                raise AttributeError(f"{getattr(owner, '__name__', owner)}.{name}")
    except (ImportError, AttributeError) as exc:
        logger.warning("aiortc internals differ from 1.16 (%s): data path left as it is", exc)
        return
    _patch_demux(protocol)
    _patch_sctp(transport, sctp)


def _patch_demux(protocol: Any) -> None:
    original = protocol.datagram_received
    original_made = protocol.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        original_made(self, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            except OSError as exc:
                logger.debug("could not enlarge a UDP receive buffer: %s", exc)

    protocol.connection_made = connection_made

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 19 < data[0] < 64:  # DTLS (RFC 7983): never a STUN message
            self.receiver.data_received(data, self.local_candidate.component)
            return
        original(self, data, addr)

    protocol.datagram_received = datagram_received


def _patch_sctp(transport: Any, sctp: Any) -> None:
    original_mark = transport._mark_received
    original_send_sack = transport._send_sack
    original_handle = transport._handle_data
    tsn_plus_one = sctp.tsn_plus_one
    uint32_gt = sctp.uint32_gt
    last_frag = sctp.SCTP_DATA_LAST_FRAG

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
        # aiortc's handler sends a SACK after any packet that carried DATA. Run it with the
        # SACK held back, then decide here whether it goes now or a little later.
        self._peermesh_sack_now = False
        misordered_before = bool(self._sack_misordered)
        self._peermesh_handling = True
        try:
            await original_handle(self, data)
        finally:
            self._peermesh_handling = False
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

    async def _send_sack_unless_handling(self: Any) -> None:
        # Called by aiortc's own _handle_data at its end: deferred to our wrapper above.
        if getattr(self, "_peermesh_handling", False):
            return
        await _send_sack(self)

    transport._mark_received = _mark_received
    transport._receive_data_chunk = _receive_data_chunk
    transport._handle_data = _handle_data
    transport._send_sack = _send_sack_unless_handling


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("delayed SACK failed", exc_info=task.exception())
