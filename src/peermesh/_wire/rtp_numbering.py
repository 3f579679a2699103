"""RTP header-extension ids and payload types that keep their meaning on a connection.

In one BUNDLE group every m-section shares one space of header-extension ids and one of
payload types. Once a peer has bound an id to a URI (or a payload type to a codec) it must
keep meaning that: libwebrtc (Chromium 143 and later, after the WebRTC spec change "RTP
header extension control modifications") refuses a remote offer that rebinds one with
``RTP extension ID reassignment not supported (collision on active MID …)``, even for a
transceiver whose own offer was just rolled back in a glare; and a payload type naming two
codecs fails with ``Failed to set remote … description send parameters``.

aiortc numbers every offer from its own defaults, which differ from libwebrtc's: ``sdes:mid``
is 1 (libwebrtc: 4), ``ssrc-audio-level`` 2 (libwebrtc: 1), ``abs-send-time`` 3 (libwebrtc:
2, and 3 is libwebrtc's transport-wide congestion control); Opus is 96 (libwebrtc: 111, and
96 is libwebrtc's VP8). So when both sides add a stream at once, a browser that rolls back
its own offer and takes ours sees its ids reassigned and gives up the connection.

:class:`RtpNumbering` is the bookkeeping for one connection. :meth:`~RtpNumbering.observe`
records the numbering of every description the remote sends us — one we applied, and an
offer we ignored under the collision rule (its peer will roll it back and apply ours, but
keeps the ids it chose). :meth:`~RtpNumbering.number_offer` then renumbers our offer's
m-sections that are not negotiated yet. For each header-extension URI the first of these
that is free (not bound to another URI) wins:

1. the id this URI has in a negotiated m-section of the same offer;
2. the id the remote last used for it;
3. libwebrtc's own default id (:data:`LIBWEBRTC_EXTENSION_IDS`), so that a browser's offer
   made at the same moment as ours agrees with ours from the start;
4. the lowest free id from 1 to 14 (the one-byte header form).

Ids bound by the remote to URIs we do not offer stay reserved. Payload types follow the same
rules, keyed by codec (:func:`codec_key`), with libwebrtc's defaults
(:data:`LIBWEBRTC_PAYLOAD_TYPES`) and then the dynamic range 96–127 and 35–63; static payload
types (below 35) are never changed, and an RTX codec follows its base codec (its ``apt`` is
rewritten). An extension or codec for which nothing is free is left out of the offer.
Negotiated m-sections are not touched: JSEP keeps what was negotiated.

Answers need nothing: aiortc answers with the ids and dynamic payload types of the offer.

Pure: it works on :class:`aiortc.sdp.SessionDescription` objects and never raises on odd
remote SDP (what it cannot read it ignores).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aiortc import sdp
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters

__all__ = [
    "LIBWEBRTC_EXTENSION_IDS",
    "LIBWEBRTC_PAYLOAD_TYPES",
    "CodecKey",
    "RtpNumbering",
    "codec_key",
]

CodecKey = tuple[str, ...]

#: libwebrtc's default header-extension ids (Chromium 156's offers; the same since M110).
LIBWEBRTC_EXTENSION_IDS: dict[str, int] = {
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": 3,
    "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay": 5,
    "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type": 6,
    "http://www.webrtc.org/experiments/rtp-hdrext/video-timing": 7,
    "http://www.webrtc.org/experiments/rtp-hdrext/color-space": 8,
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10,
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 11,
    "urn:3gpp:video-orientation": 13,
    "urn:ietf:params:rtp-hdrext:toffset": 14,
}

#: libwebrtc's default payload types for the codecs aiortc offers (Chromium 156).
LIBWEBRTC_PAYLOAD_TYPES: dict[CodecKey, int] = {
    ("audio/opus", "48000", "2"): 111,
    ("video/vp8", "90000", ""): 96,
    ("video/rtx", "90000", "", "video/vp8", "90000", ""): 97,
    ("video/h264", "90000", "", "1", "4200"): 102,
    ("video/rtx", "90000", "", "video/h264", "90000", "", "1", "4200"): 103,
    ("video/h264", "90000", "", "1", "42e0"): 108,
    ("video/rtx", "90000", "", "video/h264", "90000", "", "1", "42e0"): 109,
}

#: One-byte header-extension ids (RFC 8285 §4.2).
_EXTENSION_IDS = range(1, 15)
#: Dynamic payload types, the usual range first (RFC 3551; libwebrtc uses 35–63 too).
_DYNAMIC_PAYLOAD_TYPES = (*range(96, 128), *range(35, 64))
_FIRST_DYNAMIC = 35


def codec_key(codec: RTCRtpCodecParameters, base: CodecKey | None = None) -> CodecKey:
    """What makes two codecs the same for numbering: MIME type, clock rate, channels, for
    H.264 the packetization mode and profile (the first 4 hex digits of
    ``profile-level-id``; the level may differ), for RTX the key of its ``base`` codec."""
    key: CodecKey = (
        codec.mimeType.lower(),
        str(codec.clockRate),
        str(codec.channels) if codec.channels and codec.channels > 1 else "",
    )
    if key[0] == "video/h264":
        parameters = codec.parameters
        profile = str(parameters.get("profile-level-id", "42e01f"))[:4].lower()
        key += (str(parameters.get("packetization-mode", "0")), profile)
    if base is not None:
        key += base
    return key


def _keyed_codecs(
    codecs: Iterable[RTCRtpCodecParameters],
) -> Iterator[tuple[CodecKey, RTCRtpCodecParameters]]:
    """Each codec with its key; an RTX codec whose ``apt`` names no codec of the section is
    skipped."""
    codecs = list(codecs)
    by_type = {c.payloadType: c for c in codecs if c.mimeType.lower() != "video/rtx"}
    for codec in codecs:
        if codec.mimeType.lower() == "video/rtx":
            base = by_type.get(codec.parameters.get("apt"))  # type: ignore[arg-type]
            if base is not None:
                yield codec_key(codec, codec_key(base)), codec
        else:
            yield codec_key(codec), codec


def _media(description: sdp.SessionDescription) -> list[sdp.MediaDescription]:
    return [m for m in description.media if m.kind in ("audio", "video")]


class _Claims:
    """Who holds each number of one space (extension ids or payload types)."""

    def __init__(self) -> None:
        self.holder: dict[int, object] = {}
        self.number: dict[object, int] = {}

    def copy(self) -> _Claims:
        claims = _Claims()
        claims.holder = dict(self.holder)
        claims.number = dict(self.number)
        return claims

    def bind(self, number: int, holder: object) -> None:
        previous = self.holder.get(number)
        if previous is not None and self.number.get(previous) == number:
            del self.number[previous]
        self.holder[number] = holder
        self.number[holder] = number

    def pick(self, holder: object, *candidates: int | None, free: Iterable[int]) -> int | None:
        """The first candidate, then the first of ``free``, that is unbound or bound to
        ``holder``; bind and return it (None if there is none)."""
        for number in (*candidates, *free):
            if number is not None and self.holder.get(number, holder) == holder:
                self.bind(number, holder)
                return number
        return None


class RtpNumbering:
    """The numbering the remote of one connection uses; see the module docstring."""

    def __init__(self) -> None:
        self._extensions = _Claims()  # id -> URI, as the remote last used them
        self._payload_types = _Claims()  # payload type -> codec key

    def observe(self, text: str) -> None:
        """Record the header-extension ids and payload types of a remote SDP (an offer or
        answer we applied, or an offer we ignored). Later descriptions win. Never raises."""
        try:
            description = sdp.SessionDescription.parse(text)
        except Exception:  # aiortc's parser raises assorted errors on junk
            return
        for media in _media(description):
            for extension in media.rtp.headerExtensions:
                if extension.id in _EXTENSION_IDS:
                    self._extensions.bind(extension.id, extension.uri)
            for key, codec in _keyed_codecs(media.rtp.codecs):
                if codec.payloadType is not None and codec.payloadType >= _FIRST_DYNAMIC:
                    self._payload_types.bind(codec.payloadType, key)

    def number_offer(self, description: sdp.SessionDescription, negotiated: set[str]) -> None:
        """Renumber, in place, the audio/video m-sections of our offer ``description``
        whose mid is not in ``negotiated`` (see the module docstring)."""
        # What the remote used, overruled by what is negotiated (rules 1 and 2).
        extensions = self._extensions.copy()
        payload_types = self._payload_types.copy()
        for media in _media(description):
            if media.rtp.muxId in negotiated:
                for extension in media.rtp.headerExtensions:
                    extensions.bind(extension.id, extension.uri)
                for key, codec in _keyed_codecs(media.rtp.codecs):
                    if codec.payloadType is not None:
                        payload_types.bind(codec.payloadType, key)
        for media in _media(description):
            if media.rtp.muxId not in negotiated:
                _number_section(media, extensions, payload_types)


def _number_section(
    media: sdp.MediaDescription, extensions: _Claims, payload_types: _Claims
) -> None:
    numbered_extensions: list[RTCRtpHeaderExtensionParameters] = []
    for extension in media.rtp.headerExtensions:
        uri = extension.uri
        ext_id = extensions.pick(
            uri, extensions.number.get(uri), LIBWEBRTC_EXTENSION_IDS.get(uri), free=_EXTENSION_IDS
        )
        if ext_id is not None:
            numbered_extensions.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
    media.rtp.headerExtensions = numbered_extensions

    renumbered: dict[int | None, int] = {}
    codecs: list[RTCRtpCodecParameters] = []
    for key, codec in _keyed_codecs(media.rtp.codecs):
        old = codec.payloadType
        is_rtx = key[0] == "video/rtx"
        if is_rtx and codec.parameters.get("apt") not in renumbered:
            continue  # its base codec was left out
        if old is not None and old < _FIRST_DYNAMIC:
            number: int | None = old
        else:
            number = payload_types.pick(
                key,
                payload_types.number.get(key),
                LIBWEBRTC_PAYLOAD_TYPES.get(key),
                free=_DYNAMIC_PAYLOAD_TYPES,
            )
        if number is None:
            continue
        renumbered[old] = number
        parameters = dict(codec.parameters)
        if is_rtx:
            parameters["apt"] = renumbered[codec.parameters.get("apt")]  # type: ignore[index]
        codecs.append(
            RTCRtpCodecParameters(
                mimeType=codec.mimeType,
                clockRate=codec.clockRate,
                channels=codec.channels,
                payloadType=number,
                rtcpFeedback=list(codec.rtcpFeedback),
                parameters=parameters,
            )
        )
    media.rtp.codecs = codecs
    media.fmt = [codec.payloadType for codec in codecs]
