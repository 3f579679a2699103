"""Tests for the sans-I/O Nostr events and relay messages (wire notes §3.1, §12)."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.nostr import (
    DEFAULT_NOSTR_RELAYS,
    DEFAULT_REDUNDANCY,
    MAX_MESSAGE_SIZE,
    NostrKey,
    RelayClosed,
    RelayEose,
    RelayEvent,
    RelayNotice,
    RelayOk,
    build_event,
    encode_close,
    encode_event_message,
    encode_req,
    event_id,
    event_topic,
    parse_relay_message,
    shuffled_default_relays,
    verify_event,
)
from peermesh._wire.topics import nostr_kind, root_topic, self_topic
from peermesh.errors import RelayProtocolError, UsageError

ROOT = "731p275e6u4l455l3849481dl46536q3g1r6h5y"  # §12 root topic for my-app/room-1
SELF = "27o2f60266d2h3d1h6x2s1a6q2o6k3cv4u5v4a"  # §12 self topic of AbCdEfGhIjKlMnOpQrSt
KEY = NostrKey.from_secret("01" * 32)

#: An event made by Trystero 0.25.4's own ``createEvent`` (Node, noble secp256k1).
TRYSTERO_EVENT = json.loads(
    '["EVENT",{"kind":22730,"tags":[["x","731p275e6u4l455l3849481dl46536q3g1r6h5y"]],'
    '"created_at":1795326655,"content":"{\\"peerId\\":\\"AbCdEfGhIjKlMnOpQrSt\\"}",'
    '"pubkey":"e5136e22b11e21130b37f667f2bed11c60d3ae8df15a92c3c2e693b5d7d8a2fd",'
    '"id":"6edda849bf5ed9e6b13657b01378ae9a628feba963a71dc16c7f3131f38ad31a",'
    '"sig":"8d8b3ed0ccc2a179c2b83e7ac456dec5a1242768059e142df56866b4d1e013559758eca8ed1cbdfd1d5'
    '31b0ff86bde0d3ee70de41bb10b0ad4a0f64ea5e117bb"}]'
)[1]


# -- kinds and relay choice -----------------------------------------------------------------


def test_kinds_match_the_vectors() -> None:
    assert root_topic("my-app", "room-1") == ROOT
    assert self_topic("my-app", "room-1", "AbCdEfGhIjKlMnOpQrSt") == SELF
    assert nostr_kind(ROOT) == 22730
    assert nostr_kind(SELF) == 22917


def test_default_relays() -> None:
    assert len(DEFAULT_NOSTR_RELAYS) == 28
    assert len(set(DEFAULT_NOSTR_RELAYS)) == 28
    assert all(url.startswith("wss://") for url in DEFAULT_NOSTR_RELAYS)
    assert "wss://yabu.me/v2" in DEFAULT_NOSTR_RELAYS
    assert DEFAULT_REDUNDANCY == 5


@pytest.mark.parametrize(
    ("app_id", "first_five"),
    [
        # §12 vector (seed 596)
        (
            "my-app",
            [
                "strfry.shock.network",
                "social.amanah.eblessing.co",
                "schnorr.me",
                "relay.artio.inf.unibe.ch",
                "purplerelay.com",
            ],
        ),
        # The rest were produced by Trystero 0.25.4's getRelays under Node 20.
        (
            "",
            [
                "relay-rpi.edufeed.org",
                "staging.yabu.me",
                "nostr.islandarea.net",
                "schnorr.me",
                "nostr.data.haus",
            ],
        ),
        (
            "peermesh-test",
            [
                "koru.bitcointxoko.org",
                "nostr.data.haus",
                "top.testrelay.top",
                "chorus.pjv.me",
                "schnorr.me",
            ],
        ),
        (
            "日本語",
            [
                "schnorr.me",
                "relay.agorist.space",
                "relay02.lnfi.network",
                "social.amanah.eblessing.co",
                "nostr.tegila.com.br",
            ],
        ),
        (
            "🎉app",
            [
                "relay-can.zombi.cloudrodion.com",
                "nostr-01.yakihonne.com",
                "basspistol.org",
                "nostr-01.uid.ovh",
                "purplerelay.com",
            ],
        ),
    ],
)
def test_shuffle_matches_trystero(app_id: str, first_five: list[str]) -> None:
    shuffled = shuffled_default_relays(app_id)
    assert shuffled[:DEFAULT_REDUNDANCY] == ["wss://" + host for host in first_five]
    assert sorted(shuffled) == sorted(DEFAULT_NOSTR_RELAYS)


# -- keys and events ------------------------------------------------------------------------


def test_key_from_secret() -> None:
    # BIP-340: secret key 1 has the generator's x coordinate as its public key.
    one = NostrKey.from_secret("00" * 31 + "01")
    assert one.pubkey == "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    assert NostrKey.from_secret(one.secret).pubkey == one.pubkey
    assert NostrKey.generate().pubkey != NostrKey.generate().pubkey
    for bad in ("00" * 32, "zz", b"short", "ff" * 32):
        with pytest.raises(UsageError):
            NostrKey.from_secret(bad)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # ids computed in Node with sha256(JSON.stringify([0,pk,1700000000,22730,[["x","t"]],c]))
        ("", "f86c78f9c619ef8273af0741cf8e4fe3dc69a9fa4360a8166dd9f04bda904a11"),
        (
            'hé\u2028\u007f\u0000\u001f"\\/\n\t\b\f\r🎉',
            "c9a2fac226f5802bb83b5ef48b01f385c5d31f63af4ed63c6ba5982a78e10af1",
        ),
        (
            "lone \ud800 x \udfff",
            "98e307177872bb8496e1400cb3c2621effa92a1eff45981900e76cd5766319c3",
        ),
    ],
)
def test_event_id_matches_javascript(content: str, expected: str) -> None:
    pk = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    assert event_id(pk, 1700000000, 22730, [["x", "t"]], content) == expected


def test_build_event_round_trip() -> None:
    content = json.dumps({"peerId": "AbCdEfGhIjKlMnOpQrSt"}, separators=(",", ":"))
    event = build_event(KEY, topic=ROOT, content=content, created_at=1795326655)
    assert list(event) == ["kind", "tags", "created_at", "content", "pubkey", "id", "sig"]
    assert event["kind"] == 22730
    assert event["tags"] == [["x", ROOT]]
    assert event["pubkey"] == KEY.pubkey
    assert len(event["sig"]) == 128
    assert event["id"] == event_id(KEY.pubkey, 1795326655, 22730, [["x", ROOT]], content)
    assert verify_event(event)
    assert event_topic(event) == ROOT
    # Signatures use random aux data, as noble's signAsync does.
    again = build_event(KEY, topic=ROOT, content=content, created_at=1795326655)
    assert again["id"] == event["id"]
    assert again["sig"] != event["sig"]
    assert verify_event(again)
    message = encode_event_message(event)
    assert message.startswith('["EVENT",{"kind":22730,"tags":[["x","')
    assert json.loads(message) == ["EVENT", event]
    explicit = build_event(KEY, kind=20001, topic="t", content="c", created_at=1)
    assert explicit["kind"] == 20001
    assert verify_event(explicit)


def test_trystero_event_verifies() -> None:
    assert verify_event(TRYSTERO_EVENT)
    assert event_topic(TRYSTERO_EVENT) == ROOT


def test_lone_surrogates_round_trip() -> None:
    event = build_event(KEY, topic=ROOT, content="a\ud800b", created_at=5)
    assert verify_event(event)
    wire = encode_event_message(event)
    assert "\\ud800" in wire
    wire.encode("utf-8")  # encodable
    parsed = parse_relay_message(json.dumps(["EVENT", "s", json.loads(wire)[1]]))
    assert isinstance(parsed, RelayEvent)
    assert verify_event(parsed.event)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("content", '{"peerId":"EvilEvilEvilEvilEvil"}'),
        ("id", "0" * 64),
        ("sig", "0" * 128),
        (
            "sig",
            TRYSTERO_EVENT["sig"][:-2] + ("00" if TRYSTERO_EVENT["sig"][-2:] != "00" else "01"),
        ),
        ("pubkey", KEY.pubkey),
        ("kind", 22731),
        ("created_at", 1795326656),
        ("tags", [["x", SELF]]),
        ("id", TRYSTERO_EVENT["id"].upper()),
        ("kind", "22730"),
        ("created_at", 1.5),
        ("content", None),
        ("tags", [["x", 1]]),
        ("sig", "zz"),
    ],
)
def test_verify_rejects_tampering(field: str, value: object) -> None:
    event = copy.deepcopy(TRYSTERO_EVENT)
    event[field] = value
    assert not verify_event(event)


def test_verify_rejects_tampered_content_with_matching_id() -> None:
    event = copy.deepcopy(TRYSTERO_EVENT)
    event["content"] = "forged"
    event["id"] = event_id(
        event["pubkey"], event["created_at"], event["kind"], event["tags"], "forged"
    )
    assert not verify_event(event)


@pytest.mark.parametrize(
    "junk", [None, 1, "x", [], {}, {"id": 1}, {k: None for k in TRYSTERO_EVENT}]
)
def test_verify_never_raises(junk: object) -> None:
    assert verify_event(junk) is False


# -- client messages ------------------------------------------------------------------------


def test_encode_req_matches_the_example() -> None:
    sub = "S" * 64
    assert encode_req(sub, [ROOT], 1700000000) == (
        f'["REQ","{sub}",{{"kinds":[22730],"since":1700000000,"#x":["{ROOT}"]}}]'
    )
    req = json.loads(encode_req(sub, [SELF, ROOT, SELF + "x"], 7))
    assert req[2]["kinds"] == [22917, 22730, nostr_kind(SELF + "x")]
    assert req[2]["#x"] == [SELF, ROOT, SELF + "x"]
    # Unique kinds only.
    assert json.loads(encode_req(sub, [ROOT, ROOT[::-1]], 7))[2]["kinds"] == [22730]


def test_encode_close() -> None:
    assert encode_close("abc") == '["CLOSE","abc"]'


# -- relay messages -------------------------------------------------------------------------


def test_parse_each_message_type() -> None:
    ev = parse_relay_message(json.dumps(["EVENT", "sub", TRYSTERO_EVENT]))
    assert ev == RelayEvent("sub", TRYSTERO_EVENT)
    ok = parse_relay_message('["OK","abc",true,""]')
    assert ok == RelayOk("abc", True, "")
    assert not ok.rate_limited
    limited = parse_relay_message('["OK","abc",false,"rate-limited: slow down"]')
    assert isinstance(limited, RelayOk)
    assert limited.rate_limited
    assert not limited.duplicate
    dup = parse_relay_message('["OK","abc",false,"duplicate: seen"]')
    assert isinstance(dup, RelayOk)
    assert dup.duplicate
    assert parse_relay_message('["OK","abc",true]') == RelayOk("abc", True, "")
    assert parse_relay_message('["CLOSED","sub","error: no"]') == RelayClosed("sub", "error: no")
    assert parse_relay_message('["NOTICE","hi"]') == RelayNotice("hi")
    assert parse_relay_message('["EOSE","sub"]') == RelayEose("sub")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{}",
        "[]",
        "[1]",
        '"EVENT"',
        '["AUTH","challenge"]',
        '["COUNT","s",{"count":1}]',
        '["EVENT","sub"]',
        '["EVENT","sub",{}]',
        '["EVENT",1,{}]',
        '["OK","abc","true",""]',
        '["OK","abc"]',
        '["OK",1,true,""]',
        '["OK","abc",false,5]',
        '["CLOSED"]',
        '["CLOSED",1,"x"]',
        '["NOTICE"]',
        '["NOTICE",1]',
        '["EOSE"]',
        '["EOSE","a","b"]',
        '["OK","abc",true,NaN]',
        "[" * 100000 + "]" * 100000,
        '["NOTICE","' + "x" * MAX_MESSAGE_SIZE + '"]',
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(RelayProtocolError):
        parse_relay_message(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "G" * 64),
        ("pubkey", "ab"),
        ("sig", 5),
        ("kind", -1),
        ("kind", True),
        ("created_at", 2**60),
        ("content", 1),
        ("tags", "x"),
        ("tags", [["x", None]]),
    ],
)
def test_parse_rejects_malformed_events(field: str, value: object) -> None:
    event = copy.deepcopy(TRYSTERO_EVENT)
    event[field] = value
    with pytest.raises(RelayProtocolError):
        parse_relay_message(json.dumps(["EVENT", "sub", event]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        _json.map(json.dumps),
        st.tuples(
            st.sampled_from(["EVENT", "OK", "CLOSED", "NOTICE", "EOSE", "REQ"]),
            st.lists(_json, max_size=4),
        ).map(lambda t: json.dumps([t[0], *t[1]])),
    )
)
def test_parse_only_raises_relay_protocol_error(text: str) -> None:
    try:
        message = parse_relay_message(text)
    except RelayProtocolError:
        return
    assert isinstance(message, RelayEvent | RelayOk | RelayClosed | RelayNotice | RelayEose)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50), st.text(max_size=200), st.integers(0, 2**40))
def test_any_event_round_trips(topic: str, content: str, created_at: int) -> None:
    event = build_event(KEY, topic=topic, content=content, created_at=created_at)
    assert verify_event(event)
    wire = encode_event_message(event)
    parsed = parse_relay_message(json.dumps(["EVENT", "s", json.loads(wire)[1]]))
    assert isinstance(parsed, RelayEvent)
    assert verify_event(parsed.event)


def test_surrogate_pairs_hash_as_one_code_point() -> None:
    pk = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    tags = [["x", "t"]]
    assert event_id(pk, 1, 20000, tags, "\ud83c\udf89") == event_id(pk, 1, 20000, tags, "🎉")
