"""One WebRTC connection to one remote peer: an aiortc ``RTCPeerConnection`` and its single
``"data"`` channel, as Trystero uses it (wire notes §5).

A :class:`PeerLink` knows nothing about rooms. It moves whole binary frames in both
directions, applies back-pressure on the channel's ``bufferedAmount``, and reports when it
opens and when it closes (channel or connection closed/failed, ``disconnected`` for 5 s, no
connection within the connect timeout after SDP was exchanged, or no packet from the peer
for :data:`~peermesh._wire.liveness.DEAD_AFTER` seconds once open: see
:mod:`peermesh._wire.liveness`, which replaces aioice's consent checks on our connections).
Frames are handed to the ``on_frame`` callback synchronously, in order, as they arrive.

aiortc exceptions raised while applying remote SDP are mapped to :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from aioice import stun
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from aiortc.sdp import candidate_from_sdp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from . import _datapath
from ._ice import host_addresses
from ._wire.liveness import DEAD_AFTER, QUIET_AFTER, Liveness, Verdict
from .errors import PeerTimeoutError, PeerUnavailableError, ProtocolError

__all__ = [
    "BUFFERED_AMOUNT_LOW_THRESHOLD",
    "DtlsCertificate",
    "LinkState",
    "PeerLink",
    "wait_links_closed",
]

logger = logging.getLogger(__name__)

_datapath.install()

#: Trystero's ``bufferedAmountLowThreshold``; a sender waits above it.
BUFFERED_AMOUNT_LOW_THRESHOLD = 0xFFFF
#: Trystero gives a connection this long to come up after SDP was exchanged.
CONNECT_TIMEOUT = 23.333
#: A connection that stays ``disconnected`` this long is treated as closed.
DISCONNECTED_GRACE = 5.0
#: How long a closing link waits for its data channel's reset before closing (see close).
CHANNEL_CLOSE_GRACE = 0.5
#: A send that cannot make progress for this long fails with PeerTimeoutError.
SEND_STALL_TIMEOUT = 30.0
#: Largest remote SDP we are willing to parse.
MAX_SDP_SIZE = 64 * 1024
#: Trickled remote candidates held until the remote description is set.
MAX_EARLY_CANDIDATES = 32
#: A session attribute in every SDP we send, telling a peer that we resolve duplicate
#: connections by a rule both sides compute alike (see ``SharedLinks._preferred``).
#: Endpoints ignore unknown attributes (RFC 8866 §5.13), so Trystero is unaffected.
PEERMESH_SDP_MARKER = "a=x-peermesh:keyed-duplicates"


#: A shared certificate is replaced this long before it expires (aiortc's last 30 days).
CERTIFICATE_RENEWAL = datetime.timedelta(days=1)


class DtlsCertificate(RTCCertificate):
    """One DTLS key pair and certificate for many connections of one local identity.

    aiortc makes a fresh key, certificate and OpenSSL context for every connection (about
    23 KiB and a key generation each); WebRTC allows one certificate for many connections
    (``RTCConfiguration.certificates``), as long as each peer sees its fingerprint in the
    SDP, which it does. The OpenSSL context is made once per set of SRTP profiles, with the
    server-side session cache off: nothing resumes a DTLS session in WebRTC, and a shared
    context would otherwise keep every session it ever accepted.

    Make one with :meth:`generateCertificate`; :attr:`renewal_due` says when to replace it.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        super().__init__(key=key, cert=cert)
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    @property
    def renewal_due(self) -> bool:
        """Whether the certificate expires within :data:`CERTIFICATE_RENEWAL`."""
        now = datetime.datetime.now(datetime.UTC)
        return self.expires - now < CERTIFICATE_RENEWAL

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        profiles = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(profiles)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[profiles] = context
        return context


class LinkState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


FrameHandler = Callable[["PeerLink", bytes], None]
LinkHandler = Callable[["PeerLink"], None]


class PeerLink:
    """An aiortc connection to one remote peer, carrying binary frames.

    Create it with ``initiator=True`` to make an offer (:meth:`create_offer`, then
    :meth:`accept_answer`) or ``initiator=False`` to answer one (:meth:`accept_offer`).
    ``remote_id`` may be unknown when an offer is made (trackers) and set later. Without a
    ``certificate`` the connection makes its own (aiortc's default).
    """

    def __init__(
        self,
        *,
        initiator: bool,
        configuration: RTCConfiguration,
        ice_addresses: tuple[str, ...] | None,
        on_frame: FrameHandler,
        on_open: LinkHandler,
        on_close: LinkHandler,
        remote_id: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        certificate: DtlsCertificate | None = None,
    ) -> None:
        self.initiator = initiator
        self.remote_id = remote_id
        self.created_at = time.monotonic()
        self.state = LinkState.NEW
        #: True once both descriptions are applied; a close before opening is then a
        #: connection failure worth reporting.
        self.sdp_exchanged = False
        self.close_reason = ""
        #: ``time.monotonic()`` when the data channel opened (None until then).
        self.opened_at: float | None = None
        #: Whether the remote's SDP carried :data:`PEERMESH_SDP_MARKER`.
        self.remote_is_peermesh = False
        #: Frames sent and received so far (a retiring link is closed once this stops
        #: moving, see ``SharedLinks``), and ``time.monotonic()`` of the last one.
        self.frames = 0
        self.last_frame_at = self.created_at
        #: Set by :meth:`retire`: this side has sent its last data frame here.
        self.retired = False
        #: Called when the last :meth:`sending` block exits.
        self.on_idle: LinkHandler | None = None
        self._senders = 0
        self._ice_addresses = ice_addresses
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_close = on_close
        self._connect_timeout = connect_timeout
        self._channel: RTCDataChannel | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._timers: list[asyncio.TimerHandle] = []
        self._disconnect_timer: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._early_candidates: list[dict[str, object]] = []
        self._liveness: Liveness | None = None
        self._liveness_timer: asyncio.TimerHandle | None = None
        self._probe: asyncio.Task[None] | None = None
        self._proofs = 0
        self.pc = RTCPeerConnection(configuration)
        if certificate is not None:
            # aiortc has no public way to pass certificates; it reads this list when the
            # first transceiver or channel is made, which is after this line.
            certificates = "_RTCPeerConnection__certificates"
            if isinstance(getattr(self.pc, certificates, None), list):
                setattr(self.pc, certificates, [certificate])
            else:
                logger.debug("aiortc keeps no certificate list here: own certificate used")
        self.pc.on("connectionstatechange", self._on_connection_state)
        if not initiator:
            self.pc.on("datachannel", self._attach_channel)

    def __repr__(self) -> str:
        return f"<PeerLink {self.remote_id or '?'} {self.state.value}>"

    @property
    def is_open(self) -> bool:
        return self.state is LinkState.OPEN

    @property
    def is_closed(self) -> bool:
        return self.state is LinkState.CLOSED

    @property
    def torn_down(self) -> bool:
        """Whether the closed link's peer connection is gone too (see :meth:`wait_closed`)."""
        return self._close_task is not None and self._close_task.done()

    # -- negotiation ----------------------------------------------------------------------

    async def create_offer(self) -> str:
        """Create the ``"data"`` channel and return the complete (non-trickle) offer SDP."""
        self.state = LinkState.CONNECTING
        self._attach_channel(self.pc.createDataChannel("data"))
        with host_addresses(self._ice_addresses):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return _marked(self.pc.localDescription.sdp)

    async def accept_offer(self, sdp: str) -> str:
        """Apply a remote offer and return the complete answer SDP.

        Raises :class:`ProtocolError` if the offer cannot be applied.
        """
        self.state = LinkState.CONNECTING
        await self._set_remote(sdp, "offer")
        try:
            with host_addresses(self._ice_addresses):
                await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # aiortc cannot answer what it accepted
            raise ProtocolError(f"could not answer the remote offer: {exc!r}") from exc
        self._sdp_done()
        return _marked(self.pc.localDescription.sdp)

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer. Raises :class:`ProtocolError` on bad SDP."""
        await self._set_remote(sdp, "answer")
        self._sdp_done()

    async def describe_local(self, offer: str | None = None) -> str:
        """Renegotiation: set ``offer`` as the local description, or without one an
        implicit offer (state ``stable``) or answer (state ``have-remote-offer``); gather
        only the allowed host addresses and return the complete SDP. Raises
        :class:`PeerUnavailableError` once the link is closed and :class:`ProtocolError`
        when aiortc cannot set the description (the caller rolls back)."""
        if self.state is LinkState.CLOSED:
            raise PeerUnavailableError(f"connection to {self.remote_id} is closed")
        description = None if offer is None else RTCSessionDescription(sdp=offer, type="offer")
        try:
            with host_addresses(self._ice_addresses):
                await self.pc.setLocalDescription(description)
        except Exception as exc:  # aiortc raises InvalidStateError, ValueError, ...
            if self.is_closed:
                raise PeerUnavailableError(f"connection to {self.remote_id} is closed") from exc
            raise ProtocolError(f"could not set the local description: {exc!r}") from exc
        return _marked(self.pc.localDescription.sdp)

    async def apply_remote(self, sdp: str, kind: str) -> None:
        """Renegotiation: apply a remote ``"offer"`` or ``"answer"``. Raises
        :class:`ProtocolError` if aiortc cannot apply it."""
        await self._set_remote(sdp, kind)

    async def _set_remote(self, sdp: str, kind: str) -> None:
        if len(sdp) > MAX_SDP_SIZE:
            raise ProtocolError(f"remote {kind} SDP is {len(sdp)} bytes, over {MAX_SDP_SIZE}")
        # aiortc accepts almost any text as an offer and answers it with an empty
        # description, which could never connect. Every Trystero offer has a data channel.
        if kind == "offer" and (not sdp.startswith("v=0") or "\nm=application " not in sdp):
            raise ProtocolError("remote offer is not an SDP with a data-channel section")
        self.remote_is_peermesh = PEERMESH_SDP_MARKER in sdp
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, KeyError, ...
            raise ProtocolError(f"could not apply remote {kind}: {exc!r}") from exc
        await self._apply_early_candidates()

    async def add_remote_candidate(self, candidate: dict[str, object]) -> None:
        """Apply a trickled remote ICE candidate in ``RTCIceCandidate.toJSON()`` form
        (``{"candidate": "candidate:…", "sdpMid": "0", "sdpMLineIndex": 0, …}``).

        Candidates that arrive before the remote description are held (at most
        :data:`MAX_EARLY_CANDIDATES`; more are dropped) and applied after it. An empty
        candidate (end of candidates) is ignored. Raises :class:`ProtocolError` for a
        malformed one; a candidate aioice cannot use (an unresolvable ``.local`` name, say)
        is logged and skipped.
        """
        text = candidate.get("candidate")
        if text == "":
            return
        if not isinstance(text, str) or not text.startswith("candidate:") or len(text) > 1024:
            raise ProtocolError(f"malformed ICE candidate {text!r}")
        if self.pc.remoteDescription is None:
            if len(self._early_candidates) < MAX_EARLY_CANDIDATES:
                self._early_candidates.append(candidate)
            return
        try:
            parsed = candidate_from_sdp(text[len("candidate:") :])
        except Exception as exc:  # aiortc raises IndexError/ValueError on junk
            raise ProtocolError(f"malformed ICE candidate {text!r}: {exc!r}") from exc
        mid = candidate.get("sdpMid")
        index = candidate.get("sdpMLineIndex")
        parsed.sdpMid = mid if isinstance(mid, str) else None
        parsed.sdpMLineIndex = index if isinstance(index, int) else None
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:  # e.g. unknown mid, closed connection
            logger.debug("%r: could not apply a remote candidate: %r", self, exc)

    async def _apply_early_candidates(self) -> None:
        early, self._early_candidates = self._early_candidates, []
        for candidate in early:
            try:
                await self.add_remote_candidate(candidate)
            except ProtocolError as exc:
                logger.debug("%r: dropped an early candidate: %s", self, exc)

    def _sdp_done(self) -> None:
        self.sdp_exchanged = True
        if self.state is not LinkState.CLOSED:
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(self._connect_timeout, self._connect_expired))

    def _connect_expired(self) -> None:
        if self.state is not LinkState.OPEN:
            self.close(f"no connection {self._connect_timeout:g} s after exchanging SDP")

    # -- channel ------------------------------------------------------------------------------

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:
            logger.debug("%r: ignoring extra data channel %r", self, channel.label)
            return
        self._channel = channel
        channel.bufferedAmountLowThreshold = BUFFERED_AMOUNT_LOW_THRESHOLD
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._writable.set)
        channel.on("close", lambda: self.close("data channel closed"))
        if channel.readyState == "open":
            self._opened()
        else:
            channel.on("open", self._opened)

    def _opened(self) -> None:
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.OPEN
        self.opened_at = time.monotonic()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._watch_liveness()
        self._on_open(self)

    def _on_message(self, data: bytes | str) -> None:
        if self.state is not LinkState.OPEN:
            return
        self._count_frame()
        if isinstance(data, str):
            logger.debug("%r: dropped a text message (Trystero sends binary only)", self)
            return
        self._on_frame(self, data)

    def _count_frame(self) -> None:
        self.frames += 1
        self.last_frame_at = time.monotonic()

    @property
    def idle_for(self) -> float:
        """Seconds since the last frame sent or received."""
        return time.monotonic() - self.last_frame_at

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Mark a run of :meth:`send` calls that belong together (the frames of one
        message): while any such block is open the link is not idle, and ``on_idle`` runs
        when the last one exits."""
        self._senders += 1
        try:
            yield
        finally:
            self._senders -= 1
            if not self._senders and self.on_idle is not None:
                self.on_idle(self)

    @property
    def idle(self) -> bool:
        """Whether no :meth:`sending` block is open."""
        return not self._senders

    async def send(self, frame: bytes) -> None:
        """Send one frame, first waiting while the channel's buffer is above the threshold.

        Raises :class:`PeerUnavailableError` if the link is not open, has been retired or
        closes while waiting, and :class:`PeerTimeoutError` if the buffer does not drain
        for ``SEND_STALL_TIMEOUT`` seconds.
        """
        channel = self._channel
        while True:
            if not self._sendable(channel):
                raise PeerUnavailableError(f"connection to {self.remote_id} is closed")
            if self.retired:
                raise PeerUnavailableError(f"connection to {self.remote_id} was handed over")
            if channel.bufferedAmount <= BUFFERED_AMOUNT_LOW_THRESHOLD:
                break
            self._writable.clear()
            try:
                await asyncio.wait_for(self._writable.wait(), SEND_STALL_TIMEOUT)
            except TimeoutError:
                raise PeerTimeoutError(
                    f"{self.remote_id} accepted no data for {SEND_STALL_TIMEOUT:g} s"
                ) from None
        self._count_frame()
        channel.send(frame)

    def send_nowait(self, frame: bytes) -> bool:
        """Send a small control frame without waiting (even once retired); returns False if
        the link is closed."""
        channel = self._channel
        if not self._sendable(channel):
            return False
        self._count_frame()
        channel.send(frame)
        return True

    def _sendable(self, channel: RTCDataChannel | None) -> TypeGuard[RTCDataChannel]:
        """Whether ``channel`` takes frames: the link is open and so is the channel (which
        is "closing", and refuses frames, from the peer's close until aiortc's ``close``)."""
        return self.state is LinkState.OPEN and channel is not None and channel.readyState == "open"

    def retire(self, last_frame: bytes) -> None:
        """Send ``last_frame``, after which :meth:`send` refuses: only control frames
        (:meth:`send_nowait`) may follow. See ``SharedLinks`` for the handover."""
        self.send_nowait(last_frame)
        self.retired = True

    # -- liveness (peermesh._wire.liveness) ---------------------------------------------------

    @property
    def silent_for(self) -> float:
        """Seconds since the last authenticated packet from the peer (0 while not watched:
        before the link opens, or where aiortc's internals differ)."""
        if self._liveness is None:
            return 0.0
        return self._liveness.silent_for(asyncio.get_running_loop().time())

    def _ice_connection(self) -> Any:
        """aioice's connection under the data channel, if its internals are as expected
        (else None)."""
        sctp = self.pc.sctp
        if sctp is None:
            return None
        ice = getattr(sctp.transport.transport, "_connection", None)
        if ice is None:
            return None
        for name in ("_query_consent_task", "_nominated", "build_request", "remote_password"):
            if not hasattr(ice, name):
                logger.debug("%r: aioice has no %s; its consent checks stay", self, name)
                return None
        return ice

    def _watch_liveness(self) -> None:
        """Take over consent freshness from aioice for this connection (one BUNDLE
        transport carries everything), unless the data path cannot count proofs here."""
        ice = self._ice_connection()
        if ice is None or self.pc.sctp is None:
            return
        proofs = _datapath.proofs_of(self.pc.sctp.transport)
        if proofs is None:
            return
        consent = getattr(ice, "_query_consent_task", None)
        if consent is not None:
            consent.cancel()
            setattr(ice, "_query_consent_task", None)  # noqa: B010 (aioice's own attribute)
        loop = asyncio.get_running_loop()
        self._proofs = proofs
        self._liveness = Liveness(loop.time())
        self._liveness_timer = loop.call_at(self._liveness.get_timer(), self._check_liveness)

    def _check_liveness(self) -> None:
        liveness = self._liveness
        self._liveness_timer = None
        if liveness is None or self.is_closed or self.pc.sctp is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        proofs = _datapath.proofs_of(self.pc.sctp.transport)
        if proofs is not None and proofs != self._proofs:
            self._proofs = proofs
            liveness.proof(now)
        verdict = liveness.handle_timer(now)
        if verdict is Verdict.DEAD:
            self.close(f"no packet from the peer for {DEAD_AFTER:g} s")
            return
        if verdict is Verdict.PROBE and self._probe is None:
            self._probe = asyncio.ensure_future(self._probe_peer(liveness))
        self._liveness_timer = loop.call_at(liveness.get_timer(), self._check_liveness)

    async def _probe_peer(self, liveness: Liveness) -> None:
        """One binding request on the nominated pair; an answer is proof of life."""
        ice = self._ice_connection()
        try:
            pair = ice._nominated.get(1) if ice is not None else None
            if pair is None or ice.remote_password is None:
                return
            await pair.protocol.request(
                ice.build_request(pair, nominate=False),
                pair.remote_addr,
                integrity_key=ice.remote_password.encode("utf8"),
                retransmissions=1,
            )
            liveness.proof(asyncio.get_running_loop().time())
        except stun.TransactionError:
            pass  # no answer: the verdict stays with the silence
        except (ConnectionError, OSError) as exc:
            logger.debug("%r: could not probe the peer: %r", self, exc)
        finally:
            self._probe = None

    # -- closing ------------------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            self.close(f"connection {state}")
        elif state == "disconnected":
            if self._disconnect_timer is None:
                loop = asyncio.get_running_loop()
                self._disconnect_timer = loop.call_later(
                    DISCONNECTED_GRACE, self.close, "disconnected for 5 s"
                )
        elif self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
            self._disconnect_timer = None

    def close(self, reason: str = "closed locally") -> None:
        """Close the link (idempotent). ``on_close`` runs once, synchronously.

        An open data channel to a peer that is still there is closed first, as browsers
        do (an SCTP stream reset, RFC 8831 §6.7), and the connection after it is reset or
        :data:`CHANNEL_CLOSE_GRACE` seconds later: aiortc closes a connection with an SCTP
        ABORT, which browsers report on a channel still open as an error (Trystero logs
        ``peer error: OperationError`` for every peer that leaves that way)."""
        if self.state is LinkState.CLOSED:
            return
        graceful = self.state is LinkState.OPEN and self.silent_for < QUIET_AFTER
        self.state = LinkState.CLOSED
        self.close_reason = reason
        logger.debug("%r closed: %s", self, reason)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
        if self._liveness_timer is not None:
            self._liveness_timer.cancel()
        if self._probe is not None:
            self._probe.cancel()
        self._writable.set()  # wake senders so they see the closed state
        self._close_task = asyncio.ensure_future(self._close_pc(graceful))
        _closing.add(self._close_task)
        self._close_task.add_done_callback(_closing.discard)
        self._on_close(self)

    async def _close_pc(self, graceful: bool) -> None:
        channel = self._channel
        if graceful and channel is not None and channel.readyState == "open":
            reset = asyncio.Event()
            channel.on("close", reset.set)
            channel.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reset.wait(), CHANNEL_CLOSE_GRACE)
        try:
            await self.pc.close()
        except Exception:  # aiortc may raise while tearing down half-built transports
            logger.debug("%r: error while closing the peer connection", self, exc_info=True)

    async def wait_closed(self) -> None:
        """Wait until the underlying peer connection has been torn down."""
        if self._close_task is not None:
            await asyncio.shield(self._close_task)


def _marked(sdp: str) -> str:
    """``sdp`` with :data:`PEERMESH_SDP_MARKER` after its ``t=`` line."""
    head, sep, rest = sdp.partition("\r\nt=")
    if not sep:
        return sdp
    line, crlf, tail = rest.partition("\r\n")
    return f"{head}{sep}{line}{crlf}{PEERMESH_SDP_MARKER}\r\n{tail}"


_closing: set[asyncio.Task[None]] = set()


async def wait_links_closed(timeout: float = 5.0) -> None:
    """Wait (bounded) until every link of this event loop closed so far has torn down its
    peer connection."""
    loop = asyncio.get_running_loop()
    for task in list(_closing):
        if task.get_loop().is_closed():
            _closing.discard(task)
    mine = {task for task in _closing if task.get_loop() is loop}
    if mine:
        await asyncio.wait(mine, timeout=timeout)
