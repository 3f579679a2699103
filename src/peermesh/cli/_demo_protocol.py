"""The control channel between ``peermesh demo`` (the parent) and its peer processes.

One JSON object per line, UTF-8: commands on the child's stdin, events on its stdout.
The child's stderr carries only its log records and crash tracebacks, never protocol.

Commands (parent → child). Each carries an integer ``id``; the child answers it with
exactly one ``result`` event carrying the same ``id``:

==============  ===============================================  ==========================
``cmd``         other fields                                     result fields (if ok)
==============  ===============================================  ==========================
``join``        ``tracker_url``, ``app_id``, ``room_id``         ``peer_id``
``chat``        ``text``, ``targets`` (peer ids)                 --
``send_file``   ``size`` (bytes), ``targets`` (peer ids)         ``sha256``, ``size``
``ping``        ``targets`` (peer ids)                           ``rtt_ms`` {peer id: ms}
``leave``       --                                               --
``exit``        -- (no result; closing stdin means the same)     --
==============  ===============================================  ==========================

A failed command is answered ``{"event": "result", "id": n, "ok": false, "error": "..."}``.

Events (child → parent), besides ``result``:

- ``ready`` ``{peer_id, name, pid}`` -- imports done, waiting for ``join``;
- ``peer_joined`` / ``peer_left`` ``{peer_id}`` -- room membership changes;
- ``join_error`` ``{peer_id, error}`` -- a peer could not be admitted;
- ``chat`` ``{sender, text}`` -- a chat message arrived;
- ``file_sending`` ``{size, sha256}`` -- the sender starts sending (timing starts here);
- ``progress`` ``{direction: "send"|"receive", peer_id, fraction}`` -- file progress, at
  most every :data:`PROGRESS_INTERVAL` seconds per peer plus the final 1.0;
- ``file_received`` ``{sender, size, sha256, expected_sha256}`` -- a whole file arrived.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

__all__ = [
    "APP_ID",
    "PROGRESS_INTERVAL",
    "ProtocolViolation",
    "decode_line",
    "encode_line",
    "field",
]

#: The app id every demo peer joins with.
APP_ID = "peermesh-demo"
#: Minimum seconds between two progress events for the same peer and direction.
PROGRESS_INTERVAL = 0.05

Message = dict[str, Any]
T = TypeVar("T")


class ProtocolViolation(ValueError):
    """A control line that is not a JSON object, or lacks a field of the right type."""


def encode_line(message: Message) -> str:
    """``message`` as one line of compact JSON, newline included."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n"


def decode_line(line: str | bytes) -> Message:
    """Parse one control line into a JSON object; raises :class:`ProtocolViolation`."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolViolation(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolViolation("not a JSON object")
    return message


def field(message: Message, name: str, kind: type[T]) -> T:
    """``message[name]``, checked to be a ``kind``; raises :class:`ProtocolViolation`."""
    value = message.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolViolation(f"field {name!r} must be {kind.__name__}, got {value!r}")
    return value
