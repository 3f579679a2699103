"""Peer ids, topic hashing and the per-room identifiers of Trystero (wire notes §1).

Every function is pure and deterministic except :func:`gen_id`, which draws from
:mod:`secrets`. Strings are hashed as UTF-8 with JavaScript ``TextEncoder`` semantics (see
:func:`peermesh._wire.jscompat.utf8_encode`), so results match Trystero for any input.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from peermesh._wire.jscompat import utf8_encode, utf16_code_unit_sum
from peermesh.errors import UsageError

__all__ = [
    "ID_ALPHABET",
    "LIB_NAME",
    "MAX_PEER_ID_LENGTH",
    "PEER_ID_LENGTH",
    "gen_id",
    "info_hash",
    "is_peer_id",
    "nostr_kind",
    "room_token",
    "root_topic",
    "root_topic_plaintext",
    "self_topic",
    "self_topic_plaintext",
    "sha1_b36",
]

ID_ALPHABET = "0123456789AaBbCcDdEeFfGgHhIiJjKkLlMmNnOoPpQqRrSsTtUuVvWwXxYyZz"
"""Trystero's 62-character id alphabet: digits, then letters interleaved upper/lower."""

LIB_NAME = "Trystero"
"""The library name every topic, token and key is derived from (capital T)."""

PEER_ID_LENGTH = 20
"""Length of a Trystero ``selfId``."""

MAX_PEER_ID_LENGTH = 128
"""Longest peer id :func:`is_peer_id` accepts."""

_PEER_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_PEER_ID_LENGTH}}}")
_B36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
# Base-36 spelling of every byte value, lowercase, no padding (JS ``b.toString(36)``).
_B36_BYTE: tuple[str, ...] = tuple(
    _B36_DIGITS[b] if b < 36 else _B36_DIGITS[b // 36] + _B36_DIGITS[b % 36] for b in range(256)
)
_INFO_HASH_LENGTH = 20
_NOSTR_KIND_BASE = 20000
_NOSTR_KIND_SPAN = 10000


def gen_id(length: int) -> str:
    """Return ``length`` characters drawn from :data:`ID_ALPHABET` with :mod:`secrets`.

    Trystero uses ``Math.random()``; this is a cryptographically strong superset of that
    behaviour. Raises :class:`UsageError` if ``length`` is negative.
    """
    if length < 0:
        raise UsageError(f"id length must be >= 0, not {length}")
    choice = secrets.choice
    return "".join([choice(ID_ALPHABET) for _ in range(length)])


def is_peer_id(value: object) -> bool:
    """Is ``value`` acceptable as a remote peer id?

    Trystero ids are 20 characters of :data:`ID_ALPHABET`, but other implementations may
    choose differently, so this check is deliberately lenient while staying safe to log,
    use as a dict key and embed in topics: a non-empty ``str`` of at most
    :data:`MAX_PEER_ID_LENGTH` printable ASCII characters with no whitespace
    (``0x21``–``0x7e``). Never raises.
    """
    return isinstance(value, str) and _PEER_ID_RE.fullmatch(value) is not None


def sha1_b36(text: str) -> str:
    """Trystero's "hashed topic": each SHA-1 digest byte in lowercase base 36, unpadded.

    The result is 20–40 characters long (usually 36–40).
    """
    digest = hashlib.sha1(utf8_encode(text)).digest()
    return "".join([_B36_BYTE[b] for b in digest])


def root_topic_plaintext(app_id: str, room_id: str) -> str:
    """``Trystero@<appId>@<roomId>``, the input of :func:`root_topic`."""
    return f"{LIB_NAME}@{app_id}@{room_id}"


def self_topic_plaintext(app_id: str, room_id: str, peer_id: str) -> str:
    """``Trystero@<appId>@<roomId>@<peerId>``, the input of :func:`self_topic`."""
    return f"{LIB_NAME}@{app_id}@{room_id}@{peer_id}"


def root_topic(app_id: str, room_id: str) -> str:
    """The hashed root (room) topic that topic strategies announce on."""
    return sha1_b36(root_topic_plaintext(app_id, room_id))


def self_topic(app_id: str, room_id: str, peer_id: str) -> str:
    """The hashed self topic of ``peer_id``: where signals addressed to that peer go."""
    return sha1_b36(self_topic_plaintext(app_id, room_id, peer_id))


def info_hash(app_id: str, room_id: str) -> str:
    """The 20-character torrent ``info_hash``: the root topic hashed a second time."""
    return sha1_b36(root_topic(app_id, room_id))[:_INFO_HASH_LENGTH]


def room_token(app_id: str, room_id: str) -> str:
    """The room token of data-channel frames: hex SHA-256 of ``Trystero:<app>:<room>``.

    Always 64 lowercase hex characters (note the ``:`` separator, unlike topics).
    """
    return hashlib.sha256(utf8_encode(f"{LIB_NAME}:{app_id}:{room_id}")).hexdigest()


def nostr_kind(topic: str) -> int:
    """The ephemeral nostr event kind for ``topic``: ``20000 + (Σ charCodes mod 10000)``.

    Char codes are UTF-16 code units, as in JavaScript. The result is in 20000–29999.
    """
    return _NOSTR_KIND_BASE + utf16_code_unit_sum(topic) % _NOSTR_KIND_SPAN
