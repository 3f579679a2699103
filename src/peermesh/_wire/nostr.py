"""Nostr events and relay messages as Trystero 0.25.4 uses them (wire notes §3.1, NIP-01).

Sans-I/O: nothing here touches the network, the clock or an event loop; times are passed
in. Signing uses BIP-340 Schnorr signatures over secp256k1 (:mod:`coincurve`).

* :class:`NostrKey` is a key pair; its public key is the 32-byte x-only key as 64 hex chars.
* :func:`build_event` makes a signed event with Trystero's key order
  (``kind, tags, created_at, content, pubkey, id, sig``) and the tag ``["x", topic]``;
  :func:`verify_event` checks an event's id and signature (never raises).
* :func:`encode_event_message`, :func:`encode_req` and :func:`encode_close` produce
  client → relay messages; :func:`parse_relay_message` parses relay → client messages
  into frozen dataclasses and raises :class:`~peermesh.errors.RelayProtocolError` for
  anything malformed.
* :data:`DEFAULT_NOSTR_RELAYS` and :func:`shuffled_default_relays` reproduce Trystero's
  relay choice for an appId.

Event ids hash ``JSON.stringify([0,pubkey,created_at,kind,tags,content])``; :func:`event_id`
reproduces JavaScript's ``JSON.stringify`` for the strings and integers events hold (lone
UTF-16 surrogates become ``\\udXXX`` escapes, as in ES2019 well-formed ``JSON.stringify``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from peermesh._wire.jscompat import utf16_code_unit_sum
from peermesh._wire.topics import nostr_kind
from peermesh.errors import RelayProtocolError, UsageError

__all__ = [
    "DEFAULT_NOSTR_RELAYS",
    "DEFAULT_REDUNDANCY",
    "MAX_MESSAGE_SIZE",
    "MAX_TOPICS_PER_REQ",
    "TOPIC_TAG",
    "NostrKey",
    "RelayClosed",
    "RelayEose",
    "RelayEvent",
    "RelayMessage",
    "RelayNotice",
    "RelayOk",
    "build_event",
    "encode_close",
    "encode_event_message",
    "encode_req",
    "event_id",
    "event_topic",
    "parse_relay_message",
    "shuffled_default_relays",
    "verify_event",
]

#: Trystero 0.25.4's default Nostr relays, in its order (28 hosts).
DEFAULT_NOSTR_RELAYS: tuple[str, ...] = tuple(
    "wss://" + host
    for host in (
        "basspistol.org",
        "bucket.coracle.social",
        "chorus.pjv.me",
        "koru.bitcointxoko.org",
        "nos.lol",
        "nostr-01.uid.ovh",
        "nostr-01.yakihonne.com",
        "nostr-relay.corb.net",
        "nostr.data.haus",
        "nostr.islandarea.net",
        "nostr.sathoarder.com",
        "nostr.tegila.com.br",
        "nostr.vulpem.com",
        "purplerelay.com",
        "relay-can.zombi.cloudrodion.com",
        "relay-rpi.edufeed.org",
        "relay.agorist.space",
        "relay.artio.inf.unibe.ch",
        "relay.mostr.pub",
        "relay.mostro.network",
        "relay.sigit.io",
        "relay02.lnfi.network",
        "schnorr.me",
        "social.amanah.eblessing.co",
        "staging.yabu.me",
        "strfry.shock.network",
        "top.testrelay.top",
        "yabu.me/v2",
    )
)
#: How many of the (shuffled) default relays a room uses.
DEFAULT_REDUNDANCY = 5
#: Trystero splits its ``#x`` topics over several REQs of at most this many.
MAX_TOPICS_PER_REQ = 250
#: Largest relay message :func:`parse_relay_message` accepts, in characters.
MAX_MESSAGE_SIZE = 256 * 1024
#: The tag name that carries the (hashed) topic of an event.
TOPIC_TAG = "x"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_SUBSCRIPTION_ID = 256
_MAX_REASON = 4096
_MAX_TAGS = 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


class NostrKey:
    """A secp256k1 key pair for signing events; :attr:`pubkey` is the x-only key in hex."""

    __slots__ = ("_private", "pubkey")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise UsageError("a nostr secret key is 32 bytes")
        try:
            self._private = PrivateKey(secret)
        except ValueError as exc:
            raise UsageError(f"invalid nostr secret key: {exc}") from None
        self.pubkey: str = PublicKeyXOnly.from_secret(secret).format().hex()

    @classmethod
    def generate(cls) -> NostrKey:
        """A fresh random key pair (as noble's ``schnorr.keygen()``)."""
        return cls(PrivateKey().secret)

    @classmethod
    def from_secret(cls, secret: bytes | str) -> NostrKey:
        """The key pair of a 32-byte secret, given as bytes or 64 hex characters."""
        if isinstance(secret, str):
            try:
                secret = bytes.fromhex(secret)
            except ValueError:
                raise UsageError("a nostr secret key in hex is 64 hex characters") from None
        return cls(secret)

    @property
    def secret(self) -> bytes:
        return bytes(self._private.secret)

    def sign(self, digest: bytes) -> str:
        """BIP-340 signature (hex, 128 chars) of a 32-byte digest, with random aux data."""
        return bytes(self._private.sign_schnorr(digest, os.urandom(32))).hex()

    def __repr__(self) -> str:
        return f"<NostrKey {self.pubkey}>"


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _js_json(value: object) -> str:
    """``JSON.stringify`` of a tree of lists, ``str`` and ``int`` (no floats)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if _SURROGATE.search(text) is None:
        return text
    # Combine correctly paired surrogates (one code point in JS too), escape lone ones.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _SURROGATE.sub(_escape_surrogate, text)


def _serialize(pubkey: str, created_at: int, kind: int, tags: object, content: str) -> bytes:
    text = _js_json([0, pubkey, created_at, kind, tags, content])
    return text.encode("utf-8", "surrogatepass")


def event_id(pubkey: str, created_at: int, kind: int, tags: object, content: str) -> str:
    """The NIP-01 id: hex SHA-256 of ``JSON.stringify([0,pubkey,created_at,kind,tags,content])``."""
    return hashlib.sha256(_serialize(pubkey, created_at, kind, tags, content)).hexdigest()


def build_event(
    key: NostrKey, *, kind: int | None = None, topic: str, content: str, created_at: int
) -> dict[str, Any]:
    """A signed event for ``topic`` (tag ``["x", topic]``) in Trystero's key order.

    ``kind`` defaults to :func:`~peermesh._wire.topics.nostr_kind` of the topic;
    ``created_at`` is in whole seconds since the epoch.
    """
    if kind is None:
        kind = nostr_kind(topic)
    tags = [[TOPIC_TAG, topic]]
    eid = event_id(key.pubkey, created_at, kind, tags, content)
    return {
        "kind": kind,
        "tags": tags,
        "created_at": created_at,
        "content": content,
        "pubkey": key.pubkey,
        "id": eid,
        "sig": key.sign(bytes.fromhex(eid)),
    }


def _is_int(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_SAFE_INTEGER


def _valid_tags(tags: object) -> bool:
    return (
        isinstance(tags, list)
        and len(tags) <= _MAX_TAGS
        and all(isinstance(tag, list) and all(isinstance(s, str) for s in tag) for tag in tags)
    )


def _event_problem(event: object) -> str | None:
    """Why ``event`` is not a well-formed NIP-01 event, or None if it is."""
    if not isinstance(event, dict):
        return "event is not an object"
    for name, pattern in (("id", _HEX64), ("pubkey", _HEX64), ("sig", _HEX128)):
        value = event.get(name)
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            return f"event {name} is not lowercase hex of the right length"
    if not _is_int(event.get("kind")) or not _is_int(event.get("created_at")):
        return "event kind or created_at is not a non-negative integer"
    if not isinstance(event.get("content"), str):
        return "event content is not a string"
    if not _valid_tags(event.get("tags")):
        return "event tags are not a list of lists of strings"
    return None


def verify_event(event: object) -> bool:
    """Whether ``event`` is well formed, its id matches its contents and its BIP-340
    signature by ``pubkey`` is valid. Never raises."""
    try:
        if _event_problem(event) is not None:
            return False
        assert isinstance(event, dict)
        eid = event_id(
            event["pubkey"], event["created_at"], event["kind"], event["tags"], event["content"]
        )
        if eid != event["id"]:
            return False
        pub = PublicKeyXOnly(bytes.fromhex(event["pubkey"]))
        return bool(pub.verify(bytes.fromhex(event["sig"]), bytes.fromhex(eid)))
    except Exception:
        return False


def event_topic(event: dict[str, Any]) -> str | None:
    """The value of the event's first ``x`` tag (its Trystero topic), if any."""
    tags = event.get("tags")
    if not isinstance(tags, list):
        return None
    for tag in tags:
        if isinstance(tag, list) and len(tag) >= 2 and tag[0] == TOPIC_TAG:
            value = tag[1]
            return value if isinstance(value, str) and value else None
    return None


def encode_event_message(event: dict[str, Any]) -> str:
    """``["EVENT", event]``, compact."""
    return _js_json(["EVENT", event])


def encode_req(sub_id: str, topics: list[str], since: int) -> str:
    """``["REQ", sub_id, {"kinds": [...], "since": since, "#x": topics}]``.

    ``kinds`` lists the unique kinds of ``topics`` in first-seen order, as Trystero does.
    Callers split large topic sets (Trystero: at most :data:`MAX_TOPICS_PER_REQ` per REQ).
    """
    kinds = list(dict.fromkeys(nostr_kind(topic) for topic in topics))
    return _js_json(["REQ", sub_id, {"kinds": kinds, "since": since, "#" + TOPIC_TAG: topics}])


def encode_close(sub_id: str) -> str:
    """``["CLOSE", sub_id]``."""
    return _js_json(["CLOSE", sub_id])


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """``["EVENT", sub_id, event]``: an event delivered for one of our subscriptions.

    ``event`` is structurally valid (hex id/pubkey/sig, integer kind and created_at, string
    content, list-of-string tags) but **not verified**; call :func:`verify_event`.
    """

    sub_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RelayOk:
    """``["OK", event_id, accepted, message]``: the fate of an event we published."""

    event_id: str
    accepted: bool
    message: str

    @property
    def rate_limited(self) -> bool:
        return not self.accepted and self.message.startswith("rate-limited:")

    @property
    def duplicate(self) -> bool:
        return self.message.startswith("duplicate:")


@dataclass(frozen=True, slots=True)
class RelayClosed:
    """``["CLOSED", sub_id, message]``: the relay ended (or refused) a subscription."""

    sub_id: str
    message: str


@dataclass(frozen=True, slots=True)
class RelayNotice:
    """``["NOTICE", message]``: a human-readable message from the relay."""

    message: str


@dataclass(frozen=True, slots=True)
class RelayEose:
    """``["EOSE", sub_id]``: stored events are done; live ones follow."""

    sub_id: str


RelayMessage = RelayEvent | RelayOk | RelayClosed | RelayNotice | RelayEose


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _short_str(value: object, limit: int, what: str) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise RelayProtocolError(f"{what} is not a string of at most {limit} chars")
    return value


def parse_relay_message(text: str) -> RelayMessage:
    """Parse one relay → client message. Raises :class:`RelayProtocolError` for anything
    malformed, too large or of a type we do not handle (``AUTH``, ``COUNT``, …)."""
    if not isinstance(text, str):
        raise RelayProtocolError("relay message is not text")
    if len(text) > MAX_MESSAGE_SIZE:
        raise RelayProtocolError(f"relay message larger than {MAX_MESSAGE_SIZE} chars")
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RelayProtocolError(f"relay message is not JSON: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise RelayProtocolError("relay message is not an array starting with its type")
    kind, args = message[0], message[1:]
    if kind == "EVENT":
        if len(args) != 2:
            raise RelayProtocolError("EVENT takes a subscription id and an event")
        sub_id = _short_str(args[0], _MAX_SUBSCRIPTION_ID, "EVENT subscription id")
        problem = _event_problem(args[1])
        if problem is not None:
            raise RelayProtocolError(f"EVENT: {problem}")
        return RelayEvent(sub_id, args[1])
    if kind == "OK":
        if len(args) not in (2, 3) or not isinstance(args[1], bool):
            raise RelayProtocolError("OK takes an event id, a boolean and a message")
        eid = _short_str(args[0], _MAX_SUBSCRIPTION_ID, "OK event id")
        reason = _short_str(args[2], _MAX_REASON, "OK message") if len(args) == 3 else ""
        return RelayOk(eid, args[1], reason)
    if kind == "CLOSED":
        if len(args) not in (1, 2):
            raise RelayProtocolError("CLOSED takes a subscription id and a message")
        sub_id = _short_str(args[0], _MAX_SUBSCRIPTION_ID, "CLOSED subscription id")
        reason = _short_str(args[1], _MAX_REASON, "CLOSED message") if len(args) == 2 else ""
        return RelayClosed(sub_id, reason)
    if kind == "NOTICE":
        if len(args) != 1:
            raise RelayProtocolError("NOTICE takes one message")
        return RelayNotice(_short_str(args[0], _MAX_REASON, "NOTICE message"))
    if kind == "EOSE":
        if len(args) != 1:
            raise RelayProtocolError("EOSE takes one subscription id")
        return RelayEose(_short_str(args[0], _MAX_SUBSCRIPTION_ID, "EOSE subscription id"))
    raise RelayProtocolError(f"unsupported relay message type {kind[:32]!r}")


def shuffled_default_relays(
    app_id: str, relays: tuple[str, ...] | list[str] | None = None
) -> list[str]:
    """Trystero's deterministic shuffle of the default relays for ``app_id`` (wire notes §3).

    The seed is the sum of the UTF-16 code units of ``app_id``; each step draws
    ``x = sin(seed++) * 10000; r = x - floor(x)`` and swaps in a backwards Fisher–Yates
    pass. Take the first :data:`DEFAULT_REDUNDANCY` entries of the result.
    """
    items = list(DEFAULT_NOSTR_RELAYS if relays is None else relays)
    seed = utf16_code_unit_sum(app_id)
    i = len(items)
    while i:
        x = math.sin(seed) * 1e4
        seed += 1
        j = math.floor((x - math.floor(x)) * i)
        i -= 1
        items[i], items[j] = items[j], items[i]
    return items
