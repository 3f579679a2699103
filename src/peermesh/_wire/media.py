"""Media on the wire (wire notes §5.4, §6.5, §8): the ``@_signal``, ``@_stream`` and
``@_track`` payloads, a few SDP facts the media layer needs, and the renegotiation rules.

Payloads
========
All three are JSON values sent as internal actions (the action layer serialises them):

* ``@_signal`` — ``{"type": "offer"|"answer"|"candidate", "sdp": …}``. For a candidate,
  ``sdp`` is the *JSON text* of ``RTCIceCandidate.toJSON()``.
* ``@_stream`` — ``{"k": key, "s": streamId[, "m": meta]}``, sent before a stream's tracks.
* ``@_track`` — ``{"k": key, "s": streamId, "t": trackId[, "m": meta]}`` for ``addTrack``;
  ``{"k": key(newTrack), "t": oldTrack.id[, "m": meta]}`` for ``replaceTrack``.

``k`` is a 20-character id fixed per local stream/track object. Trystero accepts a meta
when it is a non-array object with a string ``k``; ``s``/``t`` are kept only when strings;
``m`` counts as present whenever the key exists, even with ``null``. Encoders write keys in
Trystero's order.

Renegotiation in aiortc (measured, spike in /tmp/media-spike, aiortc 1.16)
===========================================================================
Trystero runs perfect negotiation with **fixed roles per connection**: the initiator (the
original offerer) is *impolite* and ignores a colliding offer; the answerer is *polite* and
rolls back its own offer to accept the remote one. Once the data channel is open, offers
and answers travel as ``@_signal`` and one without ``a=rtpmap`` is ignored. aiortc differs
from a browser in three ways that shape the design:

1. **No ``negotiationneeded``.** The media layer keeps its own "negotiation needed" state
   (:class:`NegotiationTracker`): each local media change bumps a generation; an offer
   records the generation it covers; the answer to it marks that generation negotiated. After
   any return to ``stable`` (answer applied, or our answer sent) we offer again if the
   generation moved on. Changes made while an offer is in flight are thus folded into the
   next offer, and an offer lost to a collision is re-made.
2. **No rollback.** ``setLocalDescription({"type": "rollback"})`` does not exist and
   ``setRemoteDescription(offer)`` in ``have-local-offer`` raises ``InvalidStateError``.
   Measured: with the impolite side ignoring and the polite side unable to roll back, a
   collision deadlocks (both stay in ``have-local-offer`` forever). When **we are polite**
   the rollback is emulated on aiortc's private state (drop the pending local description,
   set the signalling state back to ``stable``, and un-assign the mids that only the
   discarded offer had given to new transceivers, removing them from the seen-mids set).
   Then the remote offer applies normally, our unsent transceivers may be matched to its new
   m-lines (as in a browser), we answer, and rule 1 re-offers what is still missing.
   Measured 5/5 glare runs with both streams decoded on both sides in ~0.2 s, with both
   ``BALANCED`` and ``MAX_BUNDLE`` bundle policies. When **we are impolite** no rollback is
   needed: the colliding offer is ignored (:attr:`Step.IGNORE`), the polite peer (a browser
   rolls back natively) answers ours and re-offers via its own ``negotiationneeded``.
3. **Serialise signalling.** aiortc's description calls are coroutines; all local offers and
   remote signals of one connection are handled by one worker, one at a time, so
   "collision" is simply ``signalingState != "stable"`` when an offer is processed
   (Trystero's ``makingOffer`` case is covered because our ``have-local-offer`` is set
   before the worker takes the next signal).

Other aiortc facts the media layer must handle (all measured):

* aiortc gives every sender of a connection **one shared msid stream id**. Trystero only
  uses tracks with ``event.streams[0]`` and groups by that id, so each sender's
  ``_stream_id`` must be set to the :class:`~peermesh.media.MediaStream` id. With that, Node
  wrtc sees audio+video of one stream as one ``MediaStream`` with our id.
* aiortc emits ``track`` *inside* ``setRemoteDescription``, before ``remoteDescription`` is
  updated: map the transceiver's mid to its msid with :func:`media_sections` of the SDP
  being applied, not the connection's current description.
* aiortc has no ``removeTrack``: "remove" is ``sender.replaceTrack(None)`` plus direction
  ``sendrecv→recvonly`` (``sendonly→inactive``), then renegotiate. The receiving aiortc does
  not end its track; the media layer sees the mid's direction stop sending in the new remote
  description (:func:`media_sections`) and ends the track itself.
* aiortc's ``addTrack`` reuses *any* transceiver of the kind whose sender has no track,
  including one emptied by a removal; a receiving aiortc then fires no ``track`` event (its
  receiver already has a track). Like browsers, reuse only transceivers that never sent
  (ones the remote offered) and otherwise ``addTransceiver(track, "sendrecv")``.
* ``RTCRtpSender.replaceTrack`` needs no renegotiation (a new frame size arrives in ~0.1 s).
* Renegotiated media on top of a data-channel-only connection works with the default
  ``BALANCED`` bundle policy as well as ``MAX_BUNDLE``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from ..errors import ProtocolError
from .topics import gen_id

__all__ = [
    "MAX_SDP_SIZE",
    "MEDIA_KEY_LENGTH",
    "NO_METADATA",
    "SIGNAL_ACTION",
    "STREAM_ACTION",
    "TRACK_ACTION",
    "MediaMeta",
    "MediaSection",
    "NegotiationTracker",
    "RenegotiationSignal",
    "SignalType",
    "Step",
    "credentials_change",
    "decide",
    "encode_candidate_signal",
    "encode_replace_meta",
    "encode_signal",
    "encode_stream_meta",
    "encode_track_meta",
    "has_media_codecs",
    "media_sections",
    "new_media_key",
    "parse_candidate",
    "parse_media_meta",
    "parse_signal",
]

SIGNAL_ACTION = "@_signal"
STREAM_ACTION = "@_stream"
TRACK_ACTION = "@_track"
#: Length of Trystero's per-object stream/track keys (``genId(20)``).
MEDIA_KEY_LENGTH = 20
#: Largest SDP or candidate text accepted in an ``@_signal``.
MAX_SDP_SIZE = 64 * 1024
#: Longest key, stream id or track id accepted in a media meta.
_MAX_ID = 256
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class _NoMetadata:
    _instance: _NoMetadata | None = None

    def __new__(cls) -> _NoMetadata:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_METADATA"

    def __bool__(self) -> bool:
        return False


#: Marks "no ``m`` key", as distinct from ``m: null`` (``None``).
NO_METADATA = _NoMetadata()


def new_media_key() -> str:
    """A fresh 20-character key for a local stream or track (Trystero's ``genId(20)``)."""
    return gen_id(MEDIA_KEY_LENGTH)


# -- @_signal --------------------------------------------------------------------------------


class SignalType(enum.Enum):
    OFFER = "offer"
    ANSWER = "answer"
    CANDIDATE = "candidate"


@dataclass(frozen=True, slots=True)
class RenegotiationSignal:
    """A parsed ``@_signal``: ``sdp`` is the SDP text, or for a candidate its JSON text
    (see :func:`parse_candidate`)."""

    type: SignalType
    sdp: str


def encode_signal(kind: SignalType, sdp: str) -> dict[str, str]:
    """The ``@_signal`` payload for an offer or answer (or a candidate's JSON text)."""
    return {"type": kind.value, "sdp": sdp}


def encode_candidate_signal(candidate: dict[str, object]) -> dict[str, str]:
    """The ``@_signal`` payload for a candidate in ``RTCIceCandidate.toJSON()`` form."""
    text = json.dumps(candidate, separators=(",", ":"), ensure_ascii=False)
    return encode_signal(SignalType.CANDIDATE, text)


def parse_signal(value: object) -> RenegotiationSignal:
    """Parse a decoded ``@_signal`` payload.

    Raises :class:`ProtocolError` unless it is an object with ``type`` one of
    offer/answer/candidate and ``sdp`` a string of at most :data:`MAX_SDP_SIZE` characters
    (non-empty for offers and answers).
    """
    if not isinstance(value, dict):
        raise ProtocolError("@_signal payload is not an object")
    try:
        kind = SignalType(value.get("type"))
    except ValueError:
        raise ProtocolError(f"@_signal has unknown type {value.get('type')!r}") from None
    sdp = value.get("sdp")
    if not isinstance(sdp, str):
        raise ProtocolError("@_signal sdp is not a string")
    if len(sdp) > MAX_SDP_SIZE:
        raise ProtocolError(f"@_signal sdp of {len(sdp)} characters is over {MAX_SDP_SIZE}")
    if kind is not SignalType.CANDIDATE and not sdp.startswith("v=0"):
        raise ProtocolError(f"@_signal {kind.value} is not an SDP")
    return RenegotiationSignal(kind, sdp)


def parse_candidate(text: str) -> dict[str, object]:
    """Parse a candidate signal's JSON text into the ``toJSON()`` mapping.

    Raises :class:`ProtocolError` if it is not a JSON object whose ``candidate`` is a string.
    """
    try:
        candidate = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("@_signal candidate is not JSON") from None
    if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
        raise ProtocolError("@_signal candidate is not a candidate object")
    return candidate


# -- @_stream / @_track ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaMeta:
    """A parsed ``@_stream`` or ``@_track`` payload. ``metadata`` is :data:`NO_METADATA`
    when the ``m`` key was absent."""

    key: str
    stream_id: str | None = None
    track_id: str | None = None
    metadata: object = NO_METADATA

    @property
    def has_metadata(self) -> bool:
        return self.metadata is not NO_METADATA


def _with_meta(payload: dict[str, object], metadata: object) -> dict[str, object]:
    if metadata is not NO_METADATA:
        payload["m"] = metadata
    return payload


def encode_stream_meta(
    key: str, stream_id: str, metadata: object = NO_METADATA
) -> dict[str, object]:
    """``@_stream`` payload: ``{"k", "s"[, "m"]}``."""
    return _with_meta({"k": key, "s": stream_id}, metadata)


def encode_track_meta(
    key: str, stream_id: str, track_id: str, metadata: object = NO_METADATA
) -> dict[str, object]:
    """``@_track`` payload for ``addTrack``: ``{"k", "s", "t"[, "m"]}``."""
    return _with_meta({"k": key, "s": stream_id, "t": track_id}, metadata)


def encode_replace_meta(
    new_track_key: str, old_track_id: str, metadata: object = NO_METADATA
) -> dict[str, object]:
    """``@_track`` payload for ``replaceTrack``: ``{"k": key(new), "t": old.id[, "m"]}``."""
    return _with_meta({"k": new_track_key, "t": old_track_id}, metadata)


def parse_media_meta(value: object) -> MediaMeta:
    """Parse a decoded ``@_stream``/``@_track`` payload the way Trystero does: an object with
    a string ``k``; ``s``/``t`` kept only when strings; ``m`` kept whenever present.

    Raises :class:`ProtocolError` when Trystero would ignore the payload (not an object, no
    string ``k``), and for a key/id over 256 characters.
    """
    if not isinstance(value, dict):
        raise ProtocolError("media meta is not an object")
    key = value.get("k")
    if not isinstance(key, str):
        raise ProtocolError("media meta has no string key")
    stream_id = value.get("s")
    track_id = value.get("t")
    stream_id = stream_id if isinstance(stream_id, str) else None
    track_id = track_id if isinstance(track_id, str) else None
    for text in (key, stream_id, track_id):
        if text is not None and len(text) > _MAX_ID:
            raise ProtocolError("media meta id is too long")
    return MediaMeta(key, stream_id, track_id, value.get("m", NO_METADATA))


# -- SDP facts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One audio/video m-section: its ``mid``, ``kind``, ``direction`` as written by the
    SDP's author, and the ``a=msid`` stream and track ids (``None`` if absent or ``-``)."""

    mid: str
    kind: str
    direction: str
    stream_id: str | None
    track_id: str | None
    index: int

    @property
    def sends(self) -> bool:
        """Whether the SDP's author sends media on this section."""
        return self.direction in ("sendrecv", "sendonly")


def has_media_codecs(sdp: str) -> bool:
    """Trystero's test for a media renegotiation: once the data channel is open, an offer or
    answer without ``a=rtpmap`` is ignored (§5.4)."""
    return "a=rtpmap" in sdp


def media_sections(sdp: str) -> tuple[MediaSection, ...]:
    """The audio and video m-sections of ``sdp``, in order (``index`` is the m-line index
    counting every m-line). Sections without ``a=mid`` are skipped. Never raises on
    malformed text; unknown lines are ignored."""
    found: list[MediaSection] = []
    current: dict[str, str] | None = None
    index = -1

    def flush() -> None:
        if current is not None and "mid" in current and current["kind"] in ("audio", "video"):
            found.append(
                MediaSection(
                    mid=current["mid"],
                    kind=current["kind"],
                    direction=current.get("direction", "sendrecv"),
                    stream_id=current.get("stream"),
                    track_id=current.get("track"),
                    index=index,
                )
            )

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            flush()
            index += 1
            current = {"kind": line[2:].split(" ", 1)[0]}
        elif current is None:
            continue
        elif line.startswith("a=mid:"):
            current["mid"] = line[6:]
        elif line[2:] in _DIRECTIONS and line.startswith("a="):
            current["direction"] = line[2:]
        elif line.startswith("a=msid:"):
            parts = line[7:].split()
            if parts and parts[0] != "-":
                current["stream"] = parts[0]
            if len(parts) > 1:
                current["track"] = parts[1]
    flush()
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _Credentials:
    ice: tuple[str | None, str | None]  # ufrag, pwd
    fingerprints: frozenset[str]  # "sha-256 ab:cd:…"


def _credentials(sdp: str) -> list[tuple[str | None, _Credentials]]:
    """``(mid, credentials)`` of every m-section of ``sdp``, read as aiortc reads them:
    ``a=ice-ufrag``/``a=ice-pwd`` of the section, else of the session; the fingerprints of
    the session and the section together (compared case-insensitively)."""
    blocks: list[list[str]] = [[]]  # the session's lines, then each m-section's
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            blocks.append([])
        else:
            blocks[-1].append(line)
    session, *sections = blocks

    def value(lines: list[str], prefix: str, default: str | None = None) -> str | None:
        return next((x[len(prefix) :] for x in reversed(lines) if x.startswith(prefix)), default)

    def fingerprints(lines: list[str]) -> frozenset[str]:
        prefix = "a=fingerprint:"
        return frozenset(
            " ".join(x[len(prefix) :].split()).lower() for x in lines if x.startswith(prefix)
        )

    ufrag, pwd = value(session, "a=ice-ufrag:"), value(session, "a=ice-pwd:")
    return [
        (
            value(lines, "a=mid:"),
            _Credentials(
                (value(lines, "a=ice-ufrag:", ufrag), value(lines, "a=ice-pwd:", pwd)),
                fingerprints(session) | fingerprints(lines),
            ),
        )
        for lines in sections
    ]


def credentials_change(current: str, new: str) -> str | None:
    """Why the remote SDP ``new`` must not be applied on top of ``current`` (the
    connection's remote description), or ``None`` if it keeps the credentials.

    Every m-section of ``new`` must keep the DTLS fingerprints (all of them, as a set) and
    the ICE ufrag and pwd of its transport: a section whose mid is in ``current`` those it
    has there; a new section those of a section of ``current`` (with BUNDLE, which peermesh
    and Trystero always use, the one transport of the connection).

    A new fingerprint would mean a new DTLS association (RFC 8842) and new ICE credentials
    an ICE restart (RFC 8839). peermesh supports neither on an established connection, so
    both are refused: aiortc 1.16 has no ``restartIce()`` or ``iceRestart`` offer, and its
    ICE and DTLS transports, once started, ignore new remote parameters (the description
    would name credentials the connection does not use); Trystero restarts ICE only in the
    offers of connections not yet made (its offer pool, sent by the signalling strategy),
    never in an ``@_signal``, and closes a connection whose ICE failed. Pure; never raises.
    """
    known = dict(_credentials(current))
    anywhere = set(known.values())  # a set: a new section is looked up, not compared with each
    for mid, credentials in _credentials(new):
        expected = {known[mid]} if mid in known else anywhere
        if credentials in expected:
            continue
        if all(credentials.fingerprints != e.fingerprints for e in expected):
            return f"m-section {mid!r} changes the DTLS fingerprint"
        return f"m-section {mid!r} changes the ICE credentials (ICE restarts are not supported)"
    return None


# -- renegotiation ---------------------------------------------------------------------------


class Step(enum.Enum):
    """What to do with an incoming ``@_signal`` (see :func:`decide`)."""

    #: ``setRemoteDescription(offer)``, then answer.
    APPLY_OFFER = "apply-offer"
    #: Emulated rollback of our pending offer, then as :attr:`APPLY_OFFER` (polite side).
    ROLLBACK_THEN_APPLY_OFFER = "rollback-then-apply-offer"
    #: ``setRemoteDescription(answer)``.
    APPLY_ANSWER = "apply-answer"
    #: ``addIceCandidate`` (held until a remote description exists).
    ADD_CANDIDATE = "add-candidate"
    #: Drop it: a colliding offer on the impolite side, an answer we did not ask for, or an
    #: SDP without media after the channel opened.
    IGNORE = "ignore"


def decide(
    kind: SignalType,
    *,
    polite: bool,
    signaling_state: str,
    channel_open: bool = True,
    has_media: bool = True,
) -> Step:
    """Decide what to do with an incoming renegotiation signal, for fixed roles.

    ``polite`` is ``not initiator`` (Trystero: the original offerer is impolite).
    ``signaling_state`` is the connection's state as its signalling worker sees it
    (so an offer of ours being made shows as ``have-local-offer``). ``has_media`` is
    :func:`has_media_codecs` of the SDP. Pure; never raises.
    """
    if kind is SignalType.CANDIDATE:
        return Step.ADD_CANDIDATE
    if signaling_state == "closed" or (channel_open and not has_media):
        return Step.IGNORE
    if kind is SignalType.ANSWER:
        return Step.APPLY_ANSWER if signaling_state == "have-local-offer" else Step.IGNORE
    if signaling_state == "stable":
        return Step.APPLY_OFFER
    if signaling_state == "have-local-offer" and polite:
        return Step.ROLLBACK_THEN_APPLY_OFFER
    return Step.IGNORE


class NegotiationTracker:
    """aiortc's missing ``negotiationneeded``, as counters.

    Call :meth:`changed` after each local media change (add/remove of a sender or
    direction). :meth:`needs_offer` says whether to make an offer now; :meth:`offer_made`
    before sending it; :meth:`answer_applied` when its answer is applied. An offer that is
    rolled back or ignored is simply never answered, so the change stays pending and
    :meth:`needs_offer` is true again once the connection is ``stable``.
    """

    def __init__(self) -> None:
        self._generation = 0
        self._offered = 0
        self._negotiated = 0

    @property
    def pending(self) -> bool:
        """Local changes not yet covered by an answered offer."""
        return self._generation != self._negotiated

    def changed(self) -> None:
        self._generation += 1

    def needs_offer(self, signaling_state: str) -> bool:
        return signaling_state == "stable" and self.pending

    def offer_made(self) -> None:
        self._offered = self._generation

    def answer_applied(self) -> None:
        self._negotiated = self._offered
