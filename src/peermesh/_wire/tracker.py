"""WebTorrent tracker messages as Trystero 0.25 uses them (wire notes §3.2), without I/O.

A WebTorrent tracker is a WebSocket server that exchanges JSON text messages. Trystero
uses it only as a mailbox for WebRTC signalling: peers announce a 20-character
``info_hash`` (§1.3) with a few sealed offers, the tracker hands each offer to one other
peer of that swarm, and the answers travel back through the tracker by ``to_peer_id``.

This module has two halves; neither does any I/O, reads a clock or keeps state.

**Client side** (what a peermesh peer sends to and reads from a tracker):

- :func:`encode_announce`, :func:`encode_passive_announce` and :func:`encode_answer`
  return the JSON text Trystero 0.25.4 sends, byte for byte (``JSON.stringify`` output:
  compact, keys in Trystero's order, non-ASCII characters left as they are).
- :func:`parse_tracker_message` reads anything a tracker sends and returns a
  :class:`TrackerMessage`.
- :func:`clamp_interval_ms` turns a tracker's ``interval`` into Trystero's announce period.

**Tracker side** (what :mod:`peermesh.servers.tracker` needs):

- :func:`parse_client_message` validates a client's ``announce`` or ``scrape`` the way
  bittorrent-tracker 11.2.3 does (``info_hash``, ``peer_id`` and ``to_peer_id`` must be
  20 UTF-16 code units long), with stricter type checks.
- :func:`encode_announce_response`, :func:`encode_relayed_offer`,
  :func:`encode_relayed_answer`, :func:`encode_scrape_response` and
  :func:`encode_failure` build the tracker's replies. These escape every non-ASCII
  character (``\\uXXXX``), so their output is always valid UTF-8 whatever strings a client
  sent, including lone surrogates.

Errors: anything wrong with *remote* input raises
:class:`~peermesh.errors.RelayProtocolError`, and nothing else, for any ``str`` or
``bytes`` argument. Bad *local* arguments to the encoders raise
:class:`~peermesh.errors.UsageError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peermesh.errors import RelayProtocolError, UsageError

__all__ = [
    "DEFAULT_ANNOUNCE_MS",
    "ID_LENGTH",
    "MAX_ANNOUNCE_MS",
    "MAX_MESSAGE_SIZE",
    "ClientAnnounce",
    "ClientAnswer",
    "ClientOffer",
    "ClientScrape",
    "RelayedAnswer",
    "RelayedOffer",
    "TrackerMessage",
    "TrackerOffer",
    "clamp_interval_ms",
    "encode_announce",
    "encode_announce_response",
    "encode_answer",
    "encode_failure",
    "encode_passive_announce",
    "encode_relayed_answer",
    "encode_relayed_offer",
    "encode_scrape_response",
    "parse_client_message",
    "parse_tracker_message",
]

MAX_MESSAGE_SIZE = 64 * 1024
"""Default bound, in bytes of UTF-8, on one tracker message for both parsers.

A Trystero announce with three sealed, non-trickled offers is about 6 KiB, so 64 KiB leaves
ample room while keeping a hostile tracker or client from making us parse megabytes.
"""

ID_LENGTH = 20
"""Length of ``info_hash``, ``peer_id`` and ``to_peer_id`` in UTF-16 code units (JS
``.length``). bittorrent-tracker rejects any other length."""

DEFAULT_ANNOUNCE_MS = 10_000
"""Trystero's announce period when the tracker sent no usable ``interval``; also the floor."""

MAX_ANNOUNCE_MS = 120_000
"""Ceiling of Trystero's per-tracker announce period."""

_ANNOUNCE = "announce"
_EVENTS = frozenset({"started", "stopped", "completed", "update", "paused"})
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackerOffer:
    """One offer a client puts in its announce.

    ``sdp`` is the *sealed* SDP text (wire notes §4), not a raw SDP. On the wire it becomes
    ``{"offer_id": offer_id, "offer": {"type": "offer", "sdp": sdp}}``.
    """

    offer_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class RelayedOffer:
    """An offer the tracker forwarded to us from ``peer_id``; answer it with ``offer_id``."""

    peer_id: str
    offer_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class RelayedAnswer:
    """An answer from ``peer_id`` to our offer ``offer_id``, forwarded by the tracker."""

    peer_id: str
    offer_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class TrackerMessage:
    """One message from a tracker. Every field is ``None`` when the message lacks it.

    A single message may carry several of them at once (an announce response has
    ``info_hash`` and ``interval``; a relayed offer has ``info_hash`` and ``offer``).
    Trystero ignores the whole message when ``failure`` is set, and only logs ``warning``.
    """

    info_hash: str | None = None
    interval: float | None = None
    """Seconds, as the tracker sent it (may be zero, negative or fractional); see
    :func:`clamp_interval_ms`."""
    failure: str | None = None
    """The ``failure reason`` text."""
    warning: str | None = None
    """The ``warning message`` text."""
    offer: RelayedOffer | None = None
    answer: RelayedAnswer | None = None
    complete: int | None = None
    """Seeders in the swarm, from an announce response (``None`` if absent or not a
    non-negative integer: these counts are advisory, so a bad one is ignored, not fatal)."""
    incomplete: int | None = None
    """Leechers in the swarm, likewise."""


@dataclass(frozen=True, slots=True)
class ClientOffer:
    """One offer in a client's announce, as a tracker sees it.

    The tracker forwards ``offer`` values verbatim, so the value is kept as
    ``offer_json``: its compact JSON re-serialisation, equal *as a JSON value* to what the
    client sent (whitespace and escapes may differ from the original bytes). Trystero 0.23.1+
    and bittorrent-tracker's own client send ``{"type": "offer", "sdp": …}``; 0.23.0 sent a
    bare string. Both are accepted.
    """

    offer_id: str
    offer_json: str
    """Compact, ASCII-only JSON of the ``offer`` value: an object or a string."""
    sdp: str | None
    """The SDP text when ``offer`` is a string or an object with a string ``sdp``."""


@dataclass(frozen=True, slots=True)
class ClientAnswer:
    """An answer a client asks the tracker to route to ``to_peer_id``.

    ``answer_json`` is kept for verbatim forwarding, exactly like
    :attr:`ClientOffer.offer_json`.
    """

    to_peer_id: str
    offer_id: str
    answer_json: str
    sdp: str | None


@dataclass(frozen=True, slots=True)
class ClientAnnounce:
    """A validated ``announce`` from a client.

    ``offers`` holds at most the ``max_offers`` first offers given to
    :func:`parse_client_message`; ``offers_truncated`` counts the ones dropped (they are
    not validated). ``event`` is ``None`` for a plain update (absent, ``""`` or
    ``"empty"``), else one of ``started``, ``stopped``, ``completed``, ``update``,
    ``paused``. ``left`` is ``None`` when absent; bittorrent-tracker then treats the peer as
    a leecher, and ``left == 0`` marks a seeder (Trystero's passive announce).
    """

    info_hash: str
    peer_id: str
    numwant: int | None = None
    offers: tuple[ClientOffer, ...] = ()
    answer: ClientAnswer | None = None
    left: float | None = None
    event: str | None = None
    offers_truncated: int = 0


@dataclass(frozen=True, slots=True)
class ClientScrape:
    """A validated ``scrape``. An empty ``info_hashes`` asks about every swarm."""

    info_hashes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------
# Client -> tracker encoders (Trystero's exact bytes)
# --------------------------------------------------------------------------------------


def encode_announce(
    info_hash: str, peer_id: str, offers: Sequence[TrackerOffer], *, numwant: int = 3
) -> str:
    """Trystero's active announce::

        {"action":"announce","info_hash":…,"peer_id":…,"numwant":3,
         "offers":[{"offer_id":…,"offer":{"type":"offer","sdp":…}},…]}

    Raises :class:`UsageError` if ``info_hash`` or ``peer_id`` is not 20 characters long,
    ``numwant`` is not a non-negative ``int``, or an offer is not a :class:`TrackerOffer`
    of strings.
    """
    _check_local_id("info_hash", info_hash)
    _check_local_id("peer_id", peer_id)
    if not isinstance(numwant, int) or isinstance(numwant, bool) or numwant < 0:
        raise UsageError(f"numwant must be a non-negative int, got {numwant!r}")
    wire_offers: list[object] = []
    for offer in offers:
        if not (
            isinstance(offer, TrackerOffer)
            and isinstance(offer.offer_id, str)
            and isinstance(offer.sdp, str)
        ):
            raise UsageError(f"offers must be TrackerOffer(offer_id: str, sdp: str), got {offer!r}")
        wire_offers.append(
            {"offer_id": offer.offer_id, "offer": {"type": "offer", "sdp": offer.sdp}}
        )
    return _js_stringify(
        {
            "action": _ANNOUNCE,
            "info_hash": info_hash,
            "peer_id": peer_id,
            "numwant": numwant,
            "offers": wire_offers,
        }
    )


def encode_passive_announce(info_hash: str, peer_id: str) -> str:
    """Trystero's dormant (passive room) announce, a seeder with no offers::

        {"action":"announce","info_hash":…,"peer_id":…,"left":0,"numwant":3,"offers":[]}

    Raises :class:`UsageError` for ids that are not 20 characters long.
    """
    _check_local_id("info_hash", info_hash)
    _check_local_id("peer_id", peer_id)
    return _js_stringify(
        {
            "action": _ANNOUNCE,
            "info_hash": info_hash,
            "peer_id": peer_id,
            "left": 0,
            "numwant": 3,
            "offers": [],
        }
    )


def encode_answer(info_hash: str, peer_id: str, *, to_peer_id: str, offer_id: str, sdp: str) -> str:
    """Trystero's answer to a relayed offer (``sdp`` is the sealed answer SDP)::

        {"action":"announce","info_hash":…,"peer_id":…,
         "answer":{"type":"answer","sdp":…},"offer_id":…,"to_peer_id":…}

    Raises :class:`UsageError` for ids that are not 20 characters long or non-string
    ``offer_id``/``sdp``.
    """
    _check_local_id("info_hash", info_hash)
    _check_local_id("peer_id", peer_id)
    _check_local_id("to_peer_id", to_peer_id)
    if not isinstance(offer_id, str) or not isinstance(sdp, str):
        raise UsageError("offer_id and sdp must be str")
    return _js_stringify(
        {
            "action": _ANNOUNCE,
            "info_hash": info_hash,
            "peer_id": peer_id,
            "answer": {"type": "answer", "sdp": sdp},
            "offer_id": offer_id,
            "to_peer_id": to_peer_id,
        }
    )


def clamp_interval_ms(interval_seconds: float | None) -> int:
    """Trystero's announce period for a tracker ``interval``, in whole milliseconds.

    ``clamp(interval * 1000, 10000, 120000)``. Like Trystero, a missing, zero or otherwise
    unusable value (``None``, NaN, a bool, a non-number) gives the default 10000 ms; a
    negative value clamps to 10000 and an infinite one to 120000. Never raises.
    """
    if (
        interval_seconds is None
        or isinstance(interval_seconds, bool)
        or not isinstance(interval_seconds, int | float)
    ):
        return DEFAULT_ANNOUNCE_MS
    try:
        ms = float(interval_seconds) * 1000.0
    except OverflowError:  # an int too large for a float
        return MAX_ANNOUNCE_MS if interval_seconds > 0 else DEFAULT_ANNOUNCE_MS
    if math.isnan(ms) or ms == 0:
        return DEFAULT_ANNOUNCE_MS
    return int(min(max(ms, DEFAULT_ANNOUNCE_MS), MAX_ANNOUNCE_MS))


# --------------------------------------------------------------------------------------
# Tracker -> client parser
# --------------------------------------------------------------------------------------


def parse_tracker_message(text: str | bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> TrackerMessage:
    """Parse one message a tracker sent to us.

    Accepts relayed ``offer``/``answer`` values both as ``{"type", "sdp"}`` objects
    (Trystero 0.23.1+, bittorrent-tracker) and as bare strings (0.23.0), and ignores keys
    it does not know (``action``, ``complete``, ``files``, …). JSON ``null`` counts as
    absent.

    Raises :class:`RelayProtocolError` when the message is larger than ``max_size`` bytes
    of UTF-8, is not UTF-8 JSON, is not a JSON object, has a field of the wrong type, or
    carries an ``offer``/``answer`` without non-empty string ``peer_id`` and ``offer_id``
    and a string SDP. Raises nothing else for any ``str`` or ``bytes`` input.
    """
    obj = _load_object(text, max_size)
    offer: RelayedOffer | None = None
    answer: RelayedAnswer | None = None
    raw_offer = obj.get("offer")
    raw_answer = obj.get("answer")
    if raw_offer is not None or raw_answer is not None:
        peer_id = _required_str(obj, "peer_id")
        offer_id = _required_str(obj, "offer_id")
        if raw_offer is not None:
            offer = RelayedOffer(peer_id, offer_id, _sdp_of(raw_offer, "offer"))
        if raw_answer is not None:
            answer = RelayedAnswer(peer_id, offer_id, _sdp_of(raw_answer, "answer"))
    return TrackerMessage(
        info_hash=_optional_str(obj, "info_hash"),
        interval=_optional_float(obj, "interval"),
        failure=_optional_str(obj, "failure reason"),
        warning=_optional_str(obj, "warning message"),
        offer=offer,
        answer=answer,
        complete=_count(obj.get("complete")),
        incomplete=_count(obj.get("incomplete")),
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _sdp_of(value: object, kind: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        sdp = value.get("sdp")
        if isinstance(sdp, str):
            return sdp
    raise RelayProtocolError(f"{kind} is neither a string nor an object with a string sdp")


# --------------------------------------------------------------------------------------
# Tracker side: client -> tracker parser
# --------------------------------------------------------------------------------------


def parse_client_message(
    text: str | bytes, *, max_offers: int, max_size: int = MAX_MESSAGE_SIZE
) -> ClientAnnounce | ClientScrape:
    """Validate one message a client sent to a tracker.

    ``announce``: ``info_hash`` and ``peer_id`` must be strings of exactly 20 UTF-16 code
    units (bittorrent-tracker's rule; its own client sends 20 latin-1 "binary" characters,
    Trystero 20 ASCII ones). ``numwant`` must be a non-negative integer, ``left`` a number,
    ``event`` one of bittorrent-tracker's events, ``offers`` a list of objects with a string
    ``offer_id`` and an object-or-string ``offer``. Only the first ``max_offers`` offers are
    kept and validated; the rest are counted in ``offers_truncated``. An ``answer`` (object
    or string) needs a 20-character ``to_peer_id`` and a string ``offer_id``. Unknown keys
    (``uploaded``, ``trackerid``, …) are ignored; JSON ``null`` counts as absent.

    ``scrape``: ``info_hash`` may be absent (all swarms), one 20-character string or a
    list of them.

    Raises :class:`RelayProtocolError` for anything else (oversize, not UTF-8 JSON, not an
    object, unknown ``action``, wrong types) and nothing else for any ``str``/``bytes``.
    The message text makes a good ``failure reason`` reply.
    """
    if max_offers < 0:
        raise UsageError("max_offers must be >= 0")
    obj = _load_object(text, max_size)
    action = obj.get("action")
    if action == _ANNOUNCE:
        return _parse_announce(obj, max_offers)
    if action == "scrape":
        return _parse_scrape(obj)
    shown = action if isinstance(action, str) and len(action) <= 32 else type(action).__name__
    raise RelayProtocolError(f"invalid action in WS request: {shown}")


def _parse_announce(obj: dict[str, object], max_offers: int) -> ClientAnnounce:
    info_hash = _required_id(obj, "info_hash")
    peer_id = _required_id(obj, "peer_id")

    numwant: int | None = None
    raw_numwant = obj.get("numwant")
    if raw_numwant is not None:
        number = _as_float(raw_numwant, "numwant")
        if number < 0 or not number.is_integer():
            raise RelayProtocolError("numwant must be a non-negative integer")
        numwant = int(min(number, 2**31))

    raw_left = obj.get("left")
    left = None if raw_left is None else _as_float(raw_left, "left")

    event = obj.get("event")
    if event is None or event in ("", "empty"):
        event = None
    elif not isinstance(event, str) or event not in _EVENTS:
        raise RelayProtocolError("invalid event")

    offers: list[ClientOffer] = []
    truncated = 0
    raw_offers = obj.get("offers")
    if raw_offers is not None:
        if not isinstance(raw_offers, list):
            raise RelayProtocolError("offers must be a list")
        truncated = max(0, len(raw_offers) - max_offers)
        for item in raw_offers[:max_offers]:
            if not isinstance(item, dict):
                raise RelayProtocolError("each offer must be an object")
            offer_id = item.get("offer_id")
            if not isinstance(offer_id, str):
                raise RelayProtocolError("offer_id must be a string")
            value = item.get("offer")
            offers.append(ClientOffer(offer_id, _opaque_json(value, "offer"), _sdp_or_none(value)))

    answer: ClientAnswer | None = None
    raw_answer = obj.get("answer")
    if raw_answer is not None:
        to_peer_id = _required_id(obj, "to_peer_id", "(required with `answer`)")
        offer_id = obj.get("offer_id")
        if not isinstance(offer_id, str):
            raise RelayProtocolError("offer_id must be a string (required with `answer`)")
        answer = ClientAnswer(
            to_peer_id, offer_id, _opaque_json(raw_answer, "answer"), _sdp_or_none(raw_answer)
        )

    return ClientAnnounce(
        info_hash=info_hash,
        peer_id=peer_id,
        numwant=numwant,
        offers=tuple(offers),
        answer=answer,
        left=left,
        event=event,
        offers_truncated=truncated,
    )


def _parse_scrape(obj: dict[str, object]) -> ClientScrape:
    raw = obj.get("info_hash")
    if raw is None:
        return ClientScrape(())
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise RelayProtocolError("invalid info_hash")
    hashes: list[str] = []
    for item in raw:
        if not _is_id(item):
            raise RelayProtocolError("invalid info_hash")
        assert isinstance(item, str)
        hashes.append(item)
    return ClientScrape(tuple(hashes))


def _opaque_json(value: object, kind: str) -> str:
    if not isinstance(value, dict | str):
        raise RelayProtocolError(f"{kind} must be an object or a string")
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as exc:  # pragma: no cover - parse already bounds it
        raise RelayProtocolError(f"{kind} cannot be re-encoded") from exc


def _sdp_or_none(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        sdp = value.get("sdp")
        if isinstance(sdp, str):
            return sdp
    return None


# --------------------------------------------------------------------------------------
# Tracker side: tracker -> client encoders
# --------------------------------------------------------------------------------------


def encode_announce_response(
    info_hash: str, *, interval: float, complete: int, incomplete: int
) -> str:
    """The reply to an announce::

    {"action":"announce","interval":…,"info_hash":…,"complete":…,"incomplete":…}

    ``interval`` is in seconds and is written as an integer when it is integral.
    """
    return _dumps_ascii(
        {
            "action": _ANNOUNCE,
            "interval": _json_number(interval),
            "info_hash": info_hash,
            "complete": complete,
            "incomplete": incomplete,
        }
    )


def _encode_relayed(kind: str, value_json: str, offer_id: str, peer_id: str, info_hash: str) -> str:
    # The offer/answer value is forwarded as received (already compact JSON).
    return (
        f'{{"action":"announce","{kind}":{value_json},"offer_id":{_dumps_ascii(offer_id)},'
        f'"peer_id":{_dumps_ascii(peer_id)},"info_hash":{_dumps_ascii(info_hash)}}}'
    )


def encode_relayed_offer(info_hash: str, peer_id: str, offer: ClientOffer) -> str:
    """An offer from ``peer_id`` forwarded to another peer of the swarm, with the ``offer``
    value as received::

        {"action":"announce","offer":…,"offer_id":…,"peer_id":…,"info_hash":…}
    """
    return _encode_relayed("offer", offer.offer_json, offer.offer_id, peer_id, info_hash)


def encode_relayed_answer(info_hash: str, peer_id: str, answer: ClientAnswer) -> str:
    """An answer from ``peer_id`` routed to ``answer.to_peer_id``, value as received::

    {"action":"announce","answer":…,"offer_id":…,"peer_id":…,"info_hash":…}
    """
    return _encode_relayed("answer", answer.answer_json, answer.offer_id, peer_id, info_hash)


def encode_scrape_response(files: Mapping[str, tuple[int, int]], *, interval: float) -> str:
    """The reply to a scrape; ``files`` maps info_hash to ``(complete, incomplete)``::

    {"action":"scrape","files":{<info_hash>:{"complete":…,"incomplete":…,
     "downloaded":…}},"flags":{"min_request_interval":…}}

    As in bittorrent-tracker, ``downloaded`` repeats ``complete`` (a lower bound).
    """
    return _dumps_ascii(
        {
            "action": "scrape",
            "files": {
                info_hash: {"complete": complete, "incomplete": incomplete, "downloaded": complete}
                for info_hash, (complete, incomplete) in files.items()
            },
            "flags": {"min_request_interval": _json_number(interval)},
        }
    )


def encode_failure(reason: str, *, action: str | None = None, info_hash: str | None = None) -> str:
    """A failure reply: ``{"action":…,"failure reason":…,"info_hash":…}``.

    ``action`` and ``info_hash`` are omitted when ``None``; bittorrent-tracker omits both
    when the request itself could not be parsed. Trystero logs the reason and otherwise
    ignores the message.
    """
    message: dict[str, object] = {}
    if action is not None:
        message["action"] = action
    message["failure reason"] = reason
    if info_hash is not None:
        message["info_hash"] = info_hash
    return _dumps_ascii(message)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _js_length(value: str) -> int:
    """``value.length`` in JavaScript: code points above the BMP count twice."""
    if value.isascii():
        return len(value)
    return len(value) + sum(1 for char in value if ord(char) > 0xFFFF)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= ID_LENGTH and _js_length(value) == ID_LENGTH


def _check_local_id(name: str, value: str) -> None:
    if not _is_id(value):
        raise UsageError(f"{name} must be a {ID_LENGTH}-character string, got {value!r}")


def _required_id(obj: dict[str, object], key: str, note: str = "") -> str:
    value = obj.get(key)
    if not _is_id(value):
        raise RelayProtocolError(f"invalid `{key}`{' ' + note if note else ''}")
    assert isinstance(value, str)
    return value


def _required_str(obj: dict[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RelayProtocolError(f"{key} must be a non-empty string")
    return value


def _optional_str(obj: dict[str, object], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise RelayProtocolError(f"{key} must be a string")


def _optional_float(obj: dict[str, object], key: str) -> float | None:
    value = obj.get(key)
    return None if value is None else _as_float(value, key)


def _as_float(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RelayProtocolError(f"{key} must be a number")
    try:
        return float(value)
    except OverflowError as exc:
        raise RelayProtocolError(f"{key} is out of range") from exc


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _load_object(text: str | bytes, max_size: int) -> dict[str, object]:
    """Decode one JSON object, enforcing the size bound; RelayProtocolError otherwise."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > max_size:
            raise RelayProtocolError(f"message larger than {max_size} bytes")
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RelayProtocolError("message is not UTF-8") from exc
    elif isinstance(text, str):
        if len(text) > max_size or len(text.encode("utf-8", "surrogatepass")) > max_size:
            raise RelayProtocolError(f"message larger than {max_size} bytes")
        decoded = text
    else:
        raise RelayProtocolError(f"message must be str or bytes, not {type(text).__name__}")
    try:
        obj = json.loads(decoded, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise RelayProtocolError("message is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise RelayProtocolError("message is not a JSON object")
    return obj


def _json_number(value: float) -> int | float:
    if isinstance(value, int):
        return value
    return int(value) if math.isfinite(value) and value.is_integer() else value


def _dumps_ascii(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _js_stringify(value: object) -> str:
    """``JSON.stringify(value)`` for dicts, lists, strings and ints.

    Python's compact ``ensure_ascii=False`` output already matches V8's, escapes included
    (``\\n``, ``\\u001f`` in lower-case hex, …), except for surrogates: a Python string may
    hold a UTF-16 surrogate pair as two code points (JS would see one character) or a lone
    surrogate (well-formed ``JSON.stringify`` writes it as ``\\udxxx``). Pairs are joined
    first, then lone surrogates are escaped, so the result is always encodable as UTF-8.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _SURROGATE.search(text) is None:
        return text
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
