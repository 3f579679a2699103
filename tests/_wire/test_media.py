"""Media payloads and renegotiation rules (wire notes §5.4, §6.5, §8)."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiortc import sdp
from hypothesis import given
from hypothesis import strategies as st

from peermesh._wire.actions import decode_payload, encode_payload
from peermesh._wire.media import (
    MAX_SDP_SIZE,
    MEDIA_KEY_LENGTH,
    NO_METADATA,
    MediaMeta,
    NegotiationTracker,
    RenegotiationSignal,
    SignalType,
    Step,
    credentials_change,
    decide,
    encode_candidate_signal,
    encode_replace_meta,
    encode_signal,
    encode_stream_meta,
    encode_track_meta,
    has_media_codecs,
    media_sections,
    new_media_key,
    parse_candidate,
    parse_media_meta,
    parse_signal,
)
from peermesh.errors import ProtocolError

KEY = "k" * MEDIA_KEY_LENGTH
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
ids = st.text(min_size=1, max_size=64)


def wire(payload: object) -> object:
    """Through the action layer's JSON encoding and back, as a peer would receive it."""
    kind, data = encode_payload(payload)
    return decode_payload(kind, data)


def compact(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"))


def test_meta_encoders_write_trysteros_key_order() -> None:
    assert compact(encode_stream_meta(KEY, "S")) == f'{{"k":"{KEY}","s":"S"}}'
    assert (
        compact(encode_stream_meta(KEY, "S", {"a": 1})) == f'{{"k":"{KEY}","s":"S","m":{{"a":1}}}}'
    )
    assert compact(encode_track_meta(KEY, "S", "T", None)) == (
        f'{{"k":"{KEY}","s":"S","t":"T","m":null}}'
    )
    assert compact(encode_replace_meta(KEY, "OLD")) == f'{{"k":"{KEY}","t":"OLD"}}'


def test_signal_payloads() -> None:
    assert (
        compact(encode_signal(SignalType.OFFER, "v=0\r\n")) == '{"type":"offer","sdp":"v=0\\r\\n"}'
    )
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    signal = encode_candidate_signal(cand)
    assert signal["type"] == "candidate"
    assert signal["sdp"] == compact(cand)
    parsed = parse_signal(wire(signal))
    assert parsed == RenegotiationSignal(SignalType.CANDIDATE, compact(cand))
    assert parse_candidate(parsed.sdp) == cand


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "offer",
        {"type": "rollback", "sdp": "v=0"},
        {"type": "offer"},
        {"type": "offer", "sdp": 1},
        {"type": "offer", "sdp": "not sdp"},
        {"type": "answer", "sdp": "v=0" + "x" * 70000},
    ],
)
def test_parse_signal_rejects(bad: object) -> None:
    with pytest.raises(ProtocolError):
        parse_signal(bad)


@pytest.mark.parametrize("bad", ["", "[]", '{"candidate":1}', "{", '"x"'])
def test_parse_candidate_rejects(bad: str) -> None:
    with pytest.raises(ProtocolError):
        parse_candidate(bad)


def test_parse_meta_follows_trystero() -> None:
    # s/t kept only when strings; m kept whenever the key exists (even null).
    assert parse_media_meta({"k": "a", "s": 1, "t": None}) == MediaMeta("a")
    meta = parse_media_meta({"k": "a", "m": None})
    assert meta.has_metadata
    assert meta.metadata is None
    assert not parse_media_meta({"k": "a"}).has_metadata
    assert parse_media_meta({"k": "a", "s": "S", "t": "T", "m": [1]}) == MediaMeta(
        "a", "S", "T", [1]
    )


@pytest.mark.parametrize("bad", [None, [], "k", {"s": "S"}, {"k": 1}, {"k": "x" * 300}])
def test_parse_meta_rejects(bad: object) -> None:
    with pytest.raises(ProtocolError):
        parse_media_meta(bad)


@given(ids, ids, ids, json_values | st.just(NO_METADATA))
def test_meta_round_trips(key: str, stream_id: str, track_id: str, metadata: object) -> None:
    assert parse_media_meta(wire(encode_stream_meta(key, stream_id, metadata))) == MediaMeta(
        key, stream_id, None, metadata
    )
    assert parse_media_meta(
        wire(encode_track_meta(key, stream_id, track_id, metadata))
    ) == MediaMeta(key, stream_id, track_id, metadata)
    assert parse_media_meta(wire(encode_replace_meta(key, track_id, metadata))) == MediaMeta(
        key, None, track_id, metadata
    )


@given(st.sampled_from([SignalType.OFFER, SignalType.ANSWER]), st.text(max_size=200))
def test_signal_round_trips(kind: SignalType, body: str) -> None:
    sdp = "v=0\r\n" + body
    assert parse_signal(wire(encode_signal(kind, sdp))) == RenegotiationSignal(kind, sdp)


@given(json_values)
def test_parsers_never_crash_on_junk(value: object) -> None:
    for parse in (parse_signal, parse_media_meta):
        with contextlib.suppress(ProtocolError):
            parse(value)


def test_new_media_key() -> None:
    keys = {new_media_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == MEDIA_KEY_LENGTH and k.isalnum() for k in keys)


SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2 3",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:1",
        "a=sendrecv",
        "a=msid:stream-A track-a",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:2",
        "a=recvonly",
        "a=msid:- track-v",
        "m=video 0 UDP/TLS/RTP/SAVPF 96",
        "a=mid:3",
        "a=inactive",
        "",
    ]
)


def test_media_sections() -> None:
    audio, video, dead = media_sections(SDP)
    assert (audio.mid, audio.kind, audio.direction, audio.index) == ("1", "audio", "sendrecv", 1)
    assert (audio.stream_id, audio.track_id, audio.sends) == ("stream-A", "track-a", True)
    assert (video.stream_id, video.track_id, video.sends) == (None, "track-v", False)
    assert (dead.direction, dead.sends, dead.index) == ("inactive", False, 3)
    assert has_media_codecs(SDP)
    assert not has_media_codecs(SDP.replace("a=rtpmap", "a=x"))


@given(st.text(max_size=300))
def test_media_sections_never_raises(text: str) -> None:
    media_sections(text)


@pytest.mark.parametrize(
    ("kind", "polite", "state", "expected"),
    [
        (SignalType.OFFER, True, "stable", Step.APPLY_OFFER),
        (SignalType.OFFER, False, "stable", Step.APPLY_OFFER),
        # glare: impolite (initiator) ignores, polite rolls back (emulated in aiortc)
        (SignalType.OFFER, False, "have-local-offer", Step.IGNORE),
        (SignalType.OFFER, True, "have-local-offer", Step.ROLLBACK_THEN_APPLY_OFFER),
        (SignalType.OFFER, True, "have-remote-offer", Step.IGNORE),
        (SignalType.OFFER, True, "closed", Step.IGNORE),
        (SignalType.ANSWER, True, "have-local-offer", Step.APPLY_ANSWER),
        (SignalType.ANSWER, False, "have-local-offer", Step.APPLY_ANSWER),
        (SignalType.ANSWER, False, "stable", Step.IGNORE),
        (SignalType.CANDIDATE, False, "stable", Step.ADD_CANDIDATE),
        (SignalType.CANDIDATE, True, "have-local-offer", Step.ADD_CANDIDATE),
    ],
)
def test_decide(kind: SignalType, polite: bool, state: str, expected: Step) -> None:
    assert decide(kind, polite=polite, signaling_state=state) is expected


def test_decide_ignores_sdp_without_media_once_open() -> None:
    for kind in (SignalType.OFFER, SignalType.ANSWER):
        assert (
            decide(kind, polite=True, signaling_state="have-local-offer", has_media=False)
            is Step.IGNORE
        )
    assert (
        decide(
            SignalType.OFFER,
            polite=True,
            signaling_state="stable",
            channel_open=False,
            has_media=False,
        )
        is Step.APPLY_OFFER
    )


def test_negotiation_tracker() -> None:
    tracker = NegotiationTracker()
    assert not tracker.needs_offer("stable")
    tracker.changed()
    assert tracker.needs_offer("stable")
    assert not tracker.needs_offer("have-local-offer")
    tracker.offer_made()
    tracker.changed()  # a change while the offer is in flight
    tracker.answer_applied()
    assert tracker.needs_offer("stable")  # ... needs one more offer
    tracker.offer_made()
    tracker.answer_applied()
    assert not tracker.pending
    # an offer lost to a collision is never answered: the change stays pending
    tracker.changed()
    tracker.offer_made()
    assert tracker.needs_offer("stable")


# -- credentials_change, on the SDP captured in sdp/ (see test_rtp_numbering.py) --------------

SDP_DIR = Path(__file__).parent / "sdp"
#: aiortc's media offer and, from another connection, aiortc's answer (other credentials)
OFFER = (SDP_DIR / "aiortc-1.16-offer.sdp").read_bytes().decode()
OTHER = (SDP_DIR / "aiortc-1.16-answer.sdp").read_bytes().decode()
CHROMIUM = (SDP_DIR / "chromium-156-offer.sdp").read_bytes().decode()


def transplant(text: str, donor: str, *prefixes: str) -> str:
    """``text`` with each distinct line starting with one of ``prefixes`` replaced by the
    one at the same place in ``donor``."""

    def lines(sdp_text: str, prefix: str) -> list[str]:
        return list(dict.fromkeys(x for x in sdp_text.splitlines() if x.startswith(prefix)))

    for prefix in prefixes:
        for mine, theirs in zip(lines(text, prefix), lines(donor, prefix), strict=True):
            assert mine != theirs
            text = text.replace(mine, theirs)
    return text


def as_aiortc_keeps_it(text: str) -> str:
    """``text`` as ``RTCPeerConnection.remoteDescription`` gives it back once applied."""
    description = sdp.SessionDescription.parse(text)
    description.type = "offer"
    return str(description)


def first_sections(text: str, count: int) -> str:
    """``text`` with only its first ``count`` m-sections."""
    head, *sections = text.split("\r\nm=")
    return "\r\nm=".join([head, *sections[:count]]) + "\r\n"


@pytest.mark.parametrize("text", [OFFER, OTHER, CHROMIUM])
def test_the_same_credentials_pass(text: str) -> None:
    assert credentials_change(text, text) is None
    # the connection's remote description is aiortc's rewrite of what the peer sent
    assert credentials_change(as_aiortc_keeps_it(text), text) is None
    # hash names are case-insensitive, fingerprints are hex
    recased = re.sub(
        "^a=fingerprint:(.+) (.+)$",
        lambda m: f"a=fingerprint:{m[1].upper()} {m[2].lower()}",
        text,
        flags=re.M,
    )
    assert recased != text
    assert credentials_change(text, recased) is None


def test_another_connections_fingerprint_is_refused() -> None:
    bogus = transplant(OFFER, OTHER, "a=fingerprint:")
    assert credentials_change(OFFER, bogus) == "m-section '0' changes the DTLS fingerprint"
    assert "DTLS fingerprint" in str(credentials_change(OFFER, CHROMIUM))
    # one of the three hashes dropped, or one added: not the same set either
    one_less = "".join(
        x for x in OFFER.splitlines(True) if not x.startswith("a=fingerprint:sha-512")
    )
    assert "DTLS fingerprint" in str(credentials_change(OFFER, one_less))
    assert "DTLS fingerprint" in str(credentials_change(one_less, OFFER))


@pytest.mark.parametrize(
    "prefixes", [("a=ice-ufrag:", "a=ice-pwd:"), ("a=ice-ufrag:",), ("a=ice-pwd:",)]
)
def test_other_ice_credentials_are_refused(prefixes: tuple[str, ...]) -> None:
    """An ICE restart (or a forgery) in any part: peermesh supports no ICE restart."""
    bogus = transplant(OFFER, OTHER, *prefixes)
    reason = credentials_change(OFFER, bogus)
    assert reason == "m-section '0' changes the ICE credentials (ICE restarts are not supported)"


def test_sections_added_and_removed() -> None:
    data_only = first_sections(OFFER, 1)
    assert credentials_change(data_only, OFFER) is None  # media added on the one transport
    assert credentials_change(OFFER, data_only) is None  # and removed
    # the video section (mid 2) on credentials the connection does not have, new or not
    head, video = OFFER.split("\r\nm=video")
    for prefixes, what in [(("a=ice-ufrag:", "a=ice-pwd:"), "ICE"), (("a=fingerprint:",), "DTLS")]:
        bogus = f"{head}\r\nm=video{transplant(video, OTHER, *prefixes)}"
        for current in (data_only, first_sections(OFFER, 2), OFFER):
            assert f"m-section '2' changes the {what}" in str(credentials_change(current, bogus))


def test_session_level_credentials() -> None:
    """As aiortc reads them: ICE credentials of the section over those of the session, and
    the fingerprints of both together."""
    transport = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")
    lines = CHROMIUM.splitlines(True)
    moved = [x for x in dict.fromkeys(lines) if x.startswith(transport)]
    head = lines.index("t=0 0\r\n") + 1
    session_level = "".join(
        lines[:head] + moved + [x for x in lines[head:] if not x.startswith(transport)]
    )
    assert credentials_change(CHROMIUM, session_level) is None
    assert credentials_change(session_level, CHROMIUM) is None
    other = {x.split(":")[0]: x for x in OTHER.splitlines(True) if x.startswith(transport)}
    for line, what in [(other["a=ice-ufrag"], "ICE"), (other["a=fingerprint"], "DTLS")]:
        bogus = session_level.replace("a=mid:1\r\n", "a=mid:1\r\n" + line)
        reason = credentials_change(CHROMIUM, bogus)
        assert f"m-section '1' changes the {what}" in str(reason)


def test_missing_credentials_are_a_change() -> None:
    bare = "".join(x for x in OFFER.splitlines(True) if not x.startswith("a=ice-pwd:"))
    assert "ICE credentials" in str(credentials_change(OFFER, bare))


def _python_lines_run(call: Callable[[], object]) -> int:
    """Python lines executed by ``call()`` (all frames): a measure of work without a clock."""
    lines = 0

    def trace(frame: object, event: str, arg: object) -> object:
        nonlocal lines
        if event == "line":
            lines += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return lines


def test_credentials_change_takes_linear_time() -> None:
    """Each new section was compared with every known one: two SDPs within MAX_SDP_SIZE,
    with 1638 sections each, took a third of a second of the event loop. Doubling the
    sections must about double the work (it quadrupled it)."""

    def work(count: int) -> int:
        last = f"u{count - 1}"  # the credentials of current's last section
        current = "v=0\n" + "".join(f"m=audio\na=mid:{i}\na=ice-ufrag:u{i}\n" for i in range(count))
        new = "v=0\n" + "".join(f"m=audio\na=mid:n{i}\na=ice-ufrag:{last}\n" for i in range(count))
        assert max(len(current), len(new)) <= MAX_SDP_SIZE
        return _python_lines_run(lambda: credentials_change(current, new))

    assert work(800) < 2.5 * work(400)


@given(st.text(max_size=300), st.text(max_size=300))
def test_credentials_change_never_raises(current: str, new: str) -> None:
    credentials_change(current, new)
    credentials_change(OFFER, new)
