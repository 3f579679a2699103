"""Fixtures for the Node interop harness (see jspeer.py).

- ``bittorrent_tracker``: URL (``ws://127.0.0.1:N``) of a fresh npm bittorrent-tracker
  (WebSocket only, clients told to announce every 10 s), stopped after the test.
- ``torrent_medium``: the torrent :class:`~tests.interop.exchange.Medium` alone (our embedded
  tracker, 10 s announce interval), for tests that need one strategy only.
- ``signal_medium``: a :class:`~tests.interop.exchange.Medium` for each of torrent (our
  embedded tracker, 10 s announce interval) and nostr (a real local Nostr relay): tests that
  use it run once per strategy.
- ``js_peer_factory``: ``await js_peer_factory(name="a")`` starts a :class:`JsPeer`; all of
  them are closed (killed if needed) at teardown. If the test failed, their stderr tails are
  printed so they show up in pytest's report. A ``fatal`` event from any of them (uncaught
  exception or unhandled rejection in Node) fails the test at teardown.

Nothing here skips: without Node or ``tests/interop/node_modules`` the fixtures fail with a
message telling you to run ``make test`` (which runs ``npm ci``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from peermesh.servers.tracker import serve_tracker
from tests.interop.exchange import Medium
from tests.interop.jspeer import (
    JsHarnessSetupError,
    JsPeer,
    check_node_modules,
    start_bittorrent_tracker,
)
from tests.interop.nostr_relay import start_nostr_relay

JsPeerFactory = Callable[..., Awaitable[JsPeer]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"_interop_rep_{report.when}", report)
    return report


def _require_harness() -> None:
    try:
        check_node_modules()
    except JsHarnessSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def bittorrent_tracker() -> AsyncIterator[str]:
    _require_harness()
    async with start_bittorrent_tracker() as url:
        yield url


@asynccontextmanager
async def medium_for(strategy: str) -> AsyncIterator[Medium]:
    """A fresh signalling server on loopback for ``"torrent"`` (our embedded tracker, 10 s
    announce interval) or ``"nostr"`` (a real local Nostr relay), as a :class:`Medium`."""
    _require_harness()
    if strategy == "torrent":
        server = await serve_tracker("127.0.0.1", 0, interval=10)
        try:
            yield Medium("torrent", server.url, stagger=1.0)
        finally:
            await server.close()
    else:
        async with start_nostr_relay() as url:
            # past the incumbent's first announces, so it is found as such
            yield Medium("nostr", url, stagger=1.5)


@pytest.fixture
async def torrent_medium() -> AsyncIterator[Medium]:
    async with medium_for("torrent") as medium:
        yield medium


@pytest.fixture(params=["torrent", "nostr"])
async def signal_medium(request: pytest.FixtureRequest) -> AsyncIterator[Medium]:
    async with medium_for(request.param) as medium:
        yield medium


@pytest.fixture
async def js_peer_factory(request: pytest.FixtureRequest) -> AsyncIterator[JsPeerFactory]:
    _require_harness()
    peers: list[JsPeer] = []

    async def factory(**kwargs: Any) -> JsPeer:
        peer = await JsPeer.start(**kwargs)
        peers.append(peer)
        return peer

    try:
        yield factory
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        rep = getattr(request.node, "_interop_rep_call", None)
        fatal = {p.name: p.fatal_events() for p in peers if p.fatal_events()}
        if (rep is not None and rep.failed) or fatal:
            for p in peers:
                print(f"\n{p!r}\n{p.stderr_tail(200)}", file=sys.stderr)
        if fatal:
            # An uncaught exception / unhandled rejection inside a JS peer is a harness or
            # Trystero problem that must not pass silently.
            pytest.fail(f"JS peers reported fatal errors: {fatal}", pytrace=False)
