"""A per-peer socket for control messages and a flow-controlled byte stream for a file.

``room.socket(peer, name)`` is a message socket to one peer (``async for``); ``room.
open_stream(peer, name)`` gives asyncio-style reader/writer ends whose writer can only run
``window`` bytes ahead of what the reader consumed — a slow reader slows the sender, and
neither side's memory grows. Runs offline on a local tracker:

    python examples/streams.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from peermesh import Room
from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}
FILE = os.urandom(3 * 1024 * 1024)


async def send_file(sender: Room, receiver_id: str) -> None:
    async with sender.socket(receiver_id, "control") as control:
        await control.send({"offer": "photo.raw", "size": len(FILE)})
        reply = await control.receive()
        assert reply == {"accept": "photo.raw"}, reply
        _reader, writer = await sender.open_stream(receiver_id, "photo.raw", window=128 * 1024)
        for start in range(0, len(FILE), 100_000):
            writer.write(FILE[start : start + 100_000])
            await writer.drain()  # waits while the receiver is a window behind
        writer.close()
        await writer.wait_closed()
        print("sender: done,", await control.receive())


async def receive_file(receiver: Room, sender_id: str) -> None:
    async with receiver.socket(sender_id, "control") as control:
        offer = await control.receive()
        assert isinstance(offer, dict)
        reader, writer = await receiver.open_stream(sender_id, offer["offer"], window=128 * 1024)
        await control.send({"accept": offer["offer"]})
        digest, received = hashlib.sha256(), 0
        async for chunk in reader:  # until the sender closes its end
            digest.update(chunk)
            received += len(chunk)
            await asyncio.sleep(0.001)  # a deliberately slow consumer
        writer.close()
        ok = digest.digest() == hashlib.sha256(FILE).digest()
        print(f"receiver: {received} bytes, sha256 {'ok' if ok else 'MISMATCH'}")
        assert ok
        assert received == offer["size"]
        await control.send("thanks")


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        async with (
            await join_room("files", peer_id="alice".ljust(20, "0"), **options) as alice,
            await join_room("files", peer_id="bob".ljust(20, "0"), **options) as bob,
        ):
            met = asyncio.Event()
            bob.on_peer_join(lambda peer_id: met.set())
            await asyncio.wait_for(met.wait(), 20)
            await asyncio.wait_for(
                asyncio.gather(send_file(alice, bob.self_id), receive_file(bob, alice.self_id)),
                30,
            )
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
