"""Admit only peers that know an invitation code, and follow the room as a stream of events.

``on_peer_handshake`` runs for every peer before the app sees it (Trystero's
``onPeerHandshake``): both sides can send and receive messages, and raising rejects the
peer. Here the host asks each guest for a code; a guest with the wrong one never joins and
the host's ``on_join_error`` says why. Runs offline on a local tracker:

    python examples/admission.py
"""

from __future__ import annotations

import asyncio
import hmac

from peermesh import (
    HandshakeHook,
    HandshakeReceive,
    HandshakeSend,
    JoinErrorEvent,
    PeerJoined,
    PeerLeft,
)
from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}
INVITATION = "blue-harbour-42"


async def host_checks_code(
    peer_id: str, send: HandshakeSend, receive: HandshakeReceive, is_initiator: bool
) -> None:
    await send("code?")
    code, _metadata = await receive()
    if not isinstance(code, str) or not hmac.compare_digest(code, INVITATION):
        raise PermissionError("wrong invitation code")


def guest_answers(code: str) -> HandshakeHook:
    async def hook(
        peer_id: str, send: HandshakeSend, receive: HandshakeReceive, is_initiator: bool
    ) -> None:
        question, _ = await receive()
        if question == "code?":
            await send(code)

    return hook


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        host = await join_room(
            "club",
            peer_id="host".ljust(20, "0"),
            on_peer_handshake=host_checks_code,
            handshake_timeout=5,
            **options,
        )
        refused: asyncio.Queue[JoinErrorEvent] = asyncio.Queue()
        host.on_join_error(refused.put_nowait)
        events = host.events()

        guest = await join_room(
            "club",
            peer_id="guest".ljust(20, "0"),
            on_peer_handshake=guest_answers(INVITATION),
            **options,
        )
        event = await asyncio.wait_for(anext(events), 20)
        assert event == PeerJoined(guest.self_id), event
        print(f"host: {event.peer_id[:5]} joined with the right code")

        intruder = await join_room(
            "club",
            peer_id="intruder".ljust(20, "0"),
            on_peer_handshake=guest_answers("guess"),
            **options,
        )
        error = await asyncio.wait_for(refused.get(), 20)
        print(f"host: refused {error.peer_id and error.peer_id[:8]}: {error.error}")
        assert intruder.self_id not in host.get_peers()

        await guest.leave()
        event = await asyncio.wait_for(anext(events), 10)
        assert event == PeerLeft(guest.self_id), event
        print(f"host: {event.peer_id[:5]} left")
        await intruder.leave()
        await host.leave()
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
