"""Action chunks: payload typing, the 36-byte chunk header, chunking and reassembly
(wire notes §6.3–§6.5).

Chunk layout::

    offset 0   32 bytes  action type, UTF-8, NUL-padded
    offset 32   2 bytes  nonce, uint16 big-endian (per action type, +1 per send, wraps)
    offset 34   1 byte   tag bits: 0x01 last, 0x02 metadata, 0x04 binary, 0x08 "JSON"
    offset 35   1 byte   progress, JS Math.round((i + 1) / total * 255)
    offset 36  ≤16348    payload slice (the metadata chunk carries the whole metadata JSON)

A send with metadata puts ``JSON.stringify(meta)`` in an extra first chunk. An empty payload
is one chunk (the metadata chunk when there is metadata, flagged last and meta).

Data path notes: :func:`iter_chunks` builds each chunk (optionally already wrapped in a
room frame prefix) with exactly one copy of its payload slice; :func:`parse_chunk` returns a
zero-copy view of the payload; :class:`Reassembler` keeps those views and joins them once
when the last chunk arrives.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from peermesh._limits import MemoryBudget
from peermesh._wire.jscompat import js_round, utf8_encode
from peermesh.errors import ProtocolError, UsageError

__all__ = [
    "HEADER_SIZE",
    "HSDATA",
    "HSREADY",
    "INTERNAL_PREFIX",
    "LEAVE",
    "MAX_CHUNK_PAYLOAD",
    "MAX_CHUNK_SIZE",
    "MAX_META_PAYLOAD",
    "MAX_NONCE",
    "PING",
    "PONG",
    "RESPONSE",
    "SIGNAL",
    "STREAM",
    "TAG_BINARY",
    "TAG_JSON",
    "TAG_LAST",
    "TAG_META",
    "TRACK",
    "TYPE_FIELD_SIZE",
    "ActionChunk",
    "LimitExceeded",
    "MessageReceived",
    "PayloadKind",
    "Reassembler",
    "ReceiveProgress",
    "chunk_count",
    "decode_payload",
    "decoded_size",
    "encode_action_type",
    "encode_metadata",
    "encode_payload",
    "iter_chunks",
    "next_nonce",
    "parse_chunk",
]

logger = logging.getLogger(__name__)

HEADER_SIZE: Final = 36
TYPE_FIELD_SIZE: Final = 32
MAX_CHUNK_SIZE: Final = 16384
MAX_CHUNK_PAYLOAD: Final = MAX_CHUNK_SIZE - HEADER_SIZE  # 16348
MAX_META_PAYLOAD: Final = 65536 - 3 - 64 - HEADER_SIZE  # 65433
"""Largest metadata JSON accepted in (and produced for) one metadata chunk.

Trystero never splits metadata: the metadata chunk holds all of it, whatever its size. We
cap it so that the framed chunk (67-byte room prefix + header + metadata) fits the 64 KiB
SCTP ``max-message-size`` aiortc advertises."""
MAX_NONCE: Final = 0xFFFF

TAG_LAST: Final = 0x01
TAG_META: Final = 0x02
TAG_BINARY: Final = 0x04
TAG_JSON: Final = 0x08

INTERNAL_PREFIX: Final = "@_"
HSREADY: Final = "@_hsready"
HSDATA: Final = "@_hsdata"
LEAVE: Final = "@_leave"
PING: Final = "@_ping"
PONG: Final = "@_pong"
SIGNAL: Final = "@_signal"
STREAM: Final = "@_stream"
TRACK: Final = "@_track"
RESPONSE: Final = "@_response"

_PROGRESS_MAX = 255
_TAIL = struct.Struct(">HBB")  # nonce, tag, progress
_EMPTY = b""


class PayloadKind(enum.Enum):
    """How a payload is encoded, from the tag bits (0x04 wins over 0x08)."""

    TEXT = "text"
    """A JS ``string``: UTF-8, neither 0x04 nor 0x08."""
    JSON = "json"
    """Any other non-binary JS value: ``JSON.stringify`` as UTF-8, tag 0x08."""
    BINARY = "binary"
    """Raw bytes (ArrayBuffer, TypedArray, Blob): tags 0x04 and 0x08 both set."""


_KIND_TAG: Final = MappingProxyType(
    {
        PayloadKind.TEXT: 0,
        PayloadKind.JSON: TAG_JSON,
        PayloadKind.BINARY: TAG_BINARY | TAG_JSON,
    }
)


# --------------------------------------------------------------------------- payloads


def _json_dumps(data: object, *, ensure_ascii: bool) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"cannot send a {type(data).__name__} value: it is not JSON-serialisable ({exc})"
        ) from exc


def _encode_json(value: object) -> bytes:
    text = _json_dumps(value, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: JSON.stringify escapes them as \udXXX; ensure_ascii does too.
        return _json_dumps(value, ensure_ascii=True).encode("ascii")


def encode_payload(data: object) -> tuple[PayloadKind, bytes]:
    """Type and encode a value to send, as Trystero does for the equivalent JS value.

    - ``str`` → :attr:`PayloadKind.TEXT`, UTF-8 (lone surrogates become U+FFFD, as with
      ``TextEncoder``);
    - ``bytes``, ``bytearray``, ``memoryview`` → :attr:`PayloadKind.BINARY` (``bytes`` is
      returned as is, the others are copied);
    - anything else → :attr:`PayloadKind.JSON`, compact ``json.dumps`` as UTF-8. ``None`` is
      JSON ``null`` and allowed (JS ``undefined``, which Trystero rejects, has no Python
      equivalent).

    Raises ``TypeError`` if the value cannot be represented as JSON: unsupported types,
    NaN or infinities, circular or too deeply nested structures.
    """
    if isinstance(data, str):
        return PayloadKind.TEXT, utf8_encode(data)
    if isinstance(data, bytes):
        return PayloadKind.BINARY, data if type(data) is bytes else bytes(data)
    if isinstance(data, bytearray | memoryview):
        return PayloadKind.BINARY, bytes(data)
    return PayloadKind.JSON, _encode_json(data)


def encode_metadata(meta: object) -> bytes:
    """Encode metadata for :func:`iter_chunks` as Trystero does: ``JSON.stringify`` as UTF-8.

    Any JSON value is allowed, ``None`` (JSON ``null``) included; "no metadata" is expressed
    by passing ``metadata=None`` to :func:`iter_chunks` instead of calling this. Raises
    ``TypeError`` like :func:`encode_payload` for values that are not JSON-serialisable.
    """
    return _encode_json(meta)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _decode_text(data: bytes | memoryview, what: str) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8") from exc


def _decode_json(data: bytes | memoryview, what: str) -> object:
    text = _decode_text(data, what)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid JSON") from exc


_ASTRAL = re.compile(rb"[\xf0-\xff]")  # lead bytes of 4-byte UTF-8 sequences
_WIDE = re.compile(rb"[\xc4-\xef]")  # lead bytes of characters above U+00FF
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # JSON escapes of U+D800-U+DFFF
_ESCAPED_WIDE = re.compile(rb"\\u(?!00)[0-9a-fA-F]{4}")  # ... of characters above U+00FF
#: Upper bounds, measured on CPython 3.11 (64-bit), of what one structural character of JSON
#: text can add to the decoded value: an object or array (with its slot in its container),
#: a further element, a further member (a new key string and the dict's growth).
_JSON_OPEN_COST = 72
_JSON_COMMA_COST = 64
_JSON_COLON_COST = 160
_OBJECT_OVERHEAD = 256


def _text_size(data: bytes, *, escapes: bool = False) -> int:
    """Peak bytes of decoding UTF-8 ``data`` to a ``str`` (measured on CPython 3.11): the
    result takes 1, 2 or 4 bytes per character, decided by its widest one, and the decoder
    widens its buffer as it meets wider characters. With ``escapes`` (JSON text), a
    ``\\uXXXX`` escape counts as the character it stands for (surrogates as a pair may
    stand for one above the BMP)."""
    escaped = escapes and b"\\u" in data
    if data.isascii() and not escaped:
        factor = 1
    elif _ASTRAL.search(data) or (escaped and _ESCAPED_SURROGATE.search(data)):
        factor = 9
    elif _WIDE.search(data) or (escaped and _ESCAPED_WIDE.search(data)):
        factor = 4
    else:
        factor = 2
    return factor * len(data) + _OBJECT_OVERHEAD


def decoded_size(kind: PayloadKind, data: bytes | memoryview) -> int:
    """An upper estimate of the bytes the value :func:`decode_payload` makes of ``data`` will
    hold, computed without decoding it (a few passes of C code over the bytes).

    JSON text may grow more than 20× when decoded (``[{},{},…]``); the estimate counts the
    structural characters, including those inside strings, so it may exceed the real size
    (about 2-3× for ordinary documents) but not fall below it.
    """
    if kind is PayloadKind.BINARY:
        return len(data) + _OBJECT_OVERHEAD
    raw = data if type(data) is bytes else bytes(data)
    size = _text_size(raw, escapes=kind is PayloadKind.JSON)
    if kind is PayloadKind.JSON:
        count = raw.count
        size += (
            _JSON_OPEN_COST * (count(b"{") + count(b"["))
            + _JSON_COMMA_COST * count(b",")
            + _JSON_COLON_COST * count(b":")
        )
    return size


def decode_payload(kind: PayloadKind, data: bytes | memoryview) -> object:
    """Decode a reassembled payload: BINARY → ``bytes``, TEXT → ``str``, JSON → the value.

    JSON is parsed as ``JSON.parse`` would: ``NaN``/``Infinity`` are rejected. Raises
    :class:`ProtocolError` for invalid UTF-8 or invalid (or too deeply nested) JSON.
    """
    if kind is PayloadKind.BINARY:
        return data if type(data) is bytes else bytes(data)
    if kind is PayloadKind.TEXT:
        return _decode_text(data, "text payload")
    return _decode_json(data, "JSON payload")


# --------------------------------------------------------------------------- header


def encode_action_type(name: str) -> bytes:
    """The 32-byte, NUL-padded type field for action ``name``. Cache the result.

    Raises :class:`UsageError` if ``name`` is empty, contains NUL (receivers strip NULs, so
    it would arrive under another name), cannot be encoded as UTF-8, or its UTF-8 form is
    longer than 32 bytes.
    """
    if not name:
        raise UsageError("action name must not be empty")
    if "\0" in name:
        raise UsageError("action name must not contain NUL characters")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("action name is not encodable as UTF-8") from None
    if len(raw) > TYPE_FIELD_SIZE:
        raise UsageError(
            f"action name {name!r} is {len(raw)} bytes in UTF-8; the limit is {TYPE_FIELD_SIZE}"
        )
    return raw.ljust(TYPE_FIELD_SIZE, b"\0")


def next_nonce(nonce: int) -> int:
    """The nonce that follows ``nonce``: ``(nonce + 1) & 0xFFFF``."""
    return (nonce + 1) & MAX_NONCE


@dataclass(frozen=True, slots=True)
class ActionChunk:
    """One parsed action chunk. ``payload`` may be a zero-copy view of the frame."""

    action_type: str
    nonce: int
    last: bool
    is_meta: bool
    kind: PayloadKind
    progress: int
    payload: bytes | memoryview


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view


def parse_chunk(
    data: bytes | memoryview, *, max_meta_payload: int = MAX_META_PAYLOAD
) -> ActionChunk:
    """Parse one action chunk (the part of a room frame after the token).

    The action type is the 32-byte field decoded as strict UTF-8 with every NUL removed.
    ``payload`` is a zero-copy ``memoryview`` slice of ``data``; ``data`` must not be mutated
    while it is in use. Tag bits other than 0x01–0x08 are ignored, as Trystero ignores them.

    Raises :class:`ProtocolError` if ``data`` is shorter than the 36-byte header, the type
    field is not valid UTF-8 or is empty after removing NULs, or the payload is longer than
    :data:`MAX_CHUNK_PAYLOAD` (``max_meta_payload`` for a metadata chunk, which Trystero
    never splits).
    """
    view = _byte_view(data)
    size = len(view)
    if size < HEADER_SIZE:
        raise ProtocolError(f"action chunk of {size} bytes is shorter than its header")
    try:
        action_type = str(view[:TYPE_FIELD_SIZE], "utf-8").replace("\0", "")
    except UnicodeDecodeError as exc:
        raise ProtocolError("action type is not valid UTF-8") from exc
    if not action_type:
        raise ProtocolError("action type is empty")
    nonce, tag, progress = _TAIL.unpack_from(view, TYPE_FIELD_SIZE)
    is_meta = bool(tag & TAG_META)
    limit = max_meta_payload if is_meta else MAX_CHUNK_PAYLOAD
    if size - HEADER_SIZE > limit:
        raise ProtocolError(
            f"action chunk payload of {size - HEADER_SIZE} bytes exceeds the {limit}-byte limit"
        )
    if tag & TAG_BINARY:
        kind = PayloadKind.BINARY
    elif tag & TAG_JSON:
        kind = PayloadKind.JSON
    else:
        kind = PayloadKind.TEXT
    return ActionChunk(
        action_type, nonce, bool(tag & TAG_LAST), is_meta, kind, progress, view[HEADER_SIZE:]
    )


# --------------------------------------------------------------------------- chunking


def chunk_count(payload_len: int, has_meta: bool) -> int:
    """Number of chunks for a payload: ``ceil(len / 16348) + (1 if meta)``, at least 1."""
    count = -(-payload_len // MAX_CHUNK_PAYLOAD) + (1 if has_meta else 0)
    return count or 1


def _progress_byte(index: int, total: int) -> int:
    return js_round((index + 1) / total * _PROGRESS_MAX)


def _generate_chunks(
    head: bytes,
    nonce: int,
    base_tag: int,
    payload: memoryview,
    metadata: bytes | None,
    total: int,
) -> Iterator[bytes]:
    pack = _TAIL.pack
    join = _EMPTY.join
    index = 0
    if metadata is not None:
        tag = base_tag | TAG_META | (TAG_LAST if total == 1 else 0)
        yield join((head, pack(nonce, tag, _progress_byte(0, total)), metadata))
        index = 1
    offset = 0
    last_index = total - 1
    while index < total:
        end = offset + MAX_CHUNK_PAYLOAD
        tag = base_tag | TAG_LAST if index == last_index else base_tag
        yield join((head, pack(nonce, tag, _progress_byte(index, total)), payload[offset:end]))
        offset = end
        index += 1


def iter_chunks(
    type_field: bytes,
    nonce: int,
    kind: PayloadKind,
    payload: bytes | bytearray | memoryview,
    metadata: bytes | None = None,
    *,
    prefix: bytes = b"",
) -> Iterator[bytes]:
    """Yield the chunks of one send, in order, byte-compatible with Trystero.

    ``type_field`` comes from :func:`encode_action_type`; ``metadata`` is already-encoded
    JSON (``None`` for no metadata). Each yielded chunk is ``prefix + header + slice``,
    built with one copy of the slice; pass ``prefix=room_frame_prefix(token)`` to get
    ready-to-send room frames. ``payload`` is viewed, not copied, and must not be mutated
    while iterating. Chunk count is :func:`chunk_count`; see the module docstring for the
    layout.

    Arguments are checked eagerly (before the first chunk): raises :class:`UsageError` if
    ``type_field`` is not 32 bytes, ``nonce`` is outside 0–65535, or ``metadata`` is longer
    than :data:`MAX_META_PAYLOAD`.
    """
    if len(type_field) != TYPE_FIELD_SIZE:
        raise UsageError(f"type field must be {TYPE_FIELD_SIZE} bytes, got {len(type_field)}")
    if not 0 <= nonce <= MAX_NONCE:
        raise UsageError(f"nonce must be in 0-{MAX_NONCE}, got {nonce}")
    if metadata is not None and len(metadata) > MAX_META_PAYLOAD:
        raise UsageError(
            f"metadata of {len(metadata)} bytes exceeds the {MAX_META_PAYLOAD}-byte limit"
        )
    view = _byte_view(payload)
    total = chunk_count(len(view), metadata is not None)
    meta = None if metadata is None else bytes(metadata)
    return _generate_chunks(prefix + type_field, nonce, _KIND_TAG[kind], view, meta, total)


# --------------------------------------------------------------------------- reassembly


@dataclass(frozen=True, slots=True)
class ReceiveProgress:
    """A non-final chunk of a multi-chunk message arrived.

    ``fraction`` is the sender's progress byte / 255; ``metadata`` is the decoded metadata
    if the message has any (it arrives first), else ``None``.
    """

    peer_id: str
    action_type: str
    nonce: int
    fraction: float
    metadata: object | None


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message is complete. ``data`` is decoded according to ``kind``.

    ``progress`` is the last chunk's progress byte / 255 (1.0 from any Trystero sender), so
    a caller mirroring Trystero's ``onReceiveProgress`` can report it from this event.
    ``metadata`` is ``None`` both for "no metadata" and for JSON ``null`` metadata.
    ``size`` estimates the bytes ``data`` and ``metadata`` hold (see :func:`decoded_size`):
    what holding this message costs the sender's budget.
    """

    peer_id: str
    action_type: str
    nonce: int
    kind: PayloadKind
    data: object
    metadata: object | None
    progress: float = 1.0
    size: int = field(default=0, compare=False)


class LimitExceeded(ProtocolError):
    """A well-formed message the reassembler refused because it breaks a limit (size,
    messages in progress, the memory budget), not the format. ``metadata`` is its decoded
    metadata when that was read before the refusal (so that a refused request can still be
    answered), else ``None``."""

    def __init__(self, message: str, metadata: object | None) -> None:
        super().__init__(message)
        self.metadata = metadata


class _Partial:
    """A message being reassembled (internal, mutable)."""

    __slots__ = ("kind", "meta_size", "metadata", "parts", "size")

    def __init__(self, kind: PayloadKind, metadata: object | None, meta_size: int) -> None:
        self.kind = kind
        self.metadata = metadata
        self.meta_size = meta_size
        self.parts: list[bytes | memoryview] = []
        self.size = 0  # payload bytes in ``parts``


_Key = tuple[str, int]


class Reassembler:
    """Bounded reassembly of action chunks into messages, per (peer, action type, nonce).

    Feed parsed chunks in arrival order (the data channel is ordered). :meth:`feed` returns
    a :class:`ReceiveProgress` for every non-final chunk of a multi-chunk message (the
    metadata chunk included, so callers see Trystero's ``onReceiveProgress`` sequence), a
    :class:`MessageReceived` for the last chunk, or ``None`` for a chunk that is ignored.

    Limits (each breach raises :class:`ProtocolError`; the caller logs, counts, continues):

    - ``max_message_size``: payload bytes of one message;
    - ``max_partial_per_peer``: messages in progress per peer. A chunk that would start one
      more is **rejected** (older transfers are kept intact, the newest loses);
    - ``max_meta_size``: bytes of one metadata JSON;
    - ``budget``: what a peer's partial messages hold (payload bytes, plus the
      :func:`decoded_size` of their metadata) is charged to the peer in this
      :class:`~peermesh._limits.MemoryBudget`, and a completed text or JSON message is
      decoded only if its :func:`decoded_size` fits the budget too (it is not charged: the
      caller charges what it keeps). Without a ``budget``, a private one caps each peer at
      ``max_buffered_per_peer`` bytes. When a charge is refused, ``reclaim(peer_id,
      nbytes)`` (if given) may free what else the caller holds for the peer and return
      whether ``nbytes`` now fit; the charge is then tried once more.

    When a message is rejected before its last chunk, its key is remembered as *poisoned*
    (at most ``max_poisoned_per_peer`` keys per peer, oldest forgotten first): its remaining
    chunks are silently ignored (``None``) and the key is cleared by its last chunk.
    Without this, the next chunk would look like the first chunk of a new message and a
    truncated message could be delivered.

    Trystero's chunks carry no index, so a chunk that arrives for a key with no partial is
    always taken as the first chunk of a new message: a lost first chunk (impossible on a
    reliable ordered channel) cannot be detected. Also rejected, with the partial dropped:
    a metadata chunk after the first chunk, and a payload kind that changes mid-message.

    The reassembler keeps references to chunk payload views instead of copying them; a
    view of a writable buffer, or one that would pin a buffer more than twice its size, is
    copied. Joins happen once per message. After any exception its state is consistent.
    Call :meth:`drop_peer` when a peer leaves (it releases the peer's charges). Not
    thread-safe; no I/O, no clock.
    """

    def __init__(
        self,
        *,
        max_message_size: int = 64 * 1024 * 1024,
        max_partial_per_peer: int = 64,
        max_meta_size: int = 64 * 1024,
        max_buffered_per_peer: int = 128 * 1024 * 1024,
        max_poisoned_per_peer: int = 256,
        budget: MemoryBudget | None = None,
        reclaim: Callable[[str, int], bool] | None = None,
    ) -> None:
        """Raises :class:`UsageError` if a limit is not a positive integer."""
        for name, value in (
            ("max_message_size", max_message_size),
            ("max_partial_per_peer", max_partial_per_peer),
            ("max_meta_size", max_meta_size),
            ("max_buffered_per_peer", max_buffered_per_peer),
            ("max_poisoned_per_peer", max_poisoned_per_peer),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UsageError(f"{name} must be a positive int, got {value!r}")
        self._max_message_size = max_message_size
        self._max_partials = max_partial_per_peer
        self._max_meta_size = max_meta_size
        self._max_poisoned = max_poisoned_per_peer
        self._budget = budget or MemoryBudget(2**62, max_buffered_per_peer)
        self._reclaim = reclaim
        self._partials: dict[str, dict[_Key, _Partial]] = {}
        self._buffered: dict[str, int] = {}  # what this reassembler charged, per peer
        self._poisoned: dict[str, dict[_Key, None]] = {}
        self._total = 0

    # ------------------------------------------------------------------ queries

    def pending(self, peer_id: str | None = None) -> int:
        """Number of partial messages held, for one peer or (``None``) for all peers."""
        if peer_id is None:
            return self._total
        return len(self._partials.get(peer_id, ()))

    def buffered(self, peer_id: str | None = None) -> int:
        """Bytes charged for partial messages (payload and decoded metadata), for one peer
        or for all peers."""
        if peer_id is None:
            return sum(self._buffered.values())
        return self._buffered.get(peer_id, 0)

    def poisoned(self, peer_id: str) -> int:
        """Number of rejected messages whose remaining chunks are being ignored."""
        return len(self._poisoned.get(peer_id, ()))

    # ------------------------------------------------------------------ mutation

    def drop_peer(self, peer_id: str) -> None:
        """Forget everything about ``peer_id`` (call when it leaves). Never raises."""
        partials = self._partials.pop(peer_id, None)
        if partials:
            self._total -= len(partials)
        self._budget.release(peer_id, self._buffered.pop(peer_id, 0))
        self._poisoned.pop(peer_id, None)

    def clear(self) -> None:
        """Forget every peer."""
        for peer_id in list(self._buffered):
            self.drop_peer(peer_id)
        self._partials.clear()
        self._poisoned.clear()
        self._total = 0

    def feed(self, peer_id: str, chunk: ActionChunk) -> ReceiveProgress | MessageReceived | None:
        """Add one chunk from ``peer_id``; see the class docstring for results and limits.

        Raises :class:`ProtocolError` when the chunk breaks a limit or the format (invalid
        metadata or payload encoding included); the affected message is dropped.
        """
        key = (chunk.action_type, chunk.nonce)
        poisoned = self._poisoned.get(peer_id)
        if poisoned is not None and key in poisoned:
            if chunk.last:
                del poisoned[key]
                if not poisoned:
                    del self._poisoned[peer_id]
            return None

        peer_partials = self._partials.get(peer_id)
        partial = None if peer_partials is None else peer_partials.get(key)
        if partial is None:
            return self._start(peer_id, key, chunk, peer_partials)
        return self._continue(peer_id, key, chunk, partial)

    # ------------------------------------------------------------------ internals

    def _reject(
        self,
        peer_id: str,
        key: _Key,
        chunk: ActionChunk,
        reason: str,
        *,
        limit: bool = False,
        metadata: object | None = None,
    ) -> ProtocolError:
        """Poison ``key`` unless ``chunk`` ends its message; return the error to raise
        (:class:`LimitExceeded`, carrying ``metadata``, when ``limit``)."""
        if not chunk.last:
            poisoned = self._poisoned.setdefault(peer_id, {})
            if len(poisoned) >= self._max_poisoned:
                del poisoned[next(iter(poisoned))]
            poisoned[key] = None
        logger.debug("dropping message %s#%d from %s: %s", key[0], key[1], peer_id, reason)
        message = f"action {key[0]!r} nonce {key[1]} from {peer_id}: {reason}"
        return LimitExceeded(message, metadata) if limit else ProtocolError(message)

    def _charge(self, peer_id: str, nbytes: int) -> bool:
        budget = self._budget
        if not budget.charge(peer_id, nbytes) and not (
            self._reclaim is not None
            and self._reclaim(peer_id, nbytes)
            and budget.charge(peer_id, nbytes)
        ):
            return False
        self._buffered[peer_id] = self._buffered.get(peer_id, 0) + nbytes
        return True

    def _remove(self, peer_id: str, key: _Key, partial: _Partial) -> None:
        """Drop ``partial`` and release its charge (a no-op if its peer was dropped)."""
        peer_partials = self._partials.get(peer_id)
        if peer_partials is None or peer_partials.pop(key, None) is not partial:
            return
        self._total -= 1
        if not peer_partials:
            del self._partials[peer_id]
        charged = partial.size + partial.meta_size
        self._budget.release(peer_id, charged)
        remaining = self._buffered.get(peer_id, 0) - charged
        if remaining > 0:
            self._buffered[peer_id] = remaining
        else:
            self._buffered.pop(peer_id, None)

    def _complete(
        self,
        peer_id: str,
        key: _Key,
        chunk: ActionChunk,
        data: bytes | memoryview,
        metadata: object | None,
        meta_size: int,
    ) -> MessageReceived:
        size = decoded_size(chunk.kind, data)
        if chunk.kind is not PayloadKind.BINARY and not self._budget.fits(peer_id, size):
            raise self._reject(
                peer_id,
                key,
                chunk,
                f"decoding it (~{size} bytes) would exceed the memory budget",
                limit=True,
                metadata=metadata,
            )
        value = decode_payload(chunk.kind, data)
        return MessageReceived(
            peer_id,
            chunk.action_type,
            chunk.nonce,
            chunk.kind,
            value,
            metadata,
            chunk.progress / _PROGRESS_MAX,
            size + meta_size,
        )

    @staticmethod
    def _keep(payload: bytes | memoryview) -> bytes | memoryview:
        """Keep a view of an immutable buffer, unless it would pin a much larger one."""
        if isinstance(payload, memoryview):
            owner = payload.obj
            if (
                payload.readonly
                and owner is not None
                and payload.nbytes * 2 >= memoryview(owner).nbytes
            ):
                return payload
            return payload.tobytes()
        return payload

    def _start(
        self,
        peer_id: str,
        key: _Key,
        chunk: ActionChunk,
        peer_partials: dict[_Key, _Partial] | None,
    ) -> ReceiveProgress | MessageReceived:
        payload = chunk.payload
        size = len(payload)
        metadata: object | None = None
        meta_size = 0
        if chunk.is_meta:
            if size > self._max_meta_size:
                raise self._reject(
                    peer_id, key, chunk, f"metadata of {size} bytes is too large", limit=True
                )
            meta_size = decoded_size(PayloadKind.JSON, payload)
            if not self._budget.fits(peer_id, meta_size):
                raise self._reject(
                    peer_id, key, chunk, "its metadata exceeds the memory budget", limit=True
                )
            try:
                metadata = _decode_json(payload, "metadata")
            except ProtocolError as exc:
                raise self._reject(peer_id, key, chunk, str(exc)) from exc
            if chunk.last:  # empty payload with metadata: a one-chunk message
                return self._complete(peer_id, key, chunk, _EMPTY, metadata, meta_size)
            size = 0
        elif size > self._max_message_size:
            raise self._reject(peer_id, key, chunk, "message exceeds the size limit", limit=True)
        elif chunk.last:  # the common one-chunk message: no state at all
            return self._complete(peer_id, key, chunk, payload, None, 0)

        if peer_partials is not None and len(peer_partials) >= self._max_partials:
            raise self._reject(
                peer_id,
                key,
                chunk,
                "too many partial messages from this peer",
                limit=True,
                metadata=metadata,
            )
        if not self._charge(peer_id, size + meta_size):
            raise self._reject(
                peer_id,
                key,
                chunk,
                "peer's share of the memory budget is full",
                limit=True,
                metadata=metadata,
            )

        partial = _Partial(chunk.kind, metadata, meta_size)
        if size:
            partial.parts.append(self._keep(payload))
            partial.size = size
        self._partials.setdefault(peer_id, {})[key] = partial
        self._total += 1
        return ReceiveProgress(
            peer_id, chunk.action_type, chunk.nonce, chunk.progress / _PROGRESS_MAX, metadata
        )

    def _continue(
        self, peer_id: str, key: _Key, chunk: ActionChunk, partial: _Partial
    ) -> ReceiveProgress | MessageReceived:
        payload = chunk.payload
        size = len(payload)
        reason = None
        limit = True
        if chunk.is_meta:
            reason, limit = "metadata chunk in the middle of a message", False
        elif chunk.kind is not partial.kind:
            reason = f"payload kind changed from {partial.kind.value} to {chunk.kind.value}"
            limit = False
        elif partial.size + size > self._max_message_size:
            reason = "message exceeds the size limit"
        elif not chunk.last and size and not self._charge(peer_id, size):
            reason = "peer's share of the memory budget is full"
        if reason is not None:
            self._remove(peer_id, key, partial)
            raise self._reject(peer_id, key, chunk, reason, limit=limit, metadata=partial.metadata)

        if chunk.last:
            self._remove(peer_id, key, partial)
            parts = partial.parts
            if size:
                parts.append(payload)
            data: bytes | memoryview = parts[0] if len(parts) == 1 else _EMPTY.join(parts)
            return self._complete(peer_id, key, chunk, data, partial.metadata, partial.meta_size)

        if size:
            partial.parts.append(self._keep(payload))
            partial.size += size
        return ReceiveProgress(
            peer_id,
            chunk.action_type,
            chunk.nonce,
            chunk.progress / _PROGRESS_MAX,
            partial.metadata,
        )
