"""Tests for the JavaScript-semantics helpers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh._wire.jscompat import js_round, utf8_encode, utf16_code_unit_sum


def test_utf8_encode_plain_text_matches_python() -> None:
    assert utf8_encode("héllo €") == "héllo €".encode()


def test_utf8_encode_lone_surrogates_become_replacement_char() -> None:
    assert utf8_encode("a\ud800b") == b"a\xef\xbf\xbdb"
    assert utf8_encode("\udfff") == b"\xef\xbf\xbd"


def test_utf8_encode_joins_split_surrogate_pair_like_textencoder() -> None:
    # A high+low surrogate pair held as two code points encodes as the real character.
    assert utf8_encode("\ud83d\ude00") == "😀".encode()


def test_utf16_code_unit_sum() -> None:
    assert utf16_code_unit_sum("") == 0
    assert utf16_code_unit_sum("AB") == 65 + 66
    assert utf16_code_unit_sum("é") == 0xE9
    # Non-BMP characters count as their two surrogates, like charCodeAt.
    assert utf16_code_unit_sum("😀") == 0xD83D + 0xDE00


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 0),
        (0.5, 1),
        (1.5, 2),
        (2.5, 3),
        (-2.5, -2),
        (-0.4, 0),
        (127.5, 128),
        (84.99999999999999, 85),
        (0.49999999999999994, 0),  # floor(x + 0.5) would give 1 here
        (255.0, 255),
    ],
)
def test_js_round_matches_math_round(value: float, expected: int) -> None:
    assert js_round(value) == expected


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_js_round_is_nearest_with_ties_up(value: float) -> None:
    result = js_round(value)
    assert abs(result - value) <= 0.5
    if abs(result - value) == 0.5:
        assert result > value
    assert result in (math.floor(value), math.ceil(value))
