"""The fuzz targets: one per decoder of outside bytes, each ``(data: bytes) -> None``.

Each target's docstring states its invariants. Besides them, every target is held to the
limits of :mod:`tests.fuzz.harness` (time and memory per input). A target returns normally
when the code under test keeps its word, raises :class:`~tests.fuzz.harness.Violation` when
it does not, and lets any undocumented exception escape.

Targets whose input is a sequence (the reassembler, a byte stream) read it as records
(:func:`~tests.fuzz.harness.records`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from typing import Any

from aiortc import rtcsctptransport as sctp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peermesh._limits import MemoryBudget
from peermesh._signalling.mqtt import payload_text
from peermesh._wire import media, nostr, sealing, signals, streams, tracker
from peermesh._wire.actions import (
    MessageReceived,
    PayloadKind,
    Reassembler,
    decode_payload,
    decoded_size,
    parse_chunk,
)
from peermesh._wire.frames import (
    HandoverFrame,
    PresenceFrame,
    RoomFrame,
    encode_handover_frame,
    encode_presence_frame,
    encode_room_frame,
    parse_frame,
)
from peermesh._wire.sctp_guard import check_packet, gaps_problem
from peermesh._wire.topics import is_peer_id
from peermesh.errors import ProtocolError, RelayProtocolError, SealError, UsageError
from peermesh.servers.relay import RelayServer
from tests._wire.test_sctp_guard import parse_with_aiortc

from .harness import Target, deep_size, expect, records

__all__ = ["TARGETS"]


def _text(data: bytes) -> str:
    """``data`` as text: UTF-8, with each byte that is not UTF-8 as a lone surrogate (so that
    every input is some string, lone surrogates included)."""
    return data.decode("utf-8", "surrogateescape")


# -- data-channel frames ------------------------------------------------------------------------


def frames(data: bytes) -> None:
    """A data-channel message (``_wire.frames.parse_frame``, then for a room frame
    ``_wire.actions.parse_chunk`` and ``decode_payload`` of its one chunk).

    Only ``ProtocolError`` escapes. A frame that parses re-encodes to the same bytes (a
    presence frame to its first 4 + token bytes, as the rest is ignored). A decoded payload
    holds no more than ``decoded_size`` estimated (what the memory budget is charged).
    """
    try:
        frame = parse_frame(data)
    except ProtocolError:
        return
    if isinstance(frame, HandoverFrame):
        expect(encode_handover_frame(frame.signal) == data, "handover frame re-encodes")
        return
    if isinstance(frame, PresenceFrame):
        encoded = encode_presence_frame(frame.token, frame.present)
        expect(encoded == data[: len(encoded)], "presence frame re-encodes")
        return
    assert isinstance(frame, RoomFrame)
    expect(encode_room_frame(frame.token, bytes(frame.chunk)) == data, "room frame re-encodes")
    try:
        chunk = parse_chunk(frame.chunk)
        kind = PayloadKind.JSON if chunk.is_meta else chunk.kind
        value = decode_payload(kind, chunk.payload)
    except ProtocolError:
        return
    estimate, size = decoded_size(kind, chunk.payload), deep_size(value)
    expect(size <= estimate, f"decoded_size {estimate} is below the {size} bytes decoded")


def reassembler(data: bytes) -> None:
    """A sequence of action chunks from four peers through one ``Reassembler`` with small
    limits, sharing a ``MemoryBudget`` that evicts peers (as rooms share one).

    Records: selector bits 0-1 pick the peer; bit 7 set drops that peer instead; otherwise
    the payload is one chunk (``parse_chunk`` then ``feed``). Only ``ProtocolError`` escapes.
    After every record (for the peer it came from; for every peer at the end) what the
    reassembler holds for a peer is what the budget holds for it, within the per-peer cap,
    with at most ``max_partial_per_peer`` partial messages and ``max_poisoned_per_peer``
    poisoned keys; the totals agree and stay within the budget's; a completed text or JSON
    message holds no more than its ``size`` says. Once every peer is dropped nothing is held.
    """
    budget = MemoryBudget(3 * 1024, 2 * 1024)
    reassembler = Reassembler(
        max_message_size=1536,
        max_partial_per_peer=3,
        max_meta_size=512,
        max_poisoned_per_peer=4,
        budget=budget,
    )
    budget.add_holder(lambda peer_id, reason: reassembler.drop_peer(peer_id))
    peers = [f"peer{i}" for i in range(4)]
    for selector, payload in records(data):
        peer = peers[selector & 3]
        if selector & 0x80:
            reassembler.drop_peer(peer)
        else:
            try:
                event = reassembler.feed(peer, parse_chunk(payload))
            except ProtocolError:
                event = None
            if isinstance(event, MessageReceived) and event.kind is not PayloadKind.BINARY:
                expect(deep_size(event.data) <= event.size, "message holds more than its size")
        _check_holdings(reassembler, budget, peer)
        expect(reassembler.buffered() == budget.held() <= budget.total, "total holdings")
    for peer in peers:
        _check_holdings(reassembler, budget, peer)
        reassembler.drop_peer(peer)
    expect(budget.held() == 0 and reassembler.pending() == 0, "something is still held")


def _check_holdings(reassembler: Reassembler, budget: MemoryBudget, peer: str) -> None:
    held = budget.held(peer)
    expect(reassembler.buffered(peer) == held, "reassembler and budget disagree")
    expect(held <= budget.per_peer, "a peer holds more than its cap")
    expect(reassembler.pending(peer) <= 3, "too many partial messages")
    expect(reassembler.poisoned(peer) <= 4, "too many poisoned keys")


# -- signalling relays ----------------------------------------------------------------------------


def tracker_client(data: bytes) -> None:
    """A message from a WebTorrent tracker (``_wire.tracker.parse_tracker_message``), as
    bytes and as text.

    Only ``RelayProtocolError`` escapes. UTF-8 bytes and their text parse alike.
    ``clamp_interval_ms`` of the interval is within Trystero's 10-120 s.
    """
    text = _text(data)
    try:
        message = tracker.parse_tracker_message(text)
    except RelayProtocolError:
        message = None
    try:
        from_bytes = tracker.parse_tracker_message(data)
    except RelayProtocolError:
        from_bytes = None
    if text.encode("utf-8", "surrogatepass") == data:  # valid UTF-8
        expect(message == from_bytes, "bytes and text parse differently")
    if message is not None:
        period = tracker.clamp_interval_ms(message.interval)
        expect(tracker.DEFAULT_ANNOUNCE_MS <= period <= tracker.MAX_ANNOUNCE_MS, "interval")


def _ascii_json(text: str) -> Any:
    expect(text.isascii(), f"a tracker reply is not ASCII: {text[:80]!r}")
    return json.loads(text)


def tracker_server(data: bytes) -> None:
    """A message from a client to our tracker (``_wire.tracker.parse_client_message``, as
    ``peermesh.servers.tracker`` calls it), and the replies the tracker builds from it.

    Only ``RelayProtocolError`` escapes; its text makes an ASCII JSON ``failure reason``.
    Every reply (announce response, relayed offer and answer, scrape response) is ASCII
    JSON, and a relayed offer or answer with an SDP is read back by our own client
    (``parse_tracker_message``) as that SDP from that peer.
    """
    try:
        request = tracker.parse_client_message(data, max_offers=10)
    except RelayProtocolError as exc:
        reply = _ascii_json(tracker.encode_failure(str(exc)))
        expect(reply == {"failure reason": str(exc)}, "failure reason changed")
        return
    if isinstance(request, tracker.ClientScrape):
        files = {info_hash: (1, 2) for info_hash in request.info_hashes}
        _ascii_json(tracker.encode_scrape_response(files, interval=120))
        return
    ih, peer_id = request.info_hash, request.peer_id
    _ascii_json(tracker.encode_announce_response(ih, interval=120, complete=1, incomplete=0))
    relayed: list[tuple[str, str, str | None, str]] = [
        (tracker.encode_relayed_offer(ih, peer_id, o), o.offer_id, o.sdp, "offer")
        for o in request.offers
    ]
    if request.answer is not None:
        answer = request.answer
        text = tracker.encode_relayed_answer(ih, peer_id, answer)
        relayed.append((text, answer.offer_id, answer.sdp, "answer"))
    for text, offer_id, sdp, kind in relayed:
        _ascii_json(text)
        if sdp is None or not offer_id or len(text) > tracker.MAX_MESSAGE_SIZE:
            continue
        received = getattr(tracker.parse_tracker_message(text), kind)
        expect(
            (received.peer_id, received.offer_id, received.sdp) == (peer_id, offer_id, sdp),
            f"our client reads a relayed {kind} differently",
        )


def nostr_relay(data: bytes) -> None:
    """A message from a Nostr relay (``_wire.nostr.parse_relay_message``), and for an event
    what ``_signalling.nostr`` then does with it.

    Only ``RelayProtocolError`` escapes. For an ``EVENT``, the id of the event can be
    computed (``event_id`` must not raise: ``verify_event`` would hide it, rejecting every
    such event), ``verify_event`` returns a bool, and ``event_topic`` a non-empty string or
    ``None``.
    """
    try:
        message = nostr.parse_relay_message(_text(data))
    except RelayProtocolError:
        return
    if not isinstance(message, nostr.RelayEvent):
        return
    event = message.event
    nostr.event_id(
        event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"]
    )
    expect(isinstance(nostr.verify_event(event), bool), "verify_event returned a non-bool")
    topic = nostr.event_topic(event)
    expect(topic is None or (isinstance(topic, str) and topic != ""), "event_topic")


def _signal_round_trip(signal: signals.Signal) -> None:
    """What parses re-encodes (with our encoders) to the same signal."""
    kind, peer_id, passive = signal.kind, signal.peer_id, signal.passive
    if kind is signals.SignalKind.ANNOUNCE:
        text = signals.encode_announce(peer_id, passive=passive)
        signal = signals.Signal(kind, peer_id, passive=passive)  # the offerId is not sent
    elif kind is signals.SignalKind.OFFER:
        if signal.offer_id is None:
            return  # we never send an offer without its id
        text = signals.encode_offer(peer_id, signal.offer_id, signal.sealed, passive=passive)
    elif kind is signals.SignalKind.ANSWER:
        text = signals.encode_answer(peer_id, signal.sealed, signal.offer_id, passive=passive)
    else:
        text = signals.encode_candidate(
            peer_id, signal.sealed, signal.offer_id, offerer=False, passive=passive
        )
    expect(signals.parse_signal(text) == signal, f"a {kind.value} does not re-encode")


def topic_signal(data: bytes) -> None:
    """A signalling message of the topic strategies (``_wire.signals.parse_signal``), as
    bytes and as text.

    Only ``ProtocolError`` escapes. What parses has a peer id that ``is_peer_id`` accepts
    and re-encodes with our encoders to the same ``Signal``.
    """
    for value in (data, _text(data)):
        try:
            signal = signals.parse_signal(value)
        except ProtocolError:
            continue
        expect(is_peer_id(signal.peer_id), f"peer id {signal.peer_id!r}")
        _signal_round_trip(signal)


def mqtt_payload(data: bytes) -> None:
    """An MQTT message payload as ``MqttRelay`` reads it (``_signalling.mqtt.payload_text``)
    and hands it to a topic room (``parse_signal``).

    ``payload_text`` raises only ``RelayProtocolError``, and returns ``data`` decoded when
    it is UTF-8 within ``MAX_PAYLOAD``; ``parse_signal`` then raises only ``ProtocolError``
    and what parses re-encodes to the same ``Signal``.
    """
    try:
        text = payload_text(data)
    except RelayProtocolError:
        return
    expect(text.encode() == data, "payload text differs from the payload")
    try:
        signal = signals.parse_signal(text)
    except ProtocolError:
        return
    _signal_round_trip(signal)


def ws_relay_server(data: bytes) -> None:
    """A frame from a client to our ws-relay server (``RelayServer._parse``), as bytes and
    as text.

    Only the server's own ``_Malformed`` escapes; what parses is a subscribe, unsubscribe or
    publish with a string topic.
    """
    for value in (data, _text(data)):
        try:
            kind, topic, _ = RelayServer._parse(value)
        except Exception as exc:
            if type(exc).__name__ != "_Malformed":
                raise
            continue
        expect(kind in ("subscribe", "unsubscribe", "publish"), f"kind {kind!r}")
        expect(isinstance(topic, str), "topic is not a string")


# -- sealed SDP -----------------------------------------------------------------------------------

_KEY = sealing.derive_key(None, "my-app", "room-1")
_OTHER_KEY = sealing.derive_key("secret", "my-app", "room-1")
_IV = bytes(range(16))


def _sealed(plaintext: bytes) -> str:
    """Trystero's text form of ``plaintext`` (any bytes, so also invalid UTF-8)."""
    body = AESGCM(_KEY).encrypt(_IV, plaintext, None)
    return ",".join(map(str, _IV)) + "$" + base64.b64encode(body).decode()


def sealed_sdp(data: bytes) -> None:
    """A sealed SDP or candidate (``_wire.sealing.unseal``) and the password handshake
    messages (``parse_password_message``, ``check_password_proof``).

    Even first byte: the rest, as text, is unsealed as received. Only ``SealError`` escapes.
    Odd first byte: the rest is a plaintext, sealed with the room key; ``unseal`` returns it
    when it is UTF-8 and raises ``SealError`` otherwise, and with another key always raises
    ``SealError``. The rest, as JSON, never makes ``parse_password_message`` raise, nor as
    text ``check_password_proof``.
    """
    if not data:
        return
    body = data[1:]
    if data[0] % 2 == 0:
        with contextlib.suppress(SealError):
            sealing.unseal(_KEY, _text(body))
    else:
        text = _sealed(body)
        try:
            plain: str | None = sealing.unseal(_KEY, text)
        except SealError:
            plain = None
        expect(plain == _utf8_or_none(body), "unseal does not return what was sealed")
        try:
            sealing.unseal(_OTHER_KEY, text)
            opened = True
        except SealError:
            opened = False
        expect(not opened, "unsealed with the wrong key")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        value = None
    sealing.parse_password_message(value)
    sealing.check_password_proof("c" * sealing.CHALLENGE_LENGTH, _text(body), "pw", "a", "r")


def _utf8_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- byte streams ---------------------------------------------------------------------------------


def byte_stream(data: bytes) -> None:
    """A sequence of stream messages from a peer through one ``_wire.streams.StreamState``.

    Records, by selector mod 5: 0 a binary payload, 1 a JSON payload (``decode_payload``,
    then ``decode_frame``, then ``receive``); 2 the application reads ``len(payload)``
    bytes; 3 it writes the payload; 4 every frame due is taken (``next_frame``).

    ``decode_frame`` and ``receive`` raise only ``ProtocolError``; ``write`` only
    ``UsageError`` (after EOF or a reset, or past the write limit). The receive buffer never
    holds more than the window, nothing is received past the advertised limit, and every
    frame due re-decodes (``decode_frame(encode_frame(f))``) to itself.
    """
    state = streams.StreamState(window=2048, max_frame=512, write_limit=4096)
    for selector, payload in records(data):
        op = selector % 5
        if op <= 1:
            kind = PayloadKind.BINARY if op == 0 else PayloadKind.JSON
            with contextlib.suppress(ProtocolError):
                state.receive(streams.decode_frame(decode_payload(kind, payload)))
        elif op == 2:
            state.read(len(payload))
        elif op == 3:
            with contextlib.suppress(UsageError):
                state.write(payload)
        else:
            while (frame := state.next_frame()) is not None:
                expect(streams.decode_frame(streams.encode_frame(frame)) == frame, "re-decode")
        expect(state.read_buffered <= state.window, "receive buffer over the window")
        expect(state.received <= state.advertised, "received past the limit")
        expect(state.write_buffered <= state.write_limit, "write buffer over its limit")


# -- media ----------------------------------------------------------------------------------------

_REFERENCE_SDP = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdefghijkl
a=fingerprint:sha-256 AB:CD
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=mid:0
m=audio 9 UDP/TLS/RTP/SAVPF 96
a=mid:1
a=sendrecv
a=msid:stream track
a=rtpmap:96 opus/48000/2
"""


def _sdp_facts(current: str, new: str) -> None:
    """What the media layer reads from a remote SDP ``new`` while ``current`` is applied."""
    for sdp in (current, new):
        for section in media.media_sections(sdp):
            expect(section.kind in ("audio", "video"), "media section of another kind")
        media.has_media_codecs(sdp)
        mids = [mid for mid, _ in media._credentials(sdp)]
        if len(set(mids)) == len(mids):  # a valid SDP (RFC 8843: mids are unique)
            expect(media.credentials_change(sdp, sdp) is None, "an SDP changes its credentials")
    for before, after in ((current, new), (new, current)):
        reason = media.credentials_change(before, after)
        expect(reason is None or isinstance(reason, str), "credentials_change")


def media_payload(data: bytes) -> None:
    """The media payloads (``_wire.media``): ``@_stream``/``@_track`` metas
    (``parse_media_meta``), ``@_signal`` (``parse_signal``, ``parse_candidate``), and the
    SDP facts read from a remote SDP (``media_sections``, ``credentials_change``).

    Even first byte: the rest is a JSON action payload (``decode_payload``), an SDP in it
    read against a fixed one; odd: the rest, as text, is two SDPs separated by NUL, each
    read against the other. The parsers raise only ``ProtocolError``; the SDP readers never
    raise, and an SDP with unique mids never changes its own credentials. A meta
    re-encodes to itself.
    """
    if not data:
        return
    body = data[1:]
    if data[0] % 2:
        current, _, new = _text(body).partition("\0")
        _sdp_facts(current, new)
        return
    try:
        value = decode_payload(PayloadKind.JSON, body)
    except ProtocolError:
        return
    try:
        meta = media.parse_media_meta(value)
    except ProtocolError:
        pass
    else:
        if meta.stream_id is not None and meta.track_id is not None:
            again = media.encode_track_meta(meta.key, meta.stream_id, meta.track_id, meta.metadata)
            expect(media.parse_media_meta(again) == meta, "a track meta does not re-encode")
    try:
        signal = media.parse_signal(value)
        if signal.type is media.SignalType.CANDIDATE:
            media.parse_candidate(signal.sdp)
        else:
            _sdp_facts(_REFERENCE_SDP, signal.sdp)
    except ProtocolError:
        pass


# -- SCTP -----------------------------------------------------------------------------------------

#: TSNs outstanding past a SACK's cumulative TSN, for ``gaps_problem``.
_OUTSTANDING = 64


def _with_checksum(packet: bytes) -> bytes:
    crc = sctp.crc32c(packet[:8] + b"\0\0\0\0" + packet[12:])
    return packet[:8] + struct.pack("<L", crc) + packet[12:]


def sctp_packet(data: bytes) -> None:
    """A decrypted SCTP packet as ``_datapath.handle_packet`` processes it:
    ``_wire.sctp_guard.check_packet``, then aiortc 1.16's chunk classes on each chunk it
    hands on, RE-CONFIG parameters parsed as aiortc's ``_receive_chunk`` does, and a SACK's
    gap blocks checked by ``gaps_problem`` against 64 outstanding TSNs.

    ``check_packet`` never raises, nor does aiortc on any chunk it hands on (aiortc's
    ``struct.error`` ends the association; its ``decode_params`` loops forever on a
    zero-length parameter). Gap blocks that pass ``gaps_problem`` cover at most the TSNs
    outstanding. A packet ``check_packet`` finds no problem in is one that aiortc's own
    ``parse_packet`` parses, to the same chunks.
    """
    if len(data) < 12:
        return
    packet = _with_checksum(data)
    checked = check_packet(packet)
    for chunk in checked.chunks:
        parsed = parse_with_aiortc(chunk)
        if isinstance(parsed, sctp.SackChunk) and gaps_problem(parsed.gaps, _OUTSTANDING) is None:
            covered = sum(end - start + 1 for start, end in parsed.gaps)
            expect(covered <= _OUTSTANDING, f"gap blocks cover {covered} TSNs")
    if checked.problem is None and len(packet) >= 16:
        _, _, _, chunks = sctp.parse_packet(packet)
        expect(
            [(c.type, c.flags) for c in chunks] == [(c.type, c.flags) for c in checked.chunks],
            "aiortc's parse_packet finds other chunks",
        )


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("frames", frames, memory_factor=64, max_len=17_000),
        Target("reassembler", reassembler, memory_factor=64, max_len=2048),
        Target("tracker_client", tracker_client, memory_factor=64, max_len=8192),
        Target("tracker_server", tracker_server, memory_factor=64, max_len=8192),
        Target("nostr_relay", nostr_relay, memory_factor=64, max_len=8192),
        Target("topic_signal", topic_signal, memory_factor=64, max_len=8192),
        Target("mqtt_payload", mqtt_payload, memory_factor=64, max_len=8192),
        Target("ws_relay_server", ws_relay_server, memory_factor=64, max_len=8192),
        Target("sealed_sdp", sealed_sdp, memory_factor=64, max_len=8192),
        Target("byte_stream", byte_stream, memory_factor=64, max_len=4096),
        Target("media_payload", media_payload, memory_factor=64, max_len=12_288),
        Target("sctp_packet", sctp_packet, memory_factor=64, max_len=2048, json=False),
    )
}
