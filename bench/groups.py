"""Scenarios with more than two peer processes, or more than one signalling strategy.

Every one of them measures Python peers (on :attr:`~bench.scenarios.Settings.group_loop`
only, to keep the suite's duration sane) and Trystero-in-Node peers separately: the pairs are
``Node⇄Node`` (the anchor of the ratios) and ``Py⇄Py``. Signalling servers all run locally
(see :func:`signalling_server`): our embedded tracker for ``torrent``, a real Nostr relay
(``tests/interop/nostr_relay.mjs``) for ``nostr``, mosquitto (``make mosquitto``) over its
WebSocket listener for ``mqtt``, our embedded ws-relay server for ``ws-relay``.

``memory.per_peer``, ``memory.first_peer``
    One hub process and ``--memory-peers`` spoke processes of the same runtime, one room.
    The hub joins alone and idles 1 s; then the spokes join one at a time, each once the hub
    sees the previous one (plus 0.3 s to settle). The hub's RSS is read, after a full
    garbage collection, before the first spoke and after each one. ``per_peer``: the
    least-squares slope of the hub's RSS over the number of peers it holds, 1..N, in KiB
    per connected peer; ``first_peer``: the growth from 0 to 1 peer, the one-time cost of
    a first connection (spokes also connect to each other; only the hub is measured).
``mesh.<strategy>.n<N>.{time,cpu,rss}``
    N fresh peer processes (``--mesh-sizes``, default 5, 10, 20; ``--mesh-50`` adds 50), one
    room on a fresh signalling server; the N join commands are written back to back. Time:
    from just before the join commands were written to the ``peer_joined`` event that
    completed the mesh (every peer reports every other). A run not complete within
    ``--mesh-timeout`` seconds (default 90) fails as "incomplete after T s" with how many of
    the N(N-1)/2 links had formed (both ends report the other). CPU: CPU seconds (user +
    system) each process spent from before its join to completion, mean over peers. RSS:
    each process's resident set at completion, mean over peers.
``late.<strategy>.<order>``
    Two fresh peer processes; the second joins ``--late-delay`` seconds (default 5) after the
    first one's ``joining`` event. Orders: ``late-lower`` (the late joiner has the lower peer
    id) and ``late-higher``; both peers run the same program, so the order is had by
    choosing which one joins first. Figure: from the
    late peer's ``joining`` event to the later ``peer_joined`` event (both see the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from peermesh.servers.relay import serve_relay
from peermesh.servers.tracker import serve_tracker

from .model import Figure, Pair, Sample
from .peers import Event, PeerError, PeerProcess, PeerSpec
from .scenarios import (
    PAIR_SCENARIOS,
    TRACKER_INTERVAL,
    Log,
    Scenario,
    Settings,
    _error_text,
    _fail_rest,
    _start_pair,
    cpu_seconds,
    join_via,
    rss_mib,
)

__all__ = [
    "LATE_ORDERS",
    "SCENARIOS",
    "STRATEGIES",
    "LateJoinScenario",
    "MemoryScenario",
    "MeshScenario",
    "signalling_server",
]

STRATEGIES = ("torrent", "nostr", "mqtt", "ws-relay")
LATE_ORDERS = ("late-lower", "late-higher")
#: Peer processes started at once (importing aiortc or wrtc is CPU-bound).
START_CONCURRENCY = 4
START_TIMEOUT = 60.0
SETTLE_S = 0.3


@contextlib.asynccontextmanager
async def signalling_server(strategy: str) -> AsyncIterator[str]:
    """A fresh local signalling server for ``strategy``; yields the URL peers join with.

    Raises ``ValueError`` for an unknown strategy; the Nostr relay and mosquitto helpers of
    ``tests/`` raise if Node's packages or mosquitto are missing (``make bench`` installs
    both).
    """
    if strategy == "torrent":
        tracker = await serve_tracker("127.0.0.1", port=0, interval=TRACKER_INTERVAL)
        try:
            yield tracker.url
        finally:
            await tracker.close()
    elif strategy == "ws-relay":
        relay = await serve_relay("127.0.0.1", port=0)
        try:
            yield relay.url
        finally:
            await relay.close()
    elif strategy == "nostr":
        from tests.interop.nostr_relay import start_nostr_relay

        async with start_nostr_relay() as url:
            yield url
    elif strategy == "mqtt":
        from tests.brokers import start_mosquitto

        async with start_mosquitto(websockets=True) as broker:
            assert broker.ws_url is not None
            yield broker.ws_url
    else:
        raise ValueError(f"unknown strategy {strategy!r}")


def group_pairs(settings: Settings) -> list[Pair]:
    """``Node⇄Node`` then ``Py⇄Py`` on the group loop (filtered by ``--pairs``)."""
    node, py = PeerSpec("node"), PeerSpec("python", settings.group_loop)
    pairs = [Pair(node, node), Pair(py, py)]
    if settings.pairs is not None:
        wanted = set(settings.pairs)
        pairs = [p for p in pairs if p.key in wanted or p.key.split("@")[0] in wanted]
    return pairs


async def start_many(spec: PeerSpec, count: int) -> list[PeerProcess]:
    """``count`` processes of ``spec``, at most :data:`START_CONCURRENCY` starting at once;
    all closed again if any fails (then its :class:`PeerError` or ``OSError`` is raised)."""
    gate = asyncio.Semaphore(START_CONCURRENCY)

    async def one() -> PeerProcess:
        async with gate:
            return await PeerProcess.start(spec, ready_timeout=START_TIMEOUT)

    started = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    peers = [p for p in started if isinstance(p, PeerProcess)]
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
        await close_all(peers)
        raise errors[0]
    return peers


async def close_all(peers: Sequence[PeerProcess]) -> None:
    await asyncio.gather(*(p.close() for p in peers))


def _seen(peer: PeerProcess) -> dict[str, Event]:
    """Peers ``peer`` reports as joined and not left since: id -> its ``peer_joined``."""
    seen: dict[str, Event] = {}
    for event in peer.events:
        if event.get("event") == "peer_joined":
            seen[str(event.get("peer_id"))] = event
        elif event.get("event") == "peer_left":
            seen.pop(str(event.get("peer_id")), None)
    return seen


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _show(sample: Sample, unit: str) -> str:
    return f"{sample.value:.3g} {unit}" if sample.value is not None else str(sample.error)


# -- memory per connected peer --------------------------------------------------------------


class MemoryScenario:
    name: ClassVar[str] = "memory"
    description: ClassVar[str] = "hub process RSS per connected peer (same-runtime spokes)"

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures = []
        n = settings.memory_peers
        for pair in group_pairs(settings):
            join = (
                f"one hub process and {n} spoke processes of the same runtime in one room on "
                "a fresh local tracker; the hub joins alone and idles 1 s, then the spokes "
                "join one at a time, each once the hub sees the previous one "
                f"(+{SETTLE_S:g} s and a full garbage collection before each reading)"
            )
            per_peer = Figure(
                key="memory.per_peer",
                title=f"memory per connected peer (hub + {n})",
                pair=pair,
                arrow="⇄",
                unit="KiB",
                higher_is_better=False,
                definition=(
                    f"{join}; least-squares slope of the hub's RSS over the number of peers "
                    f"it holds, 1..{n} (the first connection's one-time cost is its own row)"
                ),
            )
            first_peer = Figure(
                key="memory.first_peer",
                title="memory: one-time cost of the first connection",
                pair=pair,
                arrow="⇄",
                unit="KiB",
                higher_is_better=False,
                definition=(
                    f"{join}; the hub's RSS growth from 0 to 1 connected peer (code and "
                    "caches first touched by a connection, not repeated per peer)"
                ),
            )
            for run in range(settings.runs):
                rss, error = await self._once(pair, n)
                label = f"memory {per_peer.pair_label:<22} run {run + 1}"
                if error is not None:  # else rss holds n + 1 ≥ 3 readings
                    failed = Sample(None, {"rss_mib": rss}, error=error)
                    per_peer.samples.append(failed)
                    first_peer.samples.append(failed)
                    log(f"{label}: {failed.error}")
                    continue
                details = {"rss_mib": rss}
                slope = Sample(_slope(range(1, len(rss)), rss[1:]) * 1024, details)
                first = Sample((rss[1] - rss[0]) * 1024, details)
                per_peer.samples.append(slope)
                first_peer.samples.append(first)
                log(f"{label}: {_show(slope, 'KiB')} per peer, first {_show(first, 'KiB')}")
            figures += [per_peer, first_peer]
        return figures

    @staticmethod
    async def _once(pair: Pair, n: int) -> tuple[list[float], str | None]:
        """The hub's RSS (MiB) holding 0..n peers, and why the run stopped early if it did."""
        room_id = f"bench-{uuid.uuid4().hex[:16]}"
        rss: list[float] = []
        async with signalling_server("torrent") as url:
            try:
                peers = await start_many(pair.first, n + 1)
            except (PeerError, OSError) as exc:
                return rss, f"start: {_error_text(exc)}"
            hub, spokes = peers[0], peers[1:]
            try:
                await join_via(hub, "torrent", url, room_id)
                await asyncio.sleep(1.0)
                await hub.command("collect")
                rss.append(rss_mib(hub.pid))
                for spoke in spokes:
                    await join_via(spoke, "torrent", url, room_id)
                    await hub.wait_event("peer_joined", peer_id=spoke.self_id, timeout=30)
                    await asyncio.sleep(SETTLE_S)
                    await hub.command("collect")
                    rss.append(rss_mib(hub.pid))
            except PeerError as exc:
                return rss, _error_text(exc)
            finally:
                await close_all(peers)
        return rss, None


# -- full mesh ------------------------------------------------------------------------------


class MeshScenario:
    name: ClassVar[str] = "mesh"
    description: ClassVar[str] = "full mesh of N peer processes: time, CPU and RSS per peer"

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures: list[Figure] = []
        for strategy in settings.mesh_strategies:
            for n in settings.mesh_sizes:
                trios = []
                for pair in group_pairs(settings):
                    trio = self._figures(strategy, n, pair, settings)
                    trios.append(trio)
                    for run in range(settings.group_runs):
                        samples = await self._once(strategy, n, pair, settings)
                        for figure, sample in zip(trio, samples, strict=True):
                            figure.samples.append(sample)
                        time_s, cpu, rss = samples
                        log(
                            f"mesh {strategy:<7} N={n:<3} {trio[0].pair_label:<16} "
                            f"run {run + 1}: {_show(time_s, 's')}"
                            + (
                                f", {cpu.value:.2f} CPU s/peer, {rss.value:.0f} MiB/peer"
                                if cpu.value is not None and rss.value is not None
                                else ""
                            )
                        )
                # the table groups rows by figure: time of every pair, then CPU, then RSS
                figures += [trio[i] for i in range(3) for trio in trios]
        return figures

    @staticmethod
    def _figures(strategy: str, n: int, pair: Pair, settings: Settings) -> list[Figure]:
        common = (
            f"{n} fresh peer processes, one room on a fresh local {strategy} server, join "
            "commands written back to back; complete when every peer reports every other; "
            f"time-boxed to {settings.mesh_timeout:g} s (else the run fails as incomplete)"
        )
        return [
            Figure(
                key=f"mesh.{strategy}.n{n}.{what}",
                title=f"mesh {strategy} N={n}: {title}",
                pair=pair,
                arrow="⇄",
                unit=unit,
                higher_is_better=False,
                definition=f"{common}; {definition}",
            )
            for what, title, unit, definition in (
                (
                    "time",
                    "all see all",
                    "s",
                    "from just before the join commands were written to the peer_joined "
                    "event that completed the mesh (parent monotonic clock)",
                ),
                (
                    "cpu",
                    "CPU per peer",
                    "CPU s",
                    "user + system CPU seconds from before the join to completion, "
                    "mean over the peers",
                ),
                ("rss", "RSS per peer", "MiB", "resident set at completion, mean over peers"),
            )
        ]

    @staticmethod
    async def _once(strategy: str, n: int, pair: Pair, settings: Settings) -> list[Sample]:
        room_id = f"bench-{uuid.uuid4().hex[:16]}"
        links_total = n * (n - 1) // 2

        def failed(error: str, details: dict[str, object] | None = None) -> list[Sample]:
            return [Sample(None, dict(details or {}), error=error) for _ in range(3)]

        async with signalling_server(strategy) as url:
            started = time.monotonic()
            try:
                peers = await start_many(pair.first, n)
            except (PeerError, OSError) as exc:
                return failed(f"start: {_error_text(exc)}")
            start_s = time.monotonic() - started
            try:
                cpu0 = [cpu_seconds(p.pid) for p in peers]
                t0 = time.monotonic()
                joins = await asyncio.gather(
                    *(join_via(p, strategy, url, room_id, timeout=60) for p in peers),
                    return_exceptions=True,
                )
                errors = [e for e in joins if isinstance(e, BaseException)]
                if errors:
                    return failed(f"join: {_error_text(errors[0])}")
                ids = {p.self_id for p in peers}
                deadline = t0 + settings.mesh_timeout
                while True:
                    seen = [_seen(p) for p in peers]
                    complete = all(
                        ids - {p.self_id} <= s.keys() for p, s in zip(peers, seen, strict=True)
                    )
                    if complete or time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.1)
                cpu = [cpu_seconds(p.pid) - c for p, c in zip(peers, cpu0, strict=True)]
                rss = [rss_mib(p.pid) for p in peers]
            finally:
                await close_all(peers)
        by_id = {p.self_id: s for p, s in zip(peers, seen, strict=True)}
        links = sum(1 for a in ids for b in ids if a < b and b in by_id[a] and a in by_id[b])
        joinings = [e["arrived"] for p in peers if (e := p.find("joining")) is not None]
        details: dict[str, object] = {
            "peers": n,
            "links": links,
            "links_total": links_total,
            "process_start_s": start_s,
            "last_joining_s": max(joinings, default=t0) - t0,
            "cpu_s": cpu,
            "rss_mib": rss,
            "join_errors": sum(1 for p in peers for e in p.events if e["event"] == "join_error"),
        }
        if not complete:
            return failed(
                f"incomplete after {settings.mesh_timeout:g} s: {links}/{links_total} links",
                details,
            )
        t1 = max(e["arrived"] for s in seen for e in s.values())
        return [
            Sample(t1 - t0, details),
            Sample(statistics.fmean(cpu), details),
            Sample(statistics.fmean(rss), details),
        ]


# -- late joiner ----------------------------------------------------------------------------


class LateJoinScenario:
    name: ClassVar[str] = "late"
    description: ClassVar[str] = "second peer joins seconds after the first, per strategy"

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures: list[Figure] = []
        for strategy in settings.late_strategies:
            try:
                async with signalling_server(strategy) as url:
                    figures += await self._strategy(strategy, url, settings, log)
            except (OSError, RuntimeError) as exc:
                # the server itself could not start: every figure of this strategy fails
                for order in LATE_ORDERS:
                    for pair in group_pairs(settings):
                        figure = self._figure(strategy, order, pair, settings)
                        _fail_rest(figure, settings.group_runs, f"server: {_error_text(exc)}")
                        figures.append(figure)
        return figures

    @staticmethod
    def _figure(strategy: str, order: str, pair: Pair, settings: Settings) -> Figure:
        return Figure(
            key=f"late.{strategy}.{order}",
            title=f"late joiner +{settings.late_delay:g} s, {strategy}, {order}",
            pair=pair,
            arrow="⇄",
            unit="ms",
            higher_is_better=False,
            definition=(
                f"two fresh peer processes on a local {strategy} server, fresh room; the "
                f"second joins {settings.late_delay:g} s after the first one's 'joining' "
                f"event and has the {order.split('-')[1]} peer id (of the two processes, "
                "the one that must be late joins second); from the second's 'joining' "
                "event to the later 'peer_joined' event (both see the other); parent "
                "monotonic clock"
            ),
        )

    async def _strategy(
        self, strategy: str, url: str, settings: Settings, log: Log
    ) -> list[Figure]:
        figures = []
        for order in LATE_ORDERS:
            for pair in group_pairs(settings):
                figure = self._figure(strategy, order, pair, settings)
                for run in range(settings.group_runs):
                    sample = await self._once(strategy, url, order, pair, settings)
                    figure.samples.append(sample)
                    log(
                        f"late {strategy:<8} {order:<11} {figure.pair_label:<16} "
                        f"run {run + 1}: {_show(sample, 'ms')}"
                    )
                figures.append(figure)
        return figures

    @staticmethod
    async def _once(strategy: str, url: str, order: str, pair: Pair, settings: Settings) -> Sample:
        room_id = f"bench-{uuid.uuid4().hex[:16]}"
        try:
            a, b = await _start_pair(pair)
        except (PeerError, OSError) as exc:
            return Sample(None, error=f"start: {_error_text(exc)}")
        # Both peers run the same program: the id order is had by choosing who goes first.
        if (b.self_id < a.self_id) != (order == "late-lower"):
            a, b = b, a
        try:
            await join_via(a, strategy, url, room_id)
            first = await a.wait_event("joining", timeout=5)
            await asyncio.sleep(max(0.0, first["arrived"] + settings.late_delay - time.monotonic()))
            await join_via(b, strategy, url, room_id)
            second = await b.wait_event("joining", timeout=5)
            pa, pb = await asyncio.gather(
                a.wait_event("peer_joined", peer_id=b.self_id, timeout=settings.late_timeout),
                b.wait_event("peer_joined", peer_id=a.self_id, timeout=settings.late_timeout),
            )
        except PeerError as exc:
            return Sample(None, error=_error_text(exc))
        finally:
            await asyncio.gather(a.close(), b.close())
        t0 = second["arrived"]
        details = {
            "room_id": room_id,
            "first_id": a.self_id,
            "late_id": b.self_id,
            "gap_s": second["arrived"] - first["arrived"],
            "first_sees_late_ms": (pa["arrived"] - t0) * 1000,
            "late_sees_first_ms": (pb["arrived"] - t0) * 1000,
            "join_errors": [e for p in (a, b) for e in p.events if e["event"] == "join_error"],
        }
        return Sample((max(pa["arrived"], pb["arrived"]) - t0) * 1000, details)


SCENARIOS: dict[str, type[Scenario]] = {
    **PAIR_SCENARIOS,
    MemoryScenario.name: MemoryScenario,
    MeshScenario.name: MeshScenario,
    LateJoinScenario.name: LateJoinScenario,
}
