"""A passive backup peer: silent until someone active shows up, then a normal peer.

``passive=True`` is Trystero's dormant mode: the room makes no offers and sends no
announcements (on trackers it announces as a seeder with no offers), and two passive peers
never connect to each other. The first non-passive peer wakes it. Useful for an always-on
service that should cost nothing while a room is empty. Runs offline on a local tracker:

    python examples/passive_backup.py
"""

from __future__ import annotations

import asyncio

from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        backup = await join_room(
            "archive", peer_id="backup".ljust(20, "0"), passive=True, **options
        )
        other_backup = await join_room(
            "archive", peer_id="backup2".ljust(20, "0"), passive=True, **options
        )
        await asyncio.sleep(1.5)
        print(f"backups passive={backup.is_passive}, peers after 1.5 s: {len(backup.get_peers())}")
        assert not backup.get_peers()  # passive peers never wake each other

        woke = asyncio.Event()
        backup.on_peer_join(lambda peer_id: woke.set())
        saved: asyncio.Queue[object] = asyncio.Queue()
        backup.make_action("save").on_message(lambda data, peer_id, meta: saved.put_nowait(data))

        async with await join_room("archive", peer_id="editor".ljust(20, "0"), **options) as editor:
            met = asyncio.Event()

            @editor.on_peer_join
            def _(peer_id: str) -> None:
                if peer_id == backup.self_id:
                    met.set()

            # Each side admits the other on its own; wait for both before sending.
            await asyncio.wait_for(asyncio.gather(woke.wait(), met.wait()), 20)
            print("editor joined; the backup woke and connected")
            await editor.make_action("save").send({"doc": 1, "text": "draft"}, backup.self_id)
            print("backup saved", await asyncio.wait_for(saved.get(), 10))
        await backup.leave()
        await other_backup.leave()
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
