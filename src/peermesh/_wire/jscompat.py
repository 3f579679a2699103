"""JavaScript semantics that leak into Trystero's wire format.

Trystero computes hashes, keys and payloads with ``TextEncoder``, ``Math.round`` and
``String.prototype.charCodeAt``. Python differs from them only in corner cases (lone UTF-16
surrogates, characters outside the BMP, ``x.5`` rounding), but those corners decide whether a
Python peer derives the same topic or key as a browser, so they are reproduced here exactly.

All functions are pure and never raise for any ``str``/``float`` input in their domain.
"""

from __future__ import annotations

import math
import struct

__all__ = ["js_round", "utf8_encode", "utf16_code_unit_sum"]


def utf8_encode(text: str) -> bytes:
    """Encode ``text`` like JavaScript's ``TextEncoder().encode``.

    Identical to ``text.encode("utf-8")`` for every string that has no surrogate code
    points. Python strings may hold surrogates (JS strings may too): a correctly ordered
    high/low pair is combined into one code point and a lone surrogate becomes U+FFFD, as
    ``TextEncoder`` does. Never raises.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        utf16 = text.encode("utf-16-le", "surrogatepass")
        return utf16.decode("utf-16-le", "replace").encode("utf-8")


def utf16_code_unit_sum(text: str) -> int:
    """Sum of the UTF-16 code units of ``text`` (JS ``charCodeAt`` summed over the string).

    Characters outside the BMP count as their two surrogate code units, as in JavaScript.
    """
    if text.isascii():
        return sum(text.encode("ascii"))
    data = text.encode("utf-16-le", "surrogatepass")
    return sum(struct.unpack(f"<{len(data) // 2}H", data))


def js_round(value: float) -> int:
    """``Math.round(value)`` for a finite float: nearest integer, ties towards +infinity.

    Unlike ``math.floor(value + 0.5)`` this is exact for values such as
    ``0.49999999999999994``, where the addition itself rounds up. Raises ``ValueError`` or
    ``OverflowError`` for NaN or infinities (as :func:`math.floor` does).
    """
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor
