"""Sans-I/O implementation of Trystero 0.25's wire formats.

Everything in this package is pure: no asyncio, no sockets, no clock reads and no
module-level mutable state. The modules turn bytes and strings into frozen dataclasses
and back, and raise :class:`peermesh.errors.ProtocolError` (or its subclass
:class:`peermesh.errors.SealError`) for remote input that breaks the format, and
:class:`peermesh.errors.UsageError` for bad local arguments.

- :mod:`.topics`   -- ids, hashed topics, torrent ``info_hash``, room token, nostr kind
- :mod:`.sealing`  -- AES-GCM text form for SDP/candidates, password handshake
- :mod:`.frames`   -- room and presence frames on the data channel
- :mod:`.actions`  -- 36-byte action chunks, payload typing, chunker, bounded reassembly
- :mod:`.jscompat` -- the few JavaScript semantics (UTF-8, ``Math.round``) the wire needs
"""

from __future__ import annotations

__all__: list[str] = []
