"""Tests for AES-GCM sealing and the password handshake, against the §12 vectors."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh._wire.sealing import (
    MAX_SEALED_TEXT,
    PASSWORD_FIELD,
    PasswordChallenge,
    PasswordResponse,
    check_password_proof,
    derive_key,
    make_password_challenge,
    make_password_response,
    parse_password_message,
    password_proof,
    seal,
    unseal,
)
from peermesh._wire.topics import ID_ALPHABET
from peermesh.errors import ProtocolError, SealError, UsageError

APP = "my-app"
ROOM = "room-1"
KEY_NO_PASSWORD_HEX = "3af419751c3db481b28728bf050a405b9d0d7c7ea14fdbc6689d916c92a537b5"
ENC_HELLO = (
    "16,104,116,74,75,116,206,113,166,200,103,152,245,143,56,20$UTluUOScYZnyHL9Rzb6DfmZbCEh5"
)
ENC_HELLO_SECRET = (
    "78,45,205,129,53,48,16,80,39,67,100,232,109,73,10,237$mru9f8O6SoqWYlhg/9EK5YqAuP92"
)
PROOF_CHALLENGE_SECRET = "796e154a0bd9c842ca977c2b1f95880e8fe6ea050dbc5c8fe16b513bab59c3e0"

KEY = derive_key(None, APP, ROOM)
KEY_SECRET = derive_key("secret", APP, ROOM)
IV = bytes(range(16))


def _iv_of(text: str) -> bytes:
    return bytes(int(x) for x in text.split("$")[0].split(","))


# --------------------------------------------------------------------------- keys


def test_derive_key_no_password_vector() -> None:
    assert KEY.hex() == KEY_NO_PASSWORD_HEX
    assert len(KEY) == 32


def test_derive_key_none_and_empty_are_equal() -> None:
    assert derive_key("", APP, ROOM) == derive_key(None, APP, ROOM)


def test_derive_key_with_password() -> None:
    assert hashlib.sha256(b"secret:my-app:room-1").digest() == KEY_SECRET
    assert KEY_SECRET != KEY


# --------------------------------------------------------------------------- unseal vectors


def test_unseal_vector_no_password() -> None:
    assert unseal(KEY, ENC_HELLO) == "hello"


def test_unseal_vector_with_password() -> None:
    assert unseal(KEY_SECRET, ENC_HELLO_SECRET) == "hello"


def test_unseal_with_wrong_password_is_seal_error() -> None:
    with pytest.raises(SealError):
        unseal(KEY, ENC_HELLO_SECRET)
    with pytest.raises(SealError):
        unseal(KEY_SECRET, ENC_HELLO)


def test_seal_reproduces_vectors_with_their_iv() -> None:
    assert seal(KEY, "hello", iv=_iv_of(ENC_HELLO)) == ENC_HELLO
    assert seal(KEY_SECRET, "hello", iv=_iv_of(ENC_HELLO_SECRET)) == ENC_HELLO_SECRET


def test_seal_uses_fresh_random_iv() -> None:
    first, second = seal(KEY, "x"), seal(KEY, "x")
    assert first != second
    assert len(first.split("$")[0].split(",")) == 16
    assert unseal(KEY, first) == unseal(KEY, second) == "x"


def test_seal_argument_checks() -> None:
    with pytest.raises(UsageError):
        seal(b"short", "x")
    with pytest.raises(UsageError):
        seal(KEY, "x", iv=bytes(12))
    with pytest.raises(UsageError):
        unseal(b"short", ENC_HELLO)


def test_unseal_tolerates_missing_base64_padding() -> None:
    text = seal(KEY, "hello!", iv=IV)  # 6 + 16 = 22 bytes -> two '=' of padding
    assert text.endswith("==")
    assert unseal(KEY, text.rstrip("=")) == "hello!"


@settings(max_examples=60)
@given(st.text(max_size=2000))
def test_seal_unseal_round_trip(plaintext: str) -> None:
    assert unseal(KEY_SECRET, seal(KEY_SECRET, plaintext)) == plaintext


def _raw_sealed(plaintext: bytes, key: bytes = KEY, iv: bytes = IV) -> str:
    body = base64.b64encode(AESGCM(key).encrypt(iv, plaintext, None)).decode()
    return ",".join(map(str, iv)) + "$" + body


@pytest.mark.parametrize(
    "text",
    [
        "",
        "$",
        "no separator at all",
        ENC_HELLO.replace("$", ""),
        ENC_HELLO + "$extra",
        ENC_HELLO.split("$")[0] + "$",  # empty body
        "$" + ENC_HELLO.split("$")[1],  # empty IV
        "1,2,3$" + ENC_HELLO.split("$")[1],  # 3-byte IV
        ",".join(["1"] * 15) + "$" + ENC_HELLO.split("$")[1],  # 15-byte IV
        ",".join(["1"] * 17) + "$" + ENC_HELLO.split("$")[1],  # 17-byte IV
        ENC_HELLO.replace("16,", "256,", 1),  # byte out of range
        ENC_HELLO.replace("16,", "-1,", 1),
        ENC_HELLO.replace("16,", " 16,", 1),
        ENC_HELLO.replace("16,", "0x10,", 1),
        ENC_HELLO.replace("16,", "1000,", 1),
        ENC_HELLO.replace("16,", "١٦,", 1),  # non-ASCII digits
        ENC_HELLO.replace(",104,", ",,", 1),
        ENC_HELLO[:-1] + "!",  # invalid base64 char
        ENC_HELLO + "====",  # bad padding
        ENC_HELLO.replace("U", "é", 1),  # non-ASCII body
        ENC_HELLO.split("$")[0] + "$" + base64.b64encode(bytes(10)).decode(),  # < tag
        ENC_HELLO[:-2] + ("A" if ENC_HELLO[-2] != "A" else "B") + ENC_HELLO[-1],  # tampered
        ENC_HELLO.replace("16,", "17,", 1),  # other IV
    ],
)
def test_unseal_rejects_malformed(text: str) -> None:
    with pytest.raises(SealError):
        unseal(KEY, text)


def test_unseal_rejects_non_utf8_plaintext() -> None:
    text = _raw_sealed(b"\xff\xfe bad")
    with pytest.raises(SealError, match="UTF-8"):
        unseal(KEY, text)


def test_unseal_rejects_too_long_text() -> None:
    with pytest.raises(SealError, match="too long"):
        unseal(KEY, "1" * (MAX_SEALED_TEXT + 1))


def test_unseal_rejects_non_string() -> None:
    with pytest.raises(SealError):
        unseal(KEY, b"1,2$abc")  # type: ignore[arg-type]


def test_seal_error_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        unseal(KEY, "garbage")


@settings(max_examples=200)
@given(st.text(alphabet="0123456789,$+/=ABCabc -", max_size=200) | st.text(max_size=200))
def test_unseal_only_raises_seal_error(text: str) -> None:
    with contextlib.suppress(SealError):
        unseal(KEY, text)


# --------------------------------------------------------------------------- handshake


def test_password_proof_vector() -> None:
    assert password_proof("CHALLENGE", "secret", APP, ROOM) == PROOF_CHALLENGE_SECRET


def test_make_password_challenge_shape_and_wire_form() -> None:
    message = make_password_challenge()
    assert list(message) == [PASSWORD_FIELD, "c"]
    assert message[PASSWORD_FIELD] == "challenge"
    assert len(message["c"]) == 36
    assert set(message["c"]) <= set(ID_ALPHABET)
    wire = json.dumps(message, separators=(",", ":"))
    assert wire == '{"__trystero_pw":"challenge","c":"' + message["c"] + '"}'
    assert make_password_challenge()["c"] != message["c"]


def test_make_password_response_wire_form() -> None:
    message = make_password_response("CHALLENGE", "secret", APP, ROOM)
    assert message == {"__trystero_pw": "response", "h": PROOF_CHALLENGE_SECRET}
    assert list(message) == [PASSWORD_FIELD, "h"]


def test_parse_password_message_recognises_both_phases() -> None:
    assert parse_password_message({"__trystero_pw": "challenge", "c": "abc"}) == (
        PasswordChallenge("abc")
    )
    assert parse_password_message(make_password_response("C", "pw", APP, ROOM)) == (
        PasswordResponse(password_proof("C", "pw", APP, ROOM))
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "challenge",
        42,
        [],
        ["__trystero_pw", "challenge"],
        {},
        {"c": "abc"},
        {"__trystero_pw": "challenge"},
        {"__trystero_pw": "challenge", "c": 5},
        {"__trystero_pw": "challenge", "h": "abc"},
        {"__trystero_pw": "response"},
        {"__trystero_pw": "response", "h": None},
        {"__trystero_pw": "other", "c": "x", "h": "y"},
        {"__trystero_pw": ["challenge"], "c": "x"},
        {"__trystero_pw": {"a": 1}, "c": "x"},
    ],
)
def test_parse_password_message_returns_none_for_others(value: object) -> None:
    assert parse_password_message(value) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([PASSWORD_FIELD, "c", "h", "x"]) | st.text(max_size=5),
            children | st.sampled_from(["challenge", "response"]),
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=200)
@given(_json)
def test_parse_password_message_never_raises(value: object) -> None:
    result = parse_password_message(value)
    assert result is None or isinstance(result, PasswordChallenge | PasswordResponse)


def test_check_password_proof() -> None:
    assert check_password_proof("CHALLENGE", PROOF_CHALLENGE_SECRET, "secret", APP, ROOM)
    assert not check_password_proof("CHALLENGE", PROOF_CHALLENGE_SECRET, "wrong", APP, ROOM)
    assert not check_password_proof("OTHER", PROOF_CHALLENGE_SECRET, "secret", APP, ROOM)
    assert not check_password_proof(
        "CHALLENGE", PROOF_CHALLENGE_SECRET.upper(), "secret", APP, ROOM
    )
    assert not check_password_proof("CHALLENGE", "", "secret", APP, ROOM)
    # Non-ASCII input from a peer must not make compare_digest raise.
    assert not check_password_proof("CHALLENGE", "é" * 64, "secret", APP, ROOM)


def test_full_password_handshake_round_trip() -> None:
    challenge = parse_password_message(json.loads(json.dumps(make_password_challenge())))
    assert isinstance(challenge, PasswordChallenge)
    reply = json.loads(json.dumps(make_password_response(challenge.challenge, "pw", APP, ROOM)))
    response = parse_password_message(reply)
    assert isinstance(response, PasswordResponse)
    assert check_password_proof(challenge.challenge, response.proof, "pw", APP, ROOM)
