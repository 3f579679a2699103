"""Tests for the sans-I/O WebTorrent tracker messages (wire notes §3.2)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.tracker import (
    MAX_MESSAGE_SIZE,
    ClientAnnounce,
    ClientAnswer,
    ClientOffer,
    ClientScrape,
    RelayedAnswer,
    RelayedOffer,
    TrackerMessage,
    TrackerOffer,
    clamp_interval_ms,
    encode_announce,
    encode_announce_response,
    encode_answer,
    encode_failure,
    encode_passive_announce,
    encode_relayed_answer,
    encode_relayed_offer,
    encode_scrape_response,
    parse_client_message,
    parse_tracker_message,
)
from peermesh.errors import RelayProtocolError, UsageError

IH = "e4j3c5a3g5x3f5isv4t6"  # §12 info_hash for my-app/room-1
ME = "AbCdEfGhIjKlMnOpQrSt"
THEM = "0123456789AaBbCcDdEe"
OID = "ZzYyXxWwVvUuTtSsRrQq"
SEALED = "16,104,116,74,75,116,206,113,166,200,103,152,245,143,56,20$UTluUOScYZnyHL9Rzb6DfmZbCEh5"


# ---------------------------------------------------------------------- client encoders


def test_encode_announce_is_trystero_bytes() -> None:
    text = encode_announce(IH, ME, [TrackerOffer(OID, SEALED), TrackerOffer("o" * 20, "x")])
    assert text == (
        '{"action":"announce","info_hash":"e4j3c5a3g5x3f5isv4t6","peer_id":"AbCdEfGhIjKlMnOpQrSt",'
        '"numwant":3,"offers":[{"offer_id":"ZzYyXxWwVvUuTtSsRrQq","offer":{"type":"offer",'
        '"sdp":"' + SEALED + '"}},{"offer_id":"oooooooooooooooooooo","offer":{"type":"offer",'
        '"sdp":"x"}}]}'
    )


def test_encode_announce_numwant_and_empty_offers() -> None:
    text = encode_announce(IH, ME, [], numwant=0)
    assert text == (
        '{"action":"announce","info_hash":"e4j3c5a3g5x3f5isv4t6",'
        '"peer_id":"AbCdEfGhIjKlMnOpQrSt","numwant":0,"offers":[]}'
    )


def test_encode_passive_announce_is_trystero_bytes() -> None:
    assert encode_passive_announce(IH, ME) == (
        '{"action":"announce","info_hash":"e4j3c5a3g5x3f5isv4t6","peer_id":"AbCdEfGhIjKlMnOpQrSt",'
        '"left":0,"numwant":3,"offers":[]}'
    )


def test_encode_answer_is_trystero_bytes() -> None:
    assert encode_answer(IH, ME, to_peer_id=THEM, offer_id=OID, sdp=SEALED) == (
        '{"action":"announce","info_hash":"e4j3c5a3g5x3f5isv4t6","peer_id":"AbCdEfGhIjKlMnOpQrSt",'
        '"answer":{"type":"answer","sdp":"' + SEALED + '"},"offer_id":"ZzYyXxWwVvUuTtSsRrQq",'
        '"to_peer_id":"0123456789AaBbCcDdEe"}'
    )


def test_encoders_match_json_stringify_escapes() -> None:
    # JSON.stringify leaves non-ASCII raw, escapes controls in lower-case hex and writes a
    # lone surrogate as \udxxx; a surrogate *pair* is one character in JS.
    sdp = 'é\n"\\\x1f\x7f😀\ud800'
    text = encode_answer(IH, ME, to_peer_id=THEM, offer_id="\ud83d\ude00", sdp=sdp)
    assert '"sdp":"é\\n\\"\\\\\\u001f\x7f😀\\ud800"' in text
    assert '"offer_id":"😀"' in text
    text.encode("utf-8")  # always encodable
    assert json.loads(text)["answer"]["sdp"] == sdp


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_announce("short", ME, []),
        lambda: encode_announce(IH, ME + "x", []),
        lambda: encode_announce(IH, ME, [], numwant=-1),
        lambda: encode_announce(IH, ME, [], numwant=True),
        lambda: encode_announce(IH, ME, [("id", "sdp")]),  # type: ignore[list-item]
        lambda: encode_passive_announce(IH, "x" * 19),
        lambda: encode_answer(IH, ME, to_peer_id="nope", offer_id=OID, sdp="s"),
        lambda: encode_answer(IH, ME, to_peer_id=THEM, offer_id=1, sdp="s"),  # type: ignore[arg-type]
    ],
)
def test_encoders_reject_bad_local_arguments(call: object) -> None:
    assert callable(call)
    with pytest.raises(UsageError):
        call()


def test_twenty_chars_counts_utf16_units_like_js() -> None:
    # "😀" is two UTF-16 units in JS, so 18 ASCII + "😀" is 20 long for bittorrent-tracker.
    assert encode_passive_announce(IH, "a" * 18 + "😀")
    with pytest.raises(UsageError):
        encode_passive_announce(IH, "a" * 19 + "😀")


# ---------------------------------------------------------------------- interval clamp


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (None, 10_000),
        (0, 10_000),
        (0.0, 10_000),
        (-5, 10_000),
        (5, 10_000),
        (10, 10_000),
        (12.5, 12_500),
        (60, 60_000),
        (120, 120_000),
        (121, 120_000),
        (10**400, 120_000),
        (float("inf"), 120_000),
        (float("nan"), 10_000),
        (True, 10_000),
        ("30", 10_000),
    ],
)
def test_clamp_interval_ms(interval: object, expected: int) -> None:
    assert clamp_interval_ms(interval) == expected  # type: ignore[arg-type]


# ---------------------------------------------------------------------- tracker -> client


def test_parse_announce_response() -> None:
    msg = parse_tracker_message(
        '{"complete":1,"incomplete":2,"action":"announce","interval":120,"info_hash":"' + IH + '"}'
    )
    assert msg == TrackerMessage(info_hash=IH, interval=120.0, complete=1, incomplete=2)


@pytest.mark.parametrize("bad", ['"3"', "-1", "true", "1.5", "null"])
def test_swarm_counts_that_are_not_counts_are_ignored(bad: str) -> None:
    msg = parse_tracker_message(f'{{"action":"announce","complete":{bad},"incomplete":2}}')
    assert (msg.complete, msg.incomplete) == (None, 2)


def test_parse_relayed_offer_object_and_bare_string() -> None:
    obj = parse_tracker_message(
        json.dumps(
            {
                "action": "announce",
                "offer": {"type": "offer", "sdp": SEALED},
                "offer_id": OID,
                "peer_id": THEM,
                "info_hash": IH,
            }
        )
    )
    bare = parse_tracker_message(
        json.dumps({"offer": SEALED, "offer_id": OID, "peer_id": THEM, "info_hash": IH}).encode()
    )
    assert obj.offer == bare.offer == RelayedOffer(THEM, OID, SEALED)
    assert obj.answer is None
    assert obj.info_hash == IH


def test_parse_relayed_answer_both_forms() -> None:
    for answer in ({"type": "answer", "sdp": SEALED}, SEALED):
        msg = parse_tracker_message(
            json.dumps({"answer": answer, "offer_id": OID, "peer_id": THEM, "info_hash": IH})
        )
        assert msg.answer == RelayedAnswer(THEM, OID, SEALED)
        assert msg.offer is None


def test_parse_failure_warning_and_nulls() -> None:
    msg = parse_tracker_message(
        '{"failure reason":"swarm is full","warning message":"slow down","info_hash":null,'
        '"interval":null,"offer":null,"answer":null}'
    )
    assert msg == TrackerMessage(failure="swarm is full", warning="slow down")


def test_parse_ignores_unknown_keys_and_binary_ids() -> None:
    ih = "".join(chr(c) for c in range(200, 220))  # bittorrent-tracker's latin-1 "binary"
    msg = parse_tracker_message(
        json.dumps({"action": "scrape", "files": {ih: {"complete": 1}}, "info_hash": ih})
    )
    assert msg == TrackerMessage(info_hash=ih)


MALFORMED_TRACKER_MESSAGES: list[str | bytes] = [
    "",
    "not json",
    "{",
    "[]",
    "null",
    '"string"',
    "42",
    b"\xff\xfe{}",
    '{"interval":"10"}',
    '{"interval":true}',
    '{"interval":NaN}',
    '{"interval":Infinity}',
    '{"interval":1e400}',
    '{"info_hash":5}',
    '{"failure reason":{}}',
    '{"warning message":1}',
    '{"offer":{"type":"offer","sdp":"x"},"offer_id":"o"}',  # no peer_id
    '{"offer":{"type":"offer","sdp":"x"},"peer_id":"p"}',  # no offer_id
    '{"offer":{"type":"offer","sdp":"x"},"peer_id":"","offer_id":"o"}',
    '{"offer":{"type":"offer","sdp":"x"},"peer_id":1,"offer_id":"o"}',
    '{"offer":{"type":"offer"},"peer_id":"p","offer_id":"o"}',  # no sdp
    '{"offer":{"type":"offer","sdp":1},"peer_id":"p","offer_id":"o"}',
    '{"offer":7,"peer_id":"p","offer_id":"o"}',
    '{"answer":["x"],"peer_id":"p","offer_id":"o"}',
    '{"answer":{"sdp":"x"},"peer_id":"p","offer_id":5}',
    "[" * 100_000,  # too deep (and too big)
    "[" * 5_000 + "]" * 5_000,  # too deep for the json module, within the size bound
    '{"interval":' + "9" * 5000 + "}",  # beyond Python's int-digits limit
    '{"x":"' + "a" * MAX_MESSAGE_SIZE + '"}',  # oversize
]


@pytest.mark.parametrize("text", MALFORMED_TRACKER_MESSAGES)
def test_parse_tracker_message_rejects(text: str | bytes) -> None:
    with pytest.raises(RelayProtocolError):
        parse_tracker_message(text)


def test_parse_tracker_message_size_bound_is_in_utf8_bytes() -> None:
    body = '{"x":"' + "é" * 40 + '"}'  # 48 chars, 88 bytes
    assert parse_tracker_message(body, max_size=88) == TrackerMessage()
    with pytest.raises(RelayProtocolError):
        parse_tracker_message(body, max_size=87)
    with pytest.raises(RelayProtocolError):
        parse_tracker_message(body.encode(), max_size=87)


# ---------------------------------------------------------------------- client -> tracker


def test_parse_client_trystero_announce_roundtrip() -> None:
    text = encode_announce(IH, ME, [TrackerOffer(OID, SEALED)])
    req = parse_client_message(text, max_offers=10)
    assert isinstance(req, ClientAnnounce)
    assert (req.info_hash, req.peer_id, req.numwant, req.left, req.event) == (IH, ME, 3, None, None)
    assert req.answer is None
    assert req.offers == (ClientOffer(OID, '{"type":"offer","sdp":"' + SEALED + '"}', SEALED),)
    assert req.offers_truncated == 0


def test_parse_client_passive_announce() -> None:
    req = parse_client_message(encode_passive_announce(IH, ME), max_offers=10)
    assert isinstance(req, ClientAnnounce)
    assert req.left == 0
    assert req.offers == ()
    assert req.numwant == 3


def test_parse_client_answer() -> None:
    req = parse_client_message(
        encode_answer(IH, ME, to_peer_id=THEM, offer_id=OID, sdp=SEALED), max_offers=10
    )
    assert isinstance(req, ClientAnnounce)
    assert req.answer == ClientAnswer(THEM, OID, '{"type":"answer","sdp":"' + SEALED + '"}', SEALED)
    assert req.offers == ()


def test_parse_client_bittorrent_tracker_style_announce() -> None:
    # bittorrent-tracker's JS client: latin-1 binary ids, event/uploaded/downloaded, extra
    # keys inside the offer object, which must be kept for forwarding.
    ih = "".join(chr(c) for c in range(0, 256, 13))[:20]
    pid = "-WW0208-" + "".join(chr(c) for c in range(240, 252))
    raw_offer = {"type": "offer", "sdp": "v=0\r\n", "extra": [1, 2.5, None, True]}
    text = json.dumps(
        {
            "event": "started",
            "uploaded": 0,
            "downloaded": 0,
            "numwant": 5,
            "action": "announce",
            "info_hash": ih,
            "peer_id": pid,
            "offers": [{"offer": raw_offer, "offer_id": "\x00" * 20}],
            "trackerid": "t",
        },
        ensure_ascii=False,
    )
    req = parse_client_message(text, max_offers=10)
    assert isinstance(req, ClientAnnounce)
    assert (req.info_hash, req.peer_id, req.event, req.numwant) == (ih, pid, "started", 5)
    (offer,) = req.offers
    assert json.loads(offer.offer_json) == raw_offer
    assert offer.offer_json.isascii()
    assert offer.sdp == "v=0\r\n"
    assert offer.offer_id == "\x00" * 20


def test_parse_client_offer_as_bare_string_and_sdp_less_object() -> None:
    text = json.dumps(
        {
            "action": "announce",
            "info_hash": IH,
            "peer_id": ME,
            "offers": [{"offer_id": "a", "offer": "bare"}, {"offer_id": "b", "offer": {"x": 1}}],
        }
    )
    req = parse_client_message(text, max_offers=10)
    assert isinstance(req, ClientAnnounce)
    assert [(o.offer_id, o.offer_json, o.sdp) for o in req.offers] == [
        ("a", '"bare"', "bare"),
        ("b", '{"x":1}', None),
    ]


def test_parse_client_truncates_offers() -> None:
    offers = [TrackerOffer(f"{i:020d}", f"sdp{i}") for i in range(7)]
    req = parse_client_message(encode_announce(IH, ME, offers), max_offers=3)
    assert isinstance(req, ClientAnnounce)
    assert [o.sdp for o in req.offers] == ["sdp0", "sdp1", "sdp2"]
    assert req.offers_truncated == 4
    req0 = parse_client_message(encode_announce(IH, ME, offers), max_offers=0)
    assert isinstance(req0, ClientAnnounce)
    assert req0.offers == ()
    assert req0.offers_truncated == 7


@pytest.mark.parametrize(
    ("event", "expected"),
    [(None, None), ("", None), ("empty", None), ("update", "update"), ("stopped", "stopped")],
)
def test_parse_client_events(event: str | None, expected: str | None) -> None:
    req = parse_client_message(
        json.dumps({"action": "announce", "info_hash": IH, "peer_id": ME, "event": event}),
        max_offers=1,
    )
    assert isinstance(req, ClientAnnounce)
    assert req.event == expected


@pytest.mark.parametrize(
    ("info_hash", "expected"),
    [(None, ()), (IH, (IH,)), ([IH, ME], (IH, ME)), ([], ())],
)
def test_parse_client_scrape(info_hash: object, expected: tuple[str, ...]) -> None:
    req = parse_client_message(
        json.dumps({"action": "scrape", "info_hash": info_hash}), max_offers=0
    )
    assert req == ClientScrape(expected)


def _announce(**fields: object) -> str:
    base: dict[str, object] = {"action": "announce", "info_hash": IH, "peer_id": ME}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


MALFORMED_CLIENT_MESSAGES: list[str | bytes] = [
    "",
    "garbage",
    b"\xc3\x28",
    "[1,2]",
    "{}",
    '{"action":"connect"}',
    '{"action":7}',
    _announce(info_hash=...),
    _announce(info_hash="short"),
    _announce(info_hash=IH + "x"),
    _announce(info_hash=12345678901234567890),
    _announce(peer_id=...),
    _announce(peer_id="x" * 21),
    _announce(peer_id=["x"] * 20),
    _announce(numwant=-1),
    _announce(numwant=1.5),
    _announce(numwant="3"),
    _announce(numwant=True),
    _announce(left="0"),
    _announce(event="bogus"),
    _announce(event=3),
    _announce(offers={}),
    _announce(offers="x"),
    _announce(offers=[1]),
    _announce(offers=[{"offer": {"sdp": "x"}}]),  # no offer_id
    _announce(offers=[{"offer_id": 5, "offer": {"sdp": "x"}}]),
    _announce(offers=[{"offer_id": "o"}]),  # no offer
    _announce(offers=[{"offer_id": "o", "offer": 5}]),
    _announce(offers=[{"offer_id": "o", "offer": ["sdp"]}]),
    _announce(answer={"sdp": "x"}, offer_id="o"),  # no to_peer_id
    _announce(answer={"sdp": "x"}, offer_id="o", to_peer_id="short"),
    _announce(answer={"sdp": "x"}, to_peer_id=THEM),  # no offer_id
    _announce(answer=5, offer_id="o", to_peer_id=THEM),
    _announce(left=1e400).replace("Infinity", "1e400"),
    '{"action":"scrape","info_hash":5}',
    '{"action":"scrape","info_hash":["short"]}',
    '{"action":"scrape","info_hash":[null]}',
    '{"action":"announce","x":"' + "a" * MAX_MESSAGE_SIZE + '"}',
]


@pytest.mark.parametrize("text", MALFORMED_CLIENT_MESSAGES)
def test_parse_client_message_rejects(text: str | bytes) -> None:
    with pytest.raises(RelayProtocolError):
        parse_client_message(text, max_offers=10)


def test_parse_client_message_custom_size_bound() -> None:
    text = encode_passive_announce(IH, ME)
    assert parse_client_message(text, max_offers=1, max_size=len(text))
    with pytest.raises(RelayProtocolError):
        parse_client_message(text, max_offers=1, max_size=len(text) - 1)


# ---------------------------------------------------------------------- tracker encoders


def test_tracker_side_encoders() -> None:
    assert encode_announce_response(IH, interval=120.0, complete=1, incomplete=2) == (
        '{"action":"announce","interval":120,"info_hash":"e4j3c5a3g5x3f5isv4t6",'
        '"complete":1,"incomplete":2}'
    )
    assert '"interval":2.5,' in encode_announce_response(IH, interval=2.5, complete=0, incomplete=0)
    offer = ClientOffer(OID, '{"type":"offer","sdp":"s"}', "s")
    assert encode_relayed_offer(IH, ME, offer) == (
        '{"action":"announce","offer":{"type":"offer","sdp":"s"},"offer_id":"ZzYyXxWwVvUuTtSsRrQq",'
        '"peer_id":"AbCdEfGhIjKlMnOpQrSt","info_hash":"e4j3c5a3g5x3f5isv4t6"}'
    )
    answer = ClientAnswer(THEM, OID, '"bare"', "bare")
    assert encode_relayed_answer(IH, ME, answer) == (
        '{"action":"announce","answer":"bare","offer_id":"ZzYyXxWwVvUuTtSsRrQq",'
        '"peer_id":"AbCdEfGhIjKlMnOpQrSt","info_hash":"e4j3c5a3g5x3f5isv4t6"}'
    )
    assert encode_scrape_response({IH: (1, 2)}, interval=120) == (
        '{"action":"scrape","files":{"e4j3c5a3g5x3f5isv4t6":{"complete":1,"incomplete":2,'
        '"downloaded":1}},"flags":{"min_request_interval":120}}'
    )
    assert encode_failure("bad") == '{"failure reason":"bad"}'
    assert encode_failure("full", action="announce", info_hash=IH) == (
        '{"action":"announce","failure reason":"full","info_hash":"e4j3c5a3g5x3f5isv4t6"}'
    )


def test_tracker_side_encoders_are_ascii_and_roundtrip_through_client_parser() -> None:
    ih = "\ud800" + "é" * 17 + "😀"  # lone surrogate, latin-1 and a 2-unit char: 20 units
    pid = "".join(chr(c) for c in range(230, 250))
    req = parse_client_message(
        json.dumps(
            {
                "action": "announce",
                "info_hash": ih,
                "peer_id": pid,
                "offers": [{"offer_id": "\u2028", "offer": {"type": "offer", "sdp": "s\ud800"}}],
            }
        ),
        max_offers=5,
    )
    assert isinstance(req, ClientAnnounce)
    text = encode_relayed_offer(req.info_hash, req.peer_id, req.offers[0])
    assert text.isascii()
    msg = parse_tracker_message(text)
    assert msg.offer == RelayedOffer(pid, "\u2028", "s\ud800")
    assert msg.info_hash == ih


# ---------------------------------------------------------------------- fuzzing

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "action",
                    "info_hash",
                    "peer_id",
                    "to_peer_id",
                    "offer",
                    "answer",
                    "offer_id",
                    "offers",
                    "sdp",
                    "type",
                    "interval",
                    "numwant",
                    "left",
                    "event",
                    "failure reason",
                    "warning message",
                ]
            )
            | st.text(max_size=10),
            children,
            max_size=8,
        )
    ),
    max_leaves=30,
)
_ids = st.text(min_size=20, max_size=20)
_messages = st.fixed_dictionaries(
    {"action": st.sampled_from(["announce", "scrape"]), "info_hash": _ids, "peer_id": _ids},
    optional={
        "offers": st.lists(
            st.fixed_dictionaries({}, optional={"offer_id": _json, "offer": _json}), max_size=4
        )
        | _json,
        "answer": _json,
        "offer": _json,
        "offer_id": _json,
        "to_peer_id": _ids | _json,
        "numwant": _json,
        "left": _json,
        "event": st.sampled_from(["started", "stopped", "x"]) | _json,
        "interval": _json,
    },
)


def _never_raises_other(text: str | bytes) -> None:
    for parse in (
        parse_tracker_message,
        lambda t: parse_client_message(t, max_offers=2),
    ):
        with contextlib.suppress(RelayProtocolError):
            parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_random_text(text: str | bytes) -> None:
    _never_raises_other(text)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fuzz_random_json(value: object) -> None:
    text = json.dumps(value)  # may contain NaN/Infinity: must be rejected cleanly
    _never_raises_other(text)
    _never_raises_other(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=400, deadline=None)
@given(_messages)
def test_fuzz_message_shaped_json(value: dict[str, object]) -> None:
    text = json.dumps(value)
    _never_raises_other(text)
    try:
        req = parse_client_message(text, max_offers=2)
    except RelayProtocolError:
        return
    # Whatever the server accepts, it can forward, and a client can read what it forwards.
    if isinstance(req, ClientAnnounce):
        for offer in req.offers:
            relayed = encode_relayed_offer(req.info_hash, req.peer_id, offer)
            assert relayed.isascii()
            if offer.sdp is not None and offer.offer_id:
                msg = parse_tracker_message(relayed)
                assert msg.offer is not None
                assert msg.offer.sdp == offer.sdp
        if req.answer is not None:
            assert encode_relayed_answer(req.info_hash, req.peer_id, req.answer).isascii()
