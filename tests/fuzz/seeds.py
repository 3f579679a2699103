"""Write the seed corpora: ``python -m tests.fuzz.seeds`` (re)creates ``tests/fuzz/corpus/``.

Every seed is a valid input made by the project's own encoders, or a vector from the wire
tests (Trystero's bytes), so that the fuzzer starts from inputs that reach deep into each
decoder. The files are committed; run this again after changing an encoder.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from aiortc import rtcsctptransport as sctp

from peermesh._wire import media, sealing, signals, streams, tracker
from peermesh._wire.actions import (
    TAG_BINARY,
    TAG_JSON,
    TAG_LAST,
    TAG_META,
    encode_action_type,
    encode_metadata,
    encode_payload,
    iter_chunks,
)
from peermesh._wire.frames import (
    HandoverSignal,
    encode_handover_frame,
    encode_presence_frame,
    room_frame_prefix,
)
from peermesh._wire.sealing import derive_key, seal
from tests._wire.test_frames import HSREADY_FRAME_HEX, TOKEN
from tests._wire.test_nostr import TRYSTERO_EVENT
from tests._wire.test_sealing import ENC_HELLO
from tests._wire.test_tracker import IH, ME, OID, SEALED, THEM

from .harness import pack_records

CORPUS = Path(__file__).parent / "corpus"
SDP_DIR = Path(__file__).parent.parent / "_wire" / "sdp"

Seeds = Iterator[tuple[str, bytes]]

PEER = "AbCdEfGhIjKlMnOpQrSt"
OFFER_ID = "0123456789ab"
KEY = derive_key(None, "my-app", "room-1")
IV = bytes(range(16))
#: A JSON value with every kind of JSON token, escapes and non-ASCII text included.
RICH_JSON = {
    "s": 'text é ☃ 😀 \\ " \n',
    "n": [0, -1, 2.5, 1e300, 12345678901234567890, True, False, None],
    "o": {"nested": [[], {}, [{"k": "v"}]]},
}


def _sdps() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(SDP_DIR.glob("*.sdp"))}


def _chunk(action: str, nonce: int, tag: int, payload: bytes, progress: int = 255) -> bytes:
    return encode_action_type(action) + struct.pack(">HBB", nonce, tag, progress) + payload


def frames() -> Seeds:
    yield "trystero-hsready", bytes.fromhex(HSREADY_FRAME_HEX)
    prefix = room_frame_prefix(TOKEN)
    for name, value in (("text", "héllo"), ("json", RICH_JSON), ("binary", b"\x00\x01\xff")):
        kind, payload = encode_payload(value)
        for index, frame in enumerate(
            iter_chunks(encode_action_type("chat"), 7, kind, payload, prefix=prefix)
        ):
            yield f"{name}-{index}", frame
        meta = encode_metadata({"r": "req-1", "m": [1]})
        for index, frame in enumerate(
            iter_chunks(encode_action_type("@_request"), 8, kind, payload, meta, prefix=prefix)
        ):
            yield f"{name}-meta-{index}", frame
    # JSON that escapes its non-ASCII characters (json.dumps does; JSON.stringify escapes
    # lone surrogates): the text is ASCII, the decoded strings are not.
    escaped = json.dumps(["a" * 2000 + "é Ā 😀 \ud800"]).encode()
    chunk = _chunk("chat", 10, TAG_JSON | TAG_LAST, escaped)
    yield "json-escapes", prefix + chunk
    offer = media.encode_signal(media.SignalType.OFFER, _sdps()["aiortc-1.16-offer"])
    kind, payload = encode_payload(offer)
    for index, frame in enumerate(
        iter_chunks(encode_action_type("@_signal"), 9, kind, payload, prefix=prefix)
    ):
        yield f"signal-{index}", frame
    yield "presence-joined", encode_presence_frame(TOKEN, True)
    yield "presence-left", encode_presence_frame(TOKEN, False)
    for signal in HandoverSignal:
        yield f"handover-{signal.name.lower()}", encode_handover_frame(signal)


def reassembler() -> Seeds:
    binary, text, json_tag = TAG_BINARY | TAG_JSON, 0, TAG_JSON
    body = bytes(range(256)) * 4
    three = [
        (0, _chunk("file", 1, binary, body[:400], 85)),
        (0, _chunk("file", 1, binary, body[400:800], 170)),
        (0, _chunk("file", 1, binary | TAG_LAST, body[800:], 255)),
    ]
    yield "binary-in-three-chunks", pack_records(three)
    meta = json.dumps({"name": "a.txt", "size": 11}).encode()
    yield (
        "metadata-then-text",
        pack_records(
            [
                (1, _chunk("doc", 2, text | TAG_META, meta, 85)),
                (1, _chunk("doc", 2, text, b"hello ", 170)),
                (1, _chunk("doc", 2, text | TAG_LAST, b"world", 255)),
            ]
        ),
    )
    rich = json.dumps(RICH_JSON, ensure_ascii=False).encode()
    yield (
        "interleaved-peers",
        pack_records(
            [
                (0, _chunk("j", 3, json_tag, rich[:20], 128)),
                (1, _chunk("j", 3, json_tag, rich[:30], 128)),
                (0, _chunk("j", 3, json_tag | TAG_LAST, rich[20:])),
                (1, _chunk("j", 3, json_tag | TAG_LAST, rich[30:])),
            ]
        ),
    )
    yield "dropped-mid-message", pack_records([three[0], (0x80, b""), three[1], three[2]])
    yield "too-large", pack_records([(2, _chunk("big", 4, binary, bytes(1000)))] * 2)


def tracker_client() -> Seeds:
    yield (
        "announce-response",
        tracker.encode_announce_response(IH, interval=120, complete=1, incomplete=2).encode(),
    )
    offer = tracker.ClientOffer(OID, json.dumps({"type": "offer", "sdp": SEALED}), SEALED)
    yield "relayed-offer", tracker.encode_relayed_offer(IH, THEM, offer).encode()
    answer = tracker.ClientAnswer(ME, OID, json.dumps({"type": "answer", "sdp": SEALED}), SEALED)
    yield "relayed-answer", tracker.encode_relayed_answer(IH, THEM, answer).encode()
    yield (
        "bare-string-offer",
        json.dumps(
            {"action": "announce", "offer": SEALED, "offer_id": OID, "peer_id": THEM}
        ).encode(),
    )
    yield "failure", tracker.encode_failure("swarm is full", action="announce").encode()
    yield "warning", json.dumps({"warning message": "slow down", "interval": 1.5}).encode()


def tracker_server() -> Seeds:
    offers = [tracker.TrackerOffer(f"{OID[:-1]}{i}", SEALED) for i in range(3)]
    yield "announce", tracker.encode_announce(IH, ME, offers).encode()
    yield "passive-announce", tracker.encode_passive_announce(IH, ME).encode()
    yield (
        "answer",
        tracker.encode_answer(IH, ME, to_peer_id=THEM, offer_id=OID, sdp=SEALED).encode(),
    )
    yield "scrape", json.dumps({"action": "scrape", "info_hash": [IH, IH]}).encode()
    yield (
        "stopped",
        json.dumps(
            {"action": "announce", "info_hash": IH, "peer_id": ME, "event": "stopped", "left": 0}
        ).encode(),
    )


def nostr_relay() -> Seeds:
    yield "trystero-event", json.dumps(["EVENT", "sub-1", TRYSTERO_EVENT]).encode()
    unicode_event = dict(TRYSTERO_EVENT, content="é 😀 \ud800", tags=[["x", "t"], ["p"]])
    yield "event-bad-signature", json.dumps(["EVENT", "sub-1", unicode_event]).encode()
    yield "ok", json.dumps(["OK", TRYSTERO_EVENT["id"], False, "rate-limited: slow"]).encode()
    yield "closed", json.dumps(["CLOSED", "sub-1", "error: gone"]).encode()
    yield "notice", json.dumps(["NOTICE", "hello"]).encode()
    yield "eose", json.dumps(["EOSE", "sub-1"]).encode()


def topic_signal() -> Seeds:
    sealed = seal(KEY, "v=0\r\n", iv=IV)
    yield "announce", signals.encode_announce(PEER).encode()
    yield "announce-passive", signals.encode_announce(PEER, passive=True).encode()
    yield "offer", signals.encode_offer(PEER, OFFER_ID, sealed).encode()
    yield "answer", signals.encode_answer(PEER, sealed, OFFER_ID).encode()
    yield (
        "candidate-offerer",
        signals.encode_candidate(PEER, sealed, OFFER_ID, offerer=True).encode(),
    )
    yield (
        "candidate-answerer",
        signals.encode_candidate(PEER, sealed, None, offerer=False, passive=True).encode(),
    )


def ws_relay_server() -> Seeds:
    topic = "731p275e6u4l455l3849481dl46536q3g1r6h5y"
    for kind in ("subscribe", "unsubscribe"):
        yield kind, json.dumps({"type": kind, "topic": topic}).encode()
    payload = signals.encode_announce(PEER)
    yield "publish", json.dumps({"type": "publish", "topic": topic, "payload": payload}).encode()
    yield (
        "publish-object",
        json.dumps({"type": "publish", "topic": topic, "payload": json.loads(payload)}).encode(),
    )


def sealed_sdp() -> Seeds:
    yield "trystero-hello", b"\0" + ENC_HELLO.encode()
    for name, sdp in _sdps().items():
        yield f"sealed-{name}", b"\0" + seal(KEY, sdp, iv=IV).encode()
        yield f"plain-{name}", b"\1" + sdp.encode()
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    yield "plain-candidate", b"\1" + json.dumps(candidate).encode()
    challenge = json.dumps({sealing.PASSWORD_FIELD: "challenge", "c": "c" * 36}).encode()
    yield "password-challenge", b"\1" + challenge
    response = sealing.make_password_response("c" * 36, "pw", "a", "r")
    yield "password-response", b"\0" + json.dumps(response).encode()


def _frame_record(frame: streams.Frame) -> tuple[int, bytes]:
    value = streams.encode_frame(frame)
    if isinstance(value, bytes):
        return 0, value
    return 1, json.dumps(value).encode()


def byte_stream() -> Seeds:
    hello = _frame_record(streams.Hello(4096, False))
    data = [_frame_record(streams.DataFrame(i * 300, bytes(300))) for i in range(3)]
    yield (
        "hello-data-eof",
        pack_records(
            [hello, (4, b""), *data, (2, bytes(500)), _frame_record(streams.Eof(900)), (4, b"")]
        ),
    )
    yield (
        "write-credit-reset",
        pack_records(
            [
                hello,
                (3, b"x" * 1500),
                (4, b""),
                _frame_record(streams.Credit(8192)),
                (4, b""),
                _frame_record(streams.Reset("bye")),
                (4, b""),
            ]
        ),
    )


def media_payload() -> Seeds:
    key = "k" * media.MEDIA_KEY_LENGTH
    for name, value in (
        ("stream-meta", media.encode_stream_meta(key, "stream-1", {"label": "cam"})),
        ("track-meta", media.encode_track_meta(key, "stream-1", "track-1")),
        ("replace-meta", media.encode_replace_meta(key, "track-0", None)),
        ("candidate", media.encode_candidate_signal({"candidate": "candidate:1", "sdpMid": "1"})),
    ):
        yield name, b"\0" + json.dumps(value).encode()
    sdps = _sdps()
    for name, sdp in sdps.items():
        kind = media.SignalType.OFFER if "offer" in name else media.SignalType.ANSWER
        yield f"signal-{name}", b"\0" + json.dumps(media.encode_signal(kind, sdp)).encode()
        # the SDP against itself, and an answer against its offer
        yield f"sdp-{name}", b"\1" + f"{sdp}\0{sdp}".encode()
        if "answer" in name:
            offer = sdps[name.replace("answer", "offer")]
            yield f"sdp-offer-then-{name}", b"\1" + f"{offer}\0{sdp}".encode()


def _packet(*chunks: sctp.Chunk, tag: int = 0x1234) -> bytes:
    header = struct.pack("!HHL", 5000, 5000, tag)
    body = b"".join(bytes(chunk) for chunk in chunks)
    return header + struct.pack("<L", sctp.crc32c(header + b"\0\0\0\0" + body)) + body


def sctp_packet() -> Seeds:
    data = sctp.DataChunk(flags=3)
    data.tsn, data.stream_id, data.protocol, data.user_data = 7, 1, 51, b"hello"
    sack = sctp.SackChunk()
    sack.cumulative_tsn, sack.advertised_rwnd = 7, 65536
    sack.gaps, sack.duplicates = [(2, 3), (5, 9)], [4]
    init = sctp.InitChunk()
    init.initiate_tag, init.advertised_rwnd, init.initial_tsn = 99, 131072, 1000
    init.outbound_streams = init.inbound_streams = 65535
    init.params = [(0xC000, b""), (0x8008, bytes([130, 192]))]
    heartbeat = sctp.HeartbeatChunk()
    heartbeat.params = [(1, b"heartbeat-info")]
    reconfig = sctp.ReconfigChunk()
    reconfig.params = [
        (13, bytes(sctp.StreamResetOutgoingParam(1, 2, 3, [1, 3]))),
        (16, bytes(sctp.StreamResetResponseParam(5, 1))),
        (17, bytes(sctp.StreamAddOutgoingParam(6, 2))),
    ]
    forward = sctp.ForwardTsnChunk()
    forward.cumulative_tsn, forward.streams = 12, [(1, 4), (3, 0)]
    shutdown = sctp.ShutdownChunk()
    shutdown.cumulative_tsn = 7
    yield "data", _packet(data)
    yield "sack", _packet(sack)
    yield "data-sack-heartbeat", _packet(data, sack, heartbeat)
    yield "init", _packet(init, tag=0)
    yield "reconfig", _packet(reconfig)
    yield "forward-tsn-shutdown", _packet(forward, shutdown)
    yield (
        "abort-error-cookie",
        _packet(sctp.AbortChunk(), sctp.ErrorChunk(), sctp.CookieEchoChunk(body=bytes(24))),
    )


SEEDS = {
    "frames": frames,
    "reassembler": reassembler,
    "tracker_client": tracker_client,
    "tracker_server": tracker_server,
    "nostr_relay": nostr_relay,
    "topic_signal": topic_signal,
    "mqtt_payload": topic_signal,
    "ws_relay_server": ws_relay_server,
    "sealed_sdp": sealed_sdp,
    "byte_stream": byte_stream,
    "media_payload": media_payload,
    "sctp_packet": sctp_packet,
}


def main() -> None:
    for target, make in SEEDS.items():
        folder = CORPUS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in make():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
