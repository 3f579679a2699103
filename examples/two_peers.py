"""Two peers in one process meet through a local tracker, chat, ping and leave.

Runs offline: it starts peermesh's embedded tracker on a free loopback port. Several
identities in one process (``peer_id=``) is also the way to test an app without a network.

    python examples/two_peers.py
"""

from __future__ import annotations

import asyncio

from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        async with (
            await join_room("lobby", peer_id="alice".ljust(20, "0"), **options) as alice,
            await join_room("lobby", peer_id="bob".ljust(20, "0"), **options) as bob,
        ):
            met = asyncio.Event()
            alice.on_peer_join(lambda peer_id: met.set())
            await asyncio.wait_for(met.wait(), 20)

            got = asyncio.Queue[str]()
            bob.make_action("chat").on_message(
                lambda data, peer_id, metadata: got.put_nowait(f"{peer_id[:5]} says {data}")
            )
            await alice.make_action("chat").send({"text": "hello"})
            print(await asyncio.wait_for(got.get(), 5))

            rtt = await alice.ping(bob.self_id)
            print(f"ping {rtt:.1f} ms")
        print("both left")


if __name__ == "__main__":
    asyncio.run(main())
