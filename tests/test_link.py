"""One WebRTC connection (``PeerLink``) on loopback: the connect timeout after SDP was
exchanged, and back-pressure on the data channel's ``bufferedAmount``."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from OpenSSL import SSL

from peermesh import JoinErrorEvent, PeerUnavailableError, _link
from peermesh._link import BUFFERED_AMOUNT_LOW_THRESHOLD, DtlsCertificate, LinkState, PeerLink
from peermesh._shared import SharedLinks
from peermesh.errors import ProtocolError
from tests.rooms import JoinFactory, eventually

CONFIG = RTCConfiguration(iceServers=[])
LOOPBACK = ("127.0.0.1",)


class Recorder:
    """Callbacks for a PeerLink that remember what happened."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.opened: list[PeerLink] = []
        self.closed: list[tuple[PeerLink, str]] = []

    def link(
        self,
        *,
        initiator: bool,
        connect_timeout: float = 23.333,
        certificate: DtlsCertificate | None = None,
    ) -> PeerLink:
        return PeerLink(
            initiator=initiator,
            configuration=CONFIG,
            ice_addresses=LOOPBACK,
            on_frame=lambda _link, data: self.frames.append(data),
            on_open=self.opened.append,
            on_close=lambda link: self.closed.append((link, link.close_reason)),
            connect_timeout=connect_timeout,
            certificate=certificate,
        )


@pytest.fixture
async def links() -> AsyncIterator[list[PeerLink]]:
    made: list[PeerLink] = []
    yield made
    for link in made:
        link.close("test over")
    for link in made:
        await link.wait_closed()


async def remote_offer() -> tuple[RTCPeerConnection, str]:
    """A plain aiortc offerer whose answer the test may never apply."""
    pc = RTCPeerConnection(CONFIG)
    pc.createDataChannel("data")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def open_pair(
    links: list[PeerLink], *, certificate: DtlsCertificate | None = None
) -> tuple[PeerLink, PeerLink, Recorder, Recorder]:
    near, far = Recorder(), Recorder()
    a = near.link(initiator=True, certificate=certificate)
    b = far.link(initiator=False)
    links += [a, b]
    await a.accept_answer(await b.accept_offer(await a.create_offer()))
    await eventually(lambda: a.is_open and b.is_open, 10, "link open")
    return a, b, near, far


# -- connect timeout ------------------------------------------------------------------------


async def test_link_closes_when_no_connection_follows_the_sdp_exchange(
    links: list[PeerLink],
) -> None:
    recorder = Recorder()
    link = recorder.link(initiator=False, connect_timeout=0.5)
    links.append(link)
    pc, offer = await remote_offer()
    try:
        started = time.monotonic()
        await link.accept_offer(offer)  # the offerer never gets our answer
        assert link.sdp_exchanged
        assert link.state is LinkState.CONNECTING
        await asyncio.sleep(0.3)
        assert recorder.closed == []
        await eventually(lambda: bool(recorder.closed), 3, "connect timeout")
        assert 0.45 < time.monotonic() - started < 2.0
        assert recorder.closed == [(link, "no connection 0.5 s after exchanging SDP")]
        assert recorder.opened == []
        assert link.is_closed
    finally:
        await pc.close()


async def test_unanswered_offer_has_no_connect_timer(links: list[PeerLink]) -> None:
    recorder = Recorder()
    link = recorder.link(initiator=True, connect_timeout=0.2)
    links.append(link)
    await link.create_offer()
    await asyncio.sleep(0.5)
    # Offers wait in the pool until answered (or expired by the signaller), not 0.2 s.
    assert not link.sdp_exchanged
    assert recorder.closed == []
    assert link.state is LinkState.CONNECTING


async def test_connect_timeout_is_a_join_error_of_the_room(join: JoinFactory) -> None:
    room = await join("T" * 20)
    errors: list[JoinErrorEvent] = []
    room.on_join_error(errors.append)
    remote_id = "R" * 20
    link = room._shared.new_link(
        room,
        initiator=False,
        configuration=room.configuration,
        ice_addresses=room.ice_addresses,
        remote_id=remote_id,
    )
    link._connect_timeout = 0.5
    pc, offer = await remote_offer()
    try:
        await link.accept_offer(offer)
        await eventually(lambda: bool(errors), 3, "join error")
    finally:
        await pc.close()
    (event,) = errors
    assert event.peer_id == remote_id
    assert event.error.startswith(f"could not connect to peer {remote_id} after exchanging SDP")
    assert "no connection 0.5 s after exchanging SDP" in event.error
    assert (event.app_id, event.room_id) == (room.app_id, room.room_id)
    assert link not in room._shared._info
    assert room.get_peers() == {}


async def test_answer_that_never_connects_times_out_on_the_offering_side(
    links: list[PeerLink],
) -> None:
    recorder = Recorder()
    link = recorder.link(initiator=True, connect_timeout=0.5)
    links.append(link)
    offer = await link.create_offer()
    pc = RTCPeerConnection(CONFIG)
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = pc.localDescription.sdp
    await pc.close()  # the answerer is gone before any connectivity check
    await link.accept_answer(answer)
    await eventually(lambda: bool(recorder.closed), 5, "close")
    (_, reason) = recorder.closed[0]
    assert reason in ("no connection 0.5 s after exchanging SDP", "connection failed")
    assert recorder.opened == []


async def test_oversize_or_unusable_remote_sdp_is_a_protocol_error(
    links: list[PeerLink],
) -> None:
    recorder = Recorder()
    link = recorder.link(initiator=False)
    links.append(link)
    with pytest.raises(ProtocolError, match="over"):
        await link.accept_offer("v=0\r\n" + "a=x\r\n" * 20_000)
    offerer = recorder.link(initiator=True)
    links.append(offerer)
    await offerer.create_offer()
    with pytest.raises(ProtocolError):
        await offerer.accept_answer("not an answer")
    assert not offerer.sdp_exchanged


# -- frames and back-pressure ----------------------------------------------------------------


async def test_frames_flow_in_order_both_ways(links: list[PeerLink]) -> None:
    a, b, near, far = await open_pair(links)
    assert near.opened == [a]
    assert far.opened == [b]
    for i in range(50):
        await a.send(b"a%d" % i)
        assert b.send_nowait(b"b%d" % i)
    await eventually(lambda: len(far.frames) == 50 and len(near.frames) == 50, 5, "frames")
    assert far.frames == [b"a%d" % i for i in range(50)]
    assert near.frames == [b"b%d" % i for i in range(50)]


async def test_send_waits_above_the_threshold_until_bufferedamountlow(
    links: list[PeerLink],
) -> None:
    a, _b, _near, far = await open_pair(links)
    channel = a._channel
    assert channel is not None
    assert channel.bufferedAmountLowThreshold == BUFFERED_AMOUNT_LOW_THRESHOLD
    chunk = b"x" * 16 * 1024
    for _ in range(40):  # 640 KiB queued at once, far above the 64 KiB threshold
        channel.send(chunk)
    assert channel.bufferedAmount > BUFFERED_AMOUNT_LOW_THRESHOLD
    lows: list[int] = []
    channel.on("bufferedamountlow", lambda: lows.append(channel.bufferedAmount))

    level_when_sent: list[int] = []

    async def send_last() -> None:
        await a.send(b"last")
        level_when_sent.append(channel.bufferedAmount - len(b"last"))

    task = asyncio.ensure_future(send_last())
    await asyncio.sleep(0)
    assert not task.done()  # blocked on the full buffer
    assert not a._writable.is_set()
    await asyncio.wait_for(task, 10)
    assert lows, "the send resumed without a bufferedamountlow event"
    (level,) = level_when_sent
    assert level <= BUFFERED_AMOUNT_LOW_THRESHOLD
    await eventually(lambda: len(far.frames) == 41, 10, "all frames")
    assert far.frames[-1] == b"last"
    assert all(frame == chunk for frame in far.frames[:-1])


async def test_send_below_the_threshold_does_not_wait(links: list[PeerLink]) -> None:
    a, _b, _near, far = await open_pair(links)
    task = asyncio.ensure_future(a.send(b"now"))
    await asyncio.sleep(0)
    assert task.done()
    await task
    await eventually(lambda: far.frames == [b"now"], 5, "frame")


async def test_waiting_send_fails_when_the_link_closes(links: list[PeerLink]) -> None:
    a, _b, _near, _far = await open_pair(links)
    channel = a._channel
    assert channel is not None
    for _ in range(40):
        channel.send(b"x" * 16 * 1024)
    task = asyncio.ensure_future(a.send(b"stuck"))
    await asyncio.sleep(0)
    assert not task.done()
    a.close("closed while sending")
    with pytest.raises(PeerUnavailableError):
        await asyncio.wait_for(task, 1)
    with pytest.raises(PeerUnavailableError):
        await a.send(b"after close")
    assert not a.send_nowait(b"after close")


async def test_remote_close_closes_the_link_once(links: list[PeerLink]) -> None:
    a, b, near, far = await open_pair(links)
    b.close("going away")
    await eventually(lambda: bool(near.closed), 10, "remote close seen")
    assert len(near.closed) == 1
    assert a.is_closed
    assert far.closed == [(b, "going away")]


# -- DTLS certificate --------------------------------------------------------------------


def sdp_fingerprints(link: PeerLink) -> set[str]:
    sdp = link.pc.localDescription.sdp
    return {line for line in sdp.splitlines() if line.startswith("a=fingerprint:")}


def ssl_context(link: PeerLink) -> SSL.Context:
    sctp = link.pc.sctp
    assert sctp is not None
    ssl = sctp.transport._ssl
    assert ssl is not None
    return ssl.get_context()


async def test_links_given_one_certificate_share_its_key_and_openssl_context(
    links: list[PeerLink],
) -> None:
    certificate = DtlsCertificate.generateCertificate()
    first, first_far, _, far = await open_pair(links, certificate=certificate)
    second, _, _, _ = await open_pair(links, certificate=certificate)
    own, _, _, _ = await open_pair(links)

    expected = {f"a=fingerprint:{f.algorithm} {f.value}" for f in certificate.getFingerprints()}
    assert sdp_fingerprints(first) == sdp_fingerprints(second)
    assert sdp_fingerprints(first) & expected
    assert not sdp_fingerprints(own) & expected
    context = ssl_context(first)
    assert ssl_context(second) is context
    assert ssl_context(own) is not context
    assert ssl_context(first_far) is not context
    assert context.get_session_cache_mode() == SSL.SESS_CACHE_OFF
    first.send_nowait(b"over the shared key")
    await eventually(lambda: far.frames == [b"over the shared key"], 5, "frame delivered")


def test_an_identity_uses_one_certificate_until_it_is_due_for_renewal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = SharedLinks("a" * 20, "app", lambda _table: None)
    certificate = table.certificate()
    assert table.certificate() is certificate
    assert SharedLinks("b" * 20, "app", lambda _table: None).certificate() is not certificate
    assert certificate.expires - datetime.datetime.now(datetime.UTC) > _link.CERTIFICATE_RENEWAL
    # aiortc's certificates last 30 days: renewing 31 days ahead makes every one due.
    monkeypatch.setattr(_link, "CERTIFICATE_RENEWAL", datetime.timedelta(days=31))
    assert certificate.renewal_due
    renewed = table.certificate()
    assert renewed is not certificate
    assert renewed.getFingerprints() != certificate.getFingerprints()
