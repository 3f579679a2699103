"""Sealing of SDPs and ICE candidates, and the password handshake (wire notes §4, §7).

Trystero always encrypts signalled SDPs and candidates with AES-256-GCM, keyed by
``SHA-256("<password>:<appId>:<roomId>")`` (an empty password when there is none), with a
16-byte random IV and no additional data. The text form is::

    <16 IV bytes as decimal, comma-separated>$<standard base64 of ciphertext‖tag>

Inside a connected room an optional password handshake proves both peers know the password:
the initiator sends ``{"__trystero_pw":"challenge","c":<36-char id>}`` and the responder
answers ``{"__trystero_pw":"response","h":<hex SHA-256 of "<c>:<pw>:<appId>:<roomId>">}``.

All functions are pure (apart from drawing random IVs and challenges).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peermesh._wire.jscompat import utf8_encode
from peermesh._wire.topics import gen_id
from peermesh.errors import SealError, UsageError

__all__ = [
    "CHALLENGE_LENGTH",
    "IV_SIZE",
    "KEY_SIZE",
    "MAX_SEALED_TEXT",
    "PASSWORD_FIELD",
    "PasswordChallenge",
    "PasswordResponse",
    "check_password_proof",
    "derive_key",
    "make_password_challenge",
    "make_password_response",
    "parse_password_message",
    "password_proof",
    "seal",
    "unseal",
]

KEY_SIZE = 32
"""AES-256 key length in bytes."""

IV_SIZE = 16
"""Trystero's AES-GCM IV length in bytes (not the usual 12)."""

MAX_SEALED_TEXT = 256 * 1024
"""Longest sealed text (in characters) :func:`unseal` will look at.

SDPs are a few KiB; anything beyond this is rejected before any decoding work is done."""

PASSWORD_FIELD = "__trystero_pw"
"""JSON field that marks a password-handshake ``@_hsdata`` message."""

CHALLENGE_LENGTH = 36
"""Length of the random challenge id the initiator sends."""

_TAG_SIZE = 16
_IV_SEP = ","
_PART_SEP = "$"
# 16 decimal byte values, 1-3 ASCII digits each. The range check (<= 255) happens after.
_IV_RE = re.compile(rf"[0-9]{{1,3}}(?:,[0-9]{{1,3}}){{{IV_SIZE - 1}}}", re.ASCII)
_CHALLENGE = "challenge"
_RESPONSE = "response"


def derive_key(password: str | None, app_id: str, room_id: str) -> bytes:
    """The 32-byte AES-256-GCM key for a room: ``SHA-256("<password>:<appId>:<roomId>")``.

    ``None`` and ``""`` both mean "no password" and give the same key.
    """
    secret = password or ""
    return hashlib.sha256(utf8_encode(f"{secret}:{app_id}:{room_id}")).digest()


def _aead(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise UsageError(f"sealing key must be {KEY_SIZE} bytes, got {len(key)}")
    return AESGCM(key)


def seal(key: bytes, plaintext: str, *, iv: bytes | None = None) -> str:
    """Encrypt ``plaintext`` into Trystero's text form.

    ``iv`` defaults to 16 fresh random bytes; pass one only for tests (reusing an IV with
    the same key breaks GCM). Raises :class:`UsageError` if ``key`` is not 32 bytes or
    ``iv`` is not 16 bytes.
    """
    aead = _aead(key)
    if iv is None:
        iv = os.urandom(IV_SIZE)
    elif len(iv) != IV_SIZE:
        raise UsageError(f"IV must be {IV_SIZE} bytes, got {len(iv)}")
    sealed = aead.encrypt(iv, utf8_encode(plaintext), None)
    return _IV_SEP.join(map(str, iv)) + _PART_SEP + base64.b64encode(sealed).decode("ascii")


def unseal(key: bytes, text: str) -> str:
    """Decrypt Trystero's text form and return the plaintext.

    Stricter than Trystero: exactly one ``$``, exactly 16 comma-separated decimal IV bytes
    (0–255, at most three ASCII digits each, no signs or spaces), standard base64 (missing
    ``=`` padding is tolerated) of at least the 16-byte tag, and valid UTF-8 plaintext.

    Raises :class:`SealError` for any malformed input, for text longer than
    :data:`MAX_SEALED_TEXT` characters, for a non-``str`` ``text`` and when authentication
    fails (wrong password or tampering). Raises :class:`UsageError` if ``key`` is not 32
    bytes (a local mistake, not the peer's).
    """
    aead = _aead(key)
    if not isinstance(text, str):
        raise SealError(f"sealed value must be a string, not {type(text).__name__}")
    if len(text) > MAX_SEALED_TEXT:
        raise SealError(f"sealed text too long ({len(text)} > {MAX_SEALED_TEXT} chars)")
    iv_text, sep, body = text.partition(_PART_SEP)
    if not sep or _PART_SEP in body:
        raise SealError("sealed text must have the form '<iv>$<base64>'")
    if _IV_RE.fullmatch(iv_text) is None:
        raise SealError("sealed text IV must be 16 comma-separated decimal bytes")
    iv_values = [int(part) for part in iv_text.split(_IV_SEP)]
    if max(iv_values) > 255:
        raise SealError("sealed text IV byte out of range 0-255")
    stripped = body.rstrip("=")
    if len(body) - len(stripped) > 2:
        raise SealError("sealed text body has excess base64 padding")
    try:
        padded = stripped + "=" * (-len(stripped) % 4)
        sealed = binascii.a2b_base64(padded.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise SealError("sealed text body is not valid base64") from exc
    if len(sealed) < _TAG_SIZE:
        raise SealError("sealed text body is shorter than the GCM tag")
    try:
        plain = aead.decrypt(bytes(iv_values), sealed, None)
    except InvalidTag as exc:
        raise SealError("sealed text failed authentication (wrong password?)") from exc
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SealError("sealed plaintext is not valid UTF-8") from exc


@dataclass(frozen=True, slots=True)
class PasswordChallenge:
    """``{"__trystero_pw":"challenge","c":...}`` from the handshake initiator."""

    challenge: str


@dataclass(frozen=True, slots=True)
class PasswordResponse:
    """``{"__trystero_pw":"response","h":...}`` from the handshake responder."""

    proof: str


def make_password_challenge() -> dict[str, str]:
    """A fresh challenge message, ready to JSON-encode as an ``@_hsdata`` payload."""
    return {PASSWORD_FIELD: _CHALLENGE, "c": gen_id(CHALLENGE_LENGTH)}


def password_proof(challenge: str, password: str, app_id: str, room_id: str) -> str:
    """Hex SHA-256 of ``"<challenge>:<password>:<appId>:<roomId>"`` (64 lowercase chars)."""
    text = f"{challenge}:{password}:{app_id}:{room_id}"
    return hashlib.sha256(utf8_encode(text)).hexdigest()


def make_password_response(
    challenge: str, password: str, app_id: str, room_id: str
) -> dict[str, str]:
    """The responder's answer to ``challenge``, ready to JSON-encode as ``@_hsdata``."""
    return {PASSWORD_FIELD: _RESPONSE, "h": password_proof(challenge, password, app_id, room_id)}


def parse_password_message(value: object) -> PasswordChallenge | PasswordResponse | None:
    """Recognise a decoded ``@_hsdata`` payload as a password-handshake message.

    Returns ``None`` when ``value`` is not a well-formed challenge or response: not a dict,
    no :data:`PASSWORD_FIELD`, an unknown phase, or a missing/non-string ``c``/``h``. A caller
    that is waiting for a handshake message treats ``None`` as a failed handshake, as
    Trystero does. Never raises for any value produced by :func:`json.loads`.
    """
    if not isinstance(value, dict):
        return None
    phase = value.get(PASSWORD_FIELD)
    if phase == _CHALLENGE:
        challenge = value.get("c")
        return PasswordChallenge(challenge) if isinstance(challenge, str) else None
    if phase == _RESPONSE:
        proof = value.get("h")
        return PasswordResponse(proof) if isinstance(proof, str) else None
    return None


def check_password_proof(
    challenge: str, proof: str, password: str, app_id: str, room_id: str
) -> bool:
    """Does ``proof`` answer ``challenge`` for this password and room? Constant-time compare.

    Accepts any ``str`` as ``proof`` (non-ASCII included) and never raises for one.
    """
    expected = password_proof(challenge, password, app_id, room_id)
    return hmac.compare_digest(expected.encode("ascii"), utf8_encode(proof))
