"""Ask a peer and get an answer: request actions and named remote calls.

A request action (Trystero's ``makeAction(name, {kind: 'request'})``) pairs every request
with its reply, its error, or a timeout. ``room.expose`` / ``room.call`` build named calls on
top, and ``peermesh.caller_id()`` tells a function who is calling. Runs offline on a local
tracker:

    python examples/request_reply.py
"""

from __future__ import annotations

import asyncio

import peermesh
from peermesh.servers.tracker import serve_tracker
from peermesh.torrent import join_room

LOOPBACK_ONLY = {"rtc_config": {"iceServers": []}, "ice_addresses": ["127.0.0.1"]}


async def main() -> None:
    async with await serve_tracker("127.0.0.1", 0, interval=10) as tracker:
        options = {"app_id": "my-app", "relay_urls": [tracker.url], **LOOPBACK_ONLY}
        async with (
            await join_room("shop", peer_id="server".ljust(20, "0"), **options) as server,
            await join_room("shop", peer_id="client".ljust(20, "0"), **options) as client,
        ):
            # The server answers price requests; an unknown item is an error reply.
            prices = {"apple": 0.5, "pear": 0.75}
            quote = server.make_action("quote", kind="request")

            @quote.on_request
            def price(item: object, peer_id: str, metadata: object) -> float:
                if item not in prices:
                    raise LookupError(f"no such item: {item}")
                return prices[str(item)]

            # ...and exposes a named function that knows its caller.
            baskets: dict[str, list[str]] = {}

            @server.expose
            async def add_to_basket(item: str, count: int = 1) -> int:
                basket = baskets.setdefault(peermesh.caller_id(), [])
                basket.extend([item] * count)
                return len(basket)

            met = asyncio.Event()
            client.on_peer_join(lambda peer_id: met.set())
            await asyncio.wait_for(met.wait(), 20)

            ask = client.make_action("quote", kind="request")
            print("apple costs", await ask.request("apple", server.self_id, timeout=5))
            try:
                await ask.request("durian", server.self_id, timeout=5)
            except peermesh.RequestError as exc:
                print("durian:", exc.remote_message)

            size = await client.call(server.self_id, "add_to_basket", "pear", count=3)
            print(f"basket holds {size}; server saw caller {next(iter(baskets))[:6]}")
            assert baskets == {client.self_id: ["pear"] * 3}
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
