"""Is the peer of a connection still there? Consent freshness that survives load.

aioice checks consent (RFC 7675) with one binding request about every 5 s, given 0.5 s to
come back and never retried, and closes the connection after 6 failures in a row. That is
wrong both ways: a peer that vanished (a killed process, a closed laptop) is noticed only
after 27–35 s (Trystero notices in about 11 s), while a receiver kept busy by a stream of
data — whose consent response waits behind a megabyte of datagrams — loses a perfectly
healthy connection.

:class:`Liveness` decides from what actually arrives: *any authenticated packet from the
peer* is proof that it is there — a DTLS record that decrypts, an SRTP or SRTCP packet that
authenticates, a response to our binding request (signed with the peer's ICE password).
A busy link proves itself with every packet; only a quiet one needs asking:

* after :data:`QUIET_AFTER` seconds without proof, a binding request goes out every
  :data:`PROBE_INTERVAL` seconds (any answer is proof);
* after :data:`DEAD_AFTER` seconds without proof the peer is gone: the link closes. Checked
  every :data:`CHECK_INTERVAL` seconds, a silent peer is noticed within
  ``DEAD_AFTER + CHECK_INTERVAL`` = 11 s.
* A peer heard from through a relay while the link has been silent for
  :data:`SILENT_AFTER` seconds (the first probes unanswered) has lost the link: its
  signals are taken as the start of a new connection (``SharedLinks``).
* When the timer runs more than :data:`STALL_AFTER` seconds late, our own event loop was
  stalled: packets may be waiting unread, so the silence so far does not count.

Pure and sans-I/O: the caller feeds :meth:`Liveness.proof` and the clock, asks
:meth:`Liveness.get_timer` when to call :meth:`Liveness.handle_timer`, and carries out the
:class:`Verdict` it returns.
"""

from __future__ import annotations

import enum

__all__ = [
    "CHECK_INTERVAL",
    "DEAD_AFTER",
    "PROBE_INTERVAL",
    "QUIET_AFTER",
    "SILENT_AFTER",
    "STALL_AFTER",
    "Liveness",
    "Verdict",
]

#: Silence after which the peer is asked (a binding request).
QUIET_AFTER = 3.0
#: Least time between two binding requests while the peer is quiet.
PROBE_INTERVAL = 1.0
#: Silence after which the peer is gone.
DEAD_AFTER = 10.0
#: Silence after which a peer that signals through a relay has lost the link.
SILENT_AFTER = 5.0
#: How often the verdict is taken.
CHECK_INTERVAL = 1.0
#: A timer this late means our event loop was stalled (the silence does not count).
STALL_AFTER = 3.0


class Verdict(enum.Enum):
    """What :meth:`Liveness.handle_timer` asks the caller to do."""

    #: Send a binding request to the peer; report its answer with :meth:`Liveness.proof`.
    PROBE = "probe"
    #: The peer is gone: close the connection.
    DEAD = "dead"


class Liveness:
    """The liveness verdict for one connection, from ``now`` on (see the module docstring)."""

    def __init__(self, now: float) -> None:
        self._last_proof = now
        self._last_probe: float | None = None
        self._next_check = now + CHECK_INTERVAL

    def proof(self, now: float) -> None:
        """An authenticated packet from the peer arrived (at ``now``)."""
        self._last_proof = max(self._last_proof, now)

    def silent_for(self, now: float) -> float:
        """Seconds since the last proof."""
        return max(0.0, now - self._last_proof)

    def get_timer(self) -> float:
        """When :meth:`handle_timer` must run next."""
        return self._next_check

    def handle_timer(self, now: float) -> Verdict | None:
        """Take the verdict at ``now``: probe, dead, or nothing to do."""
        if now - self._next_check > STALL_AFTER:
            self._last_proof = now  # we were not looking
        self._next_check = now + CHECK_INTERVAL
        silence = now - self._last_proof
        if silence >= DEAD_AFTER:
            return Verdict.DEAD
        if silence >= QUIET_AFTER and (
            self._last_probe is None or now - self._last_probe >= PROBE_INTERVAL
        ):
            self._last_probe = now
            return Verdict.PROBE
        return None
