"""Signalling messages of the topic strategies (wire notes §2.2)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh._wire.signals import (
    Signal,
    SignalKind,
    encode_announce,
    encode_answer,
    encode_candidate,
    encode_offer,
    parse_signal,
)
from peermesh.errors import ProtocolError

PEER = "AbCdEfGhIjKlMnOpQrSt"


def test_encoders_write_trysteros_key_order() -> None:
    assert encode_announce(PEER) == '{"peerId":"AbCdEfGhIjKlMnOpQrSt"}'
    assert encode_announce(PEER, passive=True) == (
        '{"peerId":"AbCdEfGhIjKlMnOpQrSt","passive":true}'
    )
    assert encode_offer(PEER, "o" * 12, "1,2$x") == (
        '{"peerId":"AbCdEfGhIjKlMnOpQrSt","offerId":"oooooooooooo","offer":"1,2$x"}'
    )
    assert encode_answer(PEER, "1,2$y", "o" * 12) == (
        '{"peerId":"AbCdEfGhIjKlMnOpQrSt","answer":"1,2$y","offerId":"oooooooooooo"}'
    )
    assert (
        encode_answer(PEER, "1,2$y", None) == '{"peerId":"AbCdEfGhIjKlMnOpQrSt","answer":"1,2$y"}'
    )
    assert encode_candidate(PEER, "c", "o" * 12, offerer=True) == (
        '{"peerId":"AbCdEfGhIjKlMnOpQrSt","offerId":"oooooooooooo","candidate":"c"}'
    )
    assert encode_candidate(PEER, "c", "o" * 12, offerer=False) == (
        '{"peerId":"AbCdEfGhIjKlMnOpQrSt","candidate":"c","offerId":"oooooooooooo"}'
    )


def test_passive_encoders_put_the_flag_last_as_trystero() -> None:
    # signal-handler.mjs spreads ``passive: true`` after the other keys of every message.
    p = "AbCdEfGhIjKlMnOpQrSt"
    oid = "o" * 12
    assert encode_offer(p, oid, "x", passive=True) == (
        f'{{"peerId":"{p}","offerId":"{oid}","offer":"x","passive":true}}'
    )
    assert encode_answer(p, "y", oid, passive=True) == (
        f'{{"peerId":"{p}","answer":"y","offerId":"{oid}","passive":true}}'
    )
    assert encode_answer(p, "y", None, passive=True) == (
        f'{{"peerId":"{p}","answer":"y","passive":true}}'
    )
    assert encode_candidate(p, "c", oid, offerer=True, passive=True) == (
        f'{{"peerId":"{p}","offerId":"{oid}","candidate":"c","passive":true}}'
    )
    assert encode_candidate(p, "c", oid, offerer=False, passive=True) == (
        f'{{"peerId":"{p}","candidate":"c","offerId":"{oid}","passive":true}}'
    )


@pytest.mark.parametrize("value", ["true", "1", '"true"', "false", "null"])
def test_only_boolean_true_marks_a_passive_sender(value: str) -> None:
    # Trystero: ``payload["passive"] === true``.
    signal = parse_signal(f'{{"peerId":"{PEER}","passive":{value}}}')
    assert signal.kind is SignalKind.ANNOUNCE
    assert signal.passive is (value == "true")


def test_parse_round_trips_every_kind() -> None:
    assert parse_signal(encode_announce(PEER, passive=True)) == Signal(
        SignalKind.ANNOUNCE, PEER, passive=True
    )
    assert parse_signal(encode_offer(PEER, "o" * 12, "s")) == Signal(
        SignalKind.OFFER, PEER, "s", "o" * 12
    )
    assert parse_signal(encode_answer(PEER, "s", None)) == Signal(SignalKind.ANSWER, PEER, "s")
    assert parse_signal({"peerId": PEER, "candidate": "c"}) == Signal(
        SignalKind.CANDIDATE, PEER, "c"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1,2]",
        "{}",
        '{"peerId":""}',
        '{"peerId":5}',
        '{"peerId":"has space"}',
        '{"peerId":"P","offer":""}',
        '{"peerId":"P","offer":7}',
        '{"peerId":"P","offer":"a","answer":"b"}',
        '{"peerId":"P","offerId":""}',
        '{"peerId":"P","offerId":3}',
        '{"peerId":"P","x":"' + "y" * 70_000 + '"}',
        "[" * 100_000,
    ],
)
def test_malformed_signals_raise_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_signal(text)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_raises_nothing_but_protocol_error(data: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_signal(data)


@given(
    st.dictionaries(
        st.sampled_from(["peerId", "offer", "answer", "candidate", "offerId", "passive"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    )
)
def test_parse_of_arbitrary_objects_raises_nothing_but_protocol_error(
    message: dict[str, object],
) -> None:
    with contextlib.suppress(ProtocolError):
        parse_signal(json.dumps(message))
