"""Python and real Trystero 0.25.4 over a lossy, reordering path (on the Python side: see
tests/lossy.py): our SCTP's delayed SACKs and fast paths against libwebrtc's SCTP in both
directions, with 1 MiB messages arriving intact."""

from __future__ import annotations

import pytest

from tests.interop.conftest import JsPeerFactory
from tests.interop.exchange import Medium, connect
from tests.interop.jspeer import GeneratedBytes, decode_data, deterministic_bytes
from tests.lossy import lossy_path

pytestmark = pytest.mark.interop

MIB = 1024 * 1024


async def test_one_mib_each_way_over_a_lossy_path(
    torrent_medium: Medium, js_peer_factory: JsPeerFactory
) -> None:
    js = await js_peer_factory()
    py = await connect(torrent_medium, js, "lossy-room", js_kw={"actions": ["chat"]})
    try:
        with lossy_path(0.02, 0.02, seed=7) as stats:
            await py.room.make_action("chat").send(deterministic_bytes(MIB, "py"))
            got = await js.wait_message("chat", peer_id=py.room.self_id, timeout=60)
            received = decode_data(got["data"])
            assert (received.length, received.sha256) == (MIB, GeneratedBytes(MIB, "py").sha256)

            await js.send("chat", GeneratedBytes(MIB, "js"), progress=False, timeout=60)
            data, sender, _ = await py.message(60)
            assert (data, sender) == (deterministic_bytes(MIB, "js"), js.self_id)
        assert stats.dropped > 10  # SACKs from Trystero and its DATA were really lost
        assert py.errors == []
    finally:
        await py.room.leave()
