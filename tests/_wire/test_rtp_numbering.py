"""Header-extension ids and payload types in our offers (peermesh._wire.rtp_numbering).

The SDP files in ``sdp/`` were captured on loopback during the glare of issue 20:
``chromium-156-offer.sdp`` is Chromium 156's media offer over an open data channel (the
offer peermesh ignored as the impolite side), ``chromium-156-answer.sdp`` its answer to an
aiortc offer, ``aiortc-1.16-offer.sdp`` aiortc's own offer for a tone and a video track
(its default numbering, as peermesh sent it before this module existed) and
``aiortc-1.16-answer.sdp`` aiortc's answer to Chromium's offer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, sdp

from peermesh._wire.rtp_numbering import (
    LIBWEBRTC_EXTENSION_IDS,
    RtpNumbering,
)

SDP_DIR = Path(__file__).parent / "sdp"
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def load(name: str) -> str:
    return (SDP_DIR / name).read_text()


def parse(text: str) -> sdp.SessionDescription:
    description = sdp.SessionDescription.parse(text)
    description.type = "offer"
    return description


def extension_ids(description: sdp.SessionDescription) -> dict[int, str]:
    """Every id → URI binding of the description's audio/video sections; fails the test
    if one id is bound to two URIs (the BUNDLE group shares one id space)."""
    bound: dict[int, str] = {}
    for media in description.media:
        for extension in media.rtp.headerExtensions:
            assert bound.setdefault(extension.id, extension.uri) == extension.uri
    return bound


def payload_types(description: sdp.SessionDescription) -> dict[int, str]:
    """Payload type → ``mime/clock`` (plus ``apt`` for RTX) across sections, checking that
    one payload type names one codec and that ``fmt`` lists exactly the codecs."""
    named: dict[int, str] = {}
    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        assert media.fmt == [c.payloadType for c in media.rtp.codecs]
        for codec in media.rtp.codecs:
            name = f"{codec.mimeType.lower()}/{codec.clockRate}"
            if codec.mimeType.lower() == "video/rtx":
                name += f" apt={codec.parameters['apt']}"
            assert codec.payloadType is not None
            assert named.setdefault(codec.payloadType, name) == name
    return named


def by_section(description: sdp.SessionDescription) -> dict[str, dict[str, int]]:
    return {
        m.rtp.muxId: {e.uri: e.id for e in m.rtp.headerExtensions}
        for m in description.media
        if m.kind in ("audio", "video")
    }


def test_a_fresh_offer_is_numbered_as_libwebrtc_numbers() -> None:
    """Nothing known about the peer yet: ids and payload types are libwebrtc's, so a
    browser that offers at the same moment agrees with us from the start."""
    offer = parse(load("aiortc-1.16-offer.sdp"))
    assert by_section(offer)["1"] == {MID: 1, AUDIO_LEVEL: 2}  # aiortc's own numbering
    RtpNumbering().number_offer(offer, negotiated=set())
    assert by_section(offer) == {
        "1": {MID: 4, AUDIO_LEVEL: 1},
        "2": {MID: 4, ABS_SEND_TIME: 2},
    }
    types = payload_types(offer)
    assert types[111] == "audio/opus/48000"
    assert (types[96], types[97]) == ("video/vp8/90000", "video/rtx/90000 apt=96")
    assert (types[102], types[103]) == ("video/h264/90000", "video/rtx/90000 apt=102")
    assert (types[108], types[109]) == ("video/h264/90000", "video/rtx/90000 apt=108")
    assert {0, 8, 9} <= set(types)  # static payload types stay


def test_the_glare_offer_keeps_every_id_the_ignored_offer_used() -> None:
    """Issue 20: we ignore Chromium's offer (impolite side); Chromium rolls back and takes
    ours. Every id and payload type of ours that Chromium used must mean what it meant
    there, or Chromium refuses ours with "RTP extension ID reassignment not supported"."""
    chromium = parse(load("chromium-156-offer.sdp"))
    theirs_ext = extension_ids(chromium)
    theirs_pt = payload_types(chromium)
    numbering = RtpNumbering()
    numbering.observe(load("chromium-156-offer.sdp"))
    ours = parse(load("aiortc-1.16-offer.sdp"))
    before = extension_ids(ours)
    assert any(theirs_ext.get(i) not in (None, uri) for i, uri in before.items())  # the bug
    numbering.number_offer(ours, negotiated=set())
    for ext_id, uri in extension_ids(ours).items():
        assert theirs_ext.get(ext_id, uri) == uri
    for pt, name in payload_types(ours).items():
        assert theirs_pt.get(pt, name) == name
    assert by_section(ours)["1"] == {MID: 4, AUDIO_LEVEL: 1}


def test_a_peer_with_its_own_numbering_is_followed() -> None:
    """A peer numbering otherwise than libwebrtc (here: aiortc's defaults, as an older
    peermesh sends them) is followed, URI by URI and codec by codec."""
    numbering = RtpNumbering()
    numbering.observe(load("aiortc-1.16-offer.sdp"))
    ours = parse(load("aiortc-1.16-offer.sdp"))
    numbering.number_offer(ours, negotiated=set())
    assert by_section(ours) == {"1": {MID: 1, AUDIO_LEVEL: 2}, "2": {MID: 1, ABS_SEND_TIME: 3}}
    types = payload_types(ours)
    assert (types[96], types[97], types[98]) == (
        "audio/opus/48000",
        "video/vp8/90000",
        "video/rtx/90000 apt=97",
    )


def test_later_descriptions_win_and_free_the_numbers_they_rebind() -> None:
    numbering = RtpNumbering()
    numbering.observe(load("aiortc-1.16-offer.sdp"))  # mid 1, audio-level 2, abs-send-time 3
    numbering.observe(load("chromium-156-offer.sdp"))  # audio-level 1, abs 2, mid 4
    ours = parse(load("aiortc-1.16-offer.sdp"))
    numbering.number_offer(ours, negotiated=set())
    assert by_section(ours) == {"1": {MID: 4, AUDIO_LEVEL: 1}, "2": {MID: 4, ABS_SEND_TIME: 2}}


def test_negotiated_sections_keep_their_numbers_and_outrank_the_rest() -> None:
    """Section 1 was negotiated with aiortc's numbering (sdes:mid = 1). A new section
    must use the same id for sdes:mid (one id space per BUNDLE group), so id 1 is not
    free for ssrc-audio-level even though libwebrtc and the peer's later offer use it."""
    numbering = RtpNumbering()
    numbering.observe(load("chromium-156-offer.sdp"))
    ours = parse(load("aiortc-1.16-offer.sdp"))
    audio = ours.media[1]
    video = ours.media[2]
    video.kind = "audio"  # a second audio section, new
    video.rtp.codecs = list(audio.rtp.codecs)
    video.rtp.headerExtensions = list(audio.rtp.headerExtensions)
    video.fmt = list(audio.fmt)
    video.ssrc_group = []
    numbering.number_offer(ours, negotiated={"1"})
    sections = by_section(ours)
    assert sections["1"] == {MID: 1, AUDIO_LEVEL: 2}  # untouched
    assert sections["2"] == {MID: 1, AUDIO_LEVEL: 2}
    extension_ids(ours)
    payload_types(ours)


def remote_video(extmaps: list[int], payload_types: list[int]) -> str:
    """A remote SDP with one video section binding ``extmaps`` to made-up URIs and
    ``payload_types`` to made-up codecs."""
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, payload_types))}",
        "a=mid:1",
        *(f"a=extmap:{i} urn:example:other-{i}" for i in extmaps),
        *(f"a=rtpmap:{pt} x-other-{pt}/90000" for pt in payload_types),
    ]
    return "\r\n".join(lines) + "\r\n"


def test_an_extension_with_no_free_id_is_left_out() -> None:
    numbering = RtpNumbering()
    numbering.observe(remote_video(list(range(1, 15)), [96]))
    ours = parse(load("aiortc-1.16-offer.sdp"))
    numbering.number_offer(ours, negotiated=set())
    assert by_section(ours) == {"1": {}, "2": {}}


def test_rtx_follows_its_codec_and_a_codec_without_a_free_type_is_left_out() -> None:
    """The peer's made-up codecs take every dynamic payload type but 96 and 97: Opus
    (whose 111 is taken) gets 96, VP8 97, and VP8's RTX and both H.264 find none."""
    numbering = RtpNumbering()
    numbering.observe(remote_video([], [*range(35, 64), *range(98, 128)]))
    ours = parse(load("aiortc-1.16-offer.sdp"))
    numbering.number_offer(ours, negotiated=set())
    audio, video = ours.media[1], ours.media[2]
    assert [c.payloadType for c in audio.rtp.codecs] == [96, 9, 0, 8]
    assert [(c.mimeType, c.payloadType) for c in video.rtp.codecs] == [("video/VP8", 97)]
    assert ours.media[2].fmt == [97]


def test_rtx_apt_names_the_renumbered_codec() -> None:
    ours = parse(load("aiortc-1.16-offer.sdp"))
    RtpNumbering().number_offer(ours, negotiated=set())
    video = {c.payloadType: c for c in ours.media[2].rtp.codecs}
    for codec in video.values():
        if codec.mimeType.lower() == "video/rtx":
            assert video[codec.parameters["apt"]].mimeType.lower() != "video/rtx"
    assert {c.parameters.get("apt") for c in video.values()} == {None, 96, 102, 108}


@pytest.mark.parametrize(
    "junk",
    ["", "not sdp", "v=0\r\nm=audio x\r\n", "v=0\r\nm=audio 9 RTP/AVP 96\r\na=extmap:x y\r\n"],
)
def test_observing_junk_changes_nothing(junk: str) -> None:
    numbering = RtpNumbering()
    numbering.observe(junk)
    ours = parse(load("aiortc-1.16-offer.sdp"))
    numbering.number_offer(ours, negotiated=set())
    assert by_section(ours)["1"] == {MID: 4, AUDIO_LEVEL: 1}


async def test_aiortc_answers_with_the_offer_s_numbers() -> None:
    """Answers need no renumbering: aiortc answers Chromium's offer with Chromium's ids
    and dynamic payload types (the captured answer shows the same)."""
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=load("chromium-156-offer.sdp"), type="offer")
        )
        answer = parse((await pc.createAnswer()).sdp)
    finally:
        await pc.close()
    theirs_ext = extension_ids(parse(load("chromium-156-offer.sdp")))
    theirs_pt = payload_types(parse(load("chromium-156-offer.sdp")))
    for sample in (answer, parse(load("aiortc-1.16-answer.sdp"))):
        assert extension_ids(sample)
        for ext_id, uri in extension_ids(sample).items():
            assert theirs_ext[ext_id] == uri
        for pt, name in payload_types(sample).items():
            assert theirs_pt[pt] == name


def test_the_defaults_are_what_chromium_offers() -> None:
    """The table of libwebrtc ids agrees with the captured Chromium 156 offer."""
    for ext_id, uri in extension_ids(parse(load("chromium-156-offer.sdp"))).items():
        assert LIBWEBRTC_EXTENSION_IDS.get(uri, ext_id) == ext_id
