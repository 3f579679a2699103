"""Tests for ids, topics and per-room identifiers, against the §12 vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh._wire.topics import (
    ID_ALPHABET,
    gen_id,
    info_hash,
    is_peer_id,
    nostr_kind,
    room_token,
    root_topic,
    root_topic_plaintext,
    self_topic,
    self_topic_plaintext,
    sha1_b36,
)
from peermesh.errors import UsageError

APP = "my-app"
ROOM = "room-1"
PEER = "AbCdEfGhIjKlMnOpQrSt"
ROOT_PLAINTEXT = "Trystero@my-app@room-1"
ROOT_SHA1_HEX = "ff3d4fc2f6a595c9749998311596b7f27c3fe9d6"
ROOT_TOPIC = "731p275e6u4l455l3849481dl46536q3g1r6h5y"
SELF_TOPIC = "27o2f60266d2h3d1h6x2s1a6q2o6k3cv4u5v4a"
INFO_HASH = "e4j3c5a3g5x3f5isv4t6"
ROOT_KIND = 22730
SELF_KIND = 22917
ROOM_TOKEN = "2e4f09c7740641f4d3233ddd1ee0cd54aba1e7fdc69e8b3e2ddfcded88bacd3d"


def test_id_alphabet_is_trystero_charset() -> None:
    assert ID_ALPHABET == "0123456789AaBbCcDdEeFfGgHhIiJjKkLlMmNnOoPpQqRrSsTtUuVvWwXxYyZz"
    assert len(ID_ALPHABET) == 62
    assert len(set(ID_ALPHABET)) == 62


@pytest.mark.parametrize("length", [0, 1, 12, 20, 36, 64])
def test_gen_id_length_and_alphabet(length: int) -> None:
    value = gen_id(length)
    assert len(value) == length
    assert set(value) <= set(ID_ALPHABET)


def test_gen_id_is_random() -> None:
    assert len({gen_id(20) for _ in range(50)}) == 50


def test_gen_id_negative_length_is_usage_error() -> None:
    with pytest.raises(UsageError):
        gen_id(-1)


@pytest.mark.parametrize(
    "value",
    [PEER, gen_id(20), "a", "x" * 128, "peer-1_with.punct~!", "0123456789"],
)
def test_is_peer_id_accepts(value: str) -> None:
    assert is_peer_id(value) is True


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "has space", "tab\there", "new\nline", "nul\0", "é", "\x7f", None, 42, b"abc"],
)
def test_is_peer_id_rejects(value: object) -> None:
    assert is_peer_id(value) is False


def test_sha1_b36_matches_vector_and_definition() -> None:
    digest = hashlib.sha1(ROOT_PLAINTEXT.encode()).digest()
    assert digest.hex() == ROOT_SHA1_HEX

    def b36(n: int) -> str:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        return digits[n] if n < 36 else digits[n // 36] + digits[n % 36]

    assert sha1_b36(ROOT_PLAINTEXT) == "".join(b36(b) for b in digest) == ROOT_TOPIC
    assert len(ROOT_TOPIC) == 39


def test_sha1_b36_encodes_like_textencoder() -> None:
    assert sha1_b36("\ud800") == sha1_b36("\ufffd")


@given(st.text(max_size=50))
def test_sha1_b36_shape(text: str) -> None:
    value = sha1_b36(text)
    assert 20 <= len(value) <= 40
    assert set(value) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_plaintexts() -> None:
    assert root_topic_plaintext(APP, ROOM) == ROOT_PLAINTEXT
    assert self_topic_plaintext(APP, ROOM, PEER) == f"{ROOT_PLAINTEXT}@{PEER}"


def test_root_topic_vector() -> None:
    assert root_topic(APP, ROOM) == ROOT_TOPIC


def test_self_topic_vector() -> None:
    assert self_topic(APP, ROOM, PEER) == SELF_TOPIC
    assert len(SELF_TOPIC) == 38


def test_info_hash_vector() -> None:
    assert info_hash(APP, ROOM) == INFO_HASH
    assert info_hash(APP, ROOM) == sha1_b36(ROOT_TOPIC)[:20]


def test_nostr_kind_vectors() -> None:
    assert nostr_kind(ROOT_TOPIC) == ROOT_KIND
    assert nostr_kind(SELF_TOPIC) == SELF_KIND


def test_nostr_kind_counts_utf16_code_units() -> None:
    assert nostr_kind("😀") == 20000 + (0xD83D + 0xDE00) % 10000


@given(st.text(max_size=100))
def test_nostr_kind_is_ephemeral(topic: str) -> None:
    assert 20000 <= nostr_kind(topic) <= 29999


def test_room_token_vector() -> None:
    token = room_token(APP, ROOM)
    assert token == ROOM_TOKEN
    assert token == hashlib.sha256(b"Trystero:my-app:room-1").hexdigest()


def test_room_token_differs_per_room() -> None:
    assert room_token(APP, "room-2") != ROOM_TOKEN
    assert room_token("other", ROOM) != ROOM_TOKEN
