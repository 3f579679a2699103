"""Signalling messages of the topic strategies (wire notes §2.2), parsed and serialised.

Every message is a JSON object with the sender's ``peerId`` and at most one of ``offer``,
``answer`` or ``candidate`` (sealed text, see :mod:`.sealing`), an optional 12-character
``offerId`` tying answers and candidates to one offer, and ``passive: true`` from a peer in
passive mode. A message with none of the three is an *announcement*. Encoders write the keys
in Trystero's order, compact, so our messages are byte-identical to its own.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from ..errors import ProtocolError
from .topics import is_peer_id

__all__ = [
    "MAX_SIGNAL_SIZE",
    "OFFER_ID_LENGTH",
    "Signal",
    "SignalKind",
    "encode_announce",
    "encode_answer",
    "encode_candidate",
    "encode_offer",
    "parse_signal",
]

#: Largest signalling message we parse (an SDP with many candidates is a few KiB).
MAX_SIGNAL_SIZE = 64 * 1024
OFFER_ID_LENGTH = 12
_MAX_OFFER_ID = 64


class SignalKind(enum.Enum):
    ANNOUNCE = "announce"
    OFFER = "offer"
    ANSWER = "answer"
    CANDIDATE = "candidate"


@dataclass(frozen=True, slots=True)
class Signal:
    """One parsed signalling message. ``sealed`` is the encrypted offer, answer or candidate
    (empty for an announcement)."""

    kind: SignalKind
    peer_id: str
    sealed: str = ""
    offer_id: str | None = None
    passive: bool = False


def parse_signal(value: str | bytes | dict[str, object]) -> Signal:
    """Parse a signalling message (JSON text, or an already-parsed object as Supabase and
    Firebase deliver it).

    Raises :class:`ProtocolError` for anything that is not a valid message: bad JSON, not
    an object, a missing or malformed ``peerId``, an ``offer``/``answer``/``candidate`` that
    is not a non-empty string, more than one of them, a malformed ``offerId``, or text over
    :data:`MAX_SIGNAL_SIZE`.
    """
    if isinstance(value, dict):
        message = value
    else:
        if len(value) > MAX_SIGNAL_SIZE:
            raise ProtocolError(f"signal of {len(value)} bytes is over {MAX_SIGNAL_SIZE}")
        try:
            message = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"signal is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("signal is not a JSON object")
    peer_id = message.get("peerId")
    if not isinstance(peer_id, str) or not is_peer_id(peer_id):
        raise ProtocolError(f"signal has no valid peerId: {peer_id!r}")
    present = [kind for kind in ("offer", "answer", "candidate") if kind in message]
    if len(present) > 1:
        raise ProtocolError(f"signal carries more than one of {present}")
    offer_id = message.get("offerId")
    if offer_id is not None and (
        not isinstance(offer_id, str) or not 0 < len(offer_id) <= _MAX_OFFER_ID
    ):
        raise ProtocolError(f"malformed offerId {offer_id!r}")
    passive = message.get("passive") is True
    if not present:
        return Signal(SignalKind.ANNOUNCE, peer_id, offer_id=offer_id, passive=passive)
    sealed = message[present[0]]
    if not isinstance(sealed, str) or not sealed:
        raise ProtocolError(f"signal's {present[0]} is not a non-empty string")
    return Signal(SignalKind(present[0]), peer_id, sealed, offer_id, passive)


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _with_passive(message: dict[str, object], passive: bool) -> str:
    if passive:
        message["passive"] = True
    return _dump(message)


def encode_announce(peer_id: str, *, passive: bool = False) -> str:
    """``{"peerId":…[,"passive":true]}``"""
    return _with_passive({"peerId": peer_id}, passive)


def encode_offer(peer_id: str, offer_id: str, sealed: str, *, passive: bool = False) -> str:
    """``{"peerId","offerId","offer"[,"passive"]}``"""
    return _with_passive({"peerId": peer_id, "offerId": offer_id, "offer": sealed}, passive)


def encode_answer(peer_id: str, sealed: str, offer_id: str | None, *, passive: bool = False) -> str:
    """``{"peerId","answer"[,"offerId"][,"passive"]}``"""
    message: dict[str, object] = {"peerId": peer_id, "answer": sealed}
    if offer_id is not None:
        message["offerId"] = offer_id
    return _with_passive(message, passive)


def encode_candidate(
    peer_id: str, sealed: str, offer_id: str | None, *, offerer: bool, passive: bool = False
) -> str:
    """The offerer writes ``{"peerId","offerId","candidate"}``, the answerer
    ``{"peerId","candidate"[,"offerId"]}`` (plus ``"passive"``)."""
    message: dict[str, object] = {"peerId": peer_id}
    if offerer and offer_id is not None:
        message["offerId"] = offer_id
    message["candidate"] = sealed
    if not offerer and offer_id is not None:
        message["offerId"] = offer_id
    return _with_passive(message, passive)
