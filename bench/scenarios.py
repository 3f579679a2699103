"""The two-peer benchmark scenarios. Each one runs peer processes (see :mod:`bench.peers`) on
a fresh embedded tracker per pair and returns :class:`~bench.model.Figure` objects; the
scenarios with more processes or other strategies are in :mod:`bench.groups`.

To add one, write a class with a ``name``, a ``description`` and ``async run(settings, log)
-> list[Figure]``, and register it in :data:`PAIR_SCENARIOS` (or
:data:`bench.groups.SCENARIOS`); the CLI's ``--only`` and the report pick it up.

Figures so far (all times are differences of the parent's ``time.monotonic()`` stamps of
peer events, see :mod:`bench.peers`):

``join.simultaneous`` / ``join.staggered``
    Two fresh peer processes, already imported (``ready``), on a fresh tracker and a fresh
    room. Simultaneous: both join commands are written back to back. Staggered: the second
    is written ``--stagger`` seconds (default 0.5) after the first peer's ``joining``
    event. Figure: from the later ``joining`` event (the second join call) to the later
    ``peer_joined`` event (both sides report the other). In a pair ``A⇄B``, A joins first.
    Peer ids are random, and an offer collision is settled by id (a peer with offers out
    ignores offers from higher ids), so processes are respawned until the id order is
    ``--id-order`` (default ``second-lower``: the second joiner's first offer is answered).
    Even so, "simultaneous" stays a race: whichever announce reaches the tracker second has
    its offers forwarded, and if that was the first joiner's, the pair waits for the next
    warm-up announce (+0.233 s), so its samples are bimodal.
``throughput``
    One connected pair per direction, reused for all its runs. Per run the sender
    generates ``--size-mib`` MiB (default 64) of deterministic bytes *before* the clock,
    then sends them as one binary action message. Figure: size / (receiver's ``received``
    event − sender's ``sending`` event), in MiB/s; ``received`` is emitted on entry to the
    message callback, the payload's SHA-256 is checked right after (outside the interval).
``bulk``
    As ``throughput``, but per run one ``--bulk-count`` (default 1000; quick 250) times a
    64 KiB payload, each send awaited before the next; the receiver counts them silently
    (``expect``) and emits ``received_all`` in the callback of the last one. Figure: total
    bytes / (``received_all`` − ``sending``), in MiB/s; every message's size is checked.
``loss.<percent>``
    As ``throughput``, while the kernel drops that percentage of UDP datagrams at random
    (nftables in the namespace of ``make bench``, see ``tests/nft.py``), with one message
    size per loss rate (``--loss-cases``, default 16 MiB at 5 % and 256 KiB at 20 %: a
    Python sender moves only about 0.01-0.02 MiB/s at 20 %). Python peers on the group loop
    only, ``--group-runs`` runs. Figure: size / (``received`` − ``sending``), in MiB/s.
``ping.median`` / ``ping.p99``
    One connected pair; the first peer calls ``room.ping(second)`` 20 times untimed, then
    ``--ping-count`` (default 1000) times one after the other, each call timed inside the
    peer. Figures: the median and the 99th percentile (nearest rank) of each run's times.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import psutil  # type: ignore[import-untyped]

from peermesh.servers.tracker import TrackerServer, serve_tracker

from .model import Figure, Pair, Sample
from .peers import Event, PeerError, PeerProcess, PeerSpec

__all__ = [
    "ID_ORDERS",
    "JOIN_MODES",
    "PAIR_SCENARIOS",
    "BulkScenario",
    "JoinScenario",
    "LossScenario",
    "PingScenario",
    "Scenario",
    "Settings",
    "ThroughputScenario",
    "connected_pair",
    "cpu_seconds",
    "join_via",
    "pairs_for",
    "percentile",
    "rss_mib",
]

MIB = 1024 * 1024
APP_ID = "peermesh-bench"
#: Announce interval the embedded tracker advertises (Trystero clamps it to 10-120 s).
TRACKER_INTERVAL = 10
JOIN_MODES = ("simultaneous", "staggered")
#: Which peer of a join pair gets the lower peer id (see :class:`JoinScenario`).
ID_ORDERS = ("second-lower", "first-lower", "random")
#: Respawns allowed to obtain the wanted id order (each has a 1/2 chance).
MAX_RESPAWNS = 40

Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    runs: int
    size: int  # bytes per throughput message
    loops: tuple[str, ...]  # event loops for the Python peers
    join_modes: tuple[str, ...] = JOIN_MODES
    stagger: float = 0.5
    id_order: str = "second-lower"
    join_timeout: float = 30.0
    pairs: tuple[str, ...] | None = None  # keys like "py-node" (any loop); None: all
    bulk_count: int = 1000  # messages per bulk run
    bulk_size: int = 64 * 1024  # bytes per bulk message
    ping_count: int = 1000  # timed pings per run
    memory_peers: int = 8  # connections held by the memory hub
    mesh_sizes: tuple[int, ...] = (5, 10, 20)
    mesh_strategies: tuple[str, ...] = ("torrent", "nostr")
    mesh_timeout: float = 90.0  # time box of one mesh run
    late_strategies: tuple[str, ...] = ("torrent", "nostr", "mqtt", "ws-relay")
    late_delay: float = 5.0  # seconds between the two joins of a late-joiner run
    late_timeout: float = 30.0
    heavy_runs: int | None = None  # runs of the mesh and late scenarios (None: runs)
    # (percent of UDP datagrams dropped, bytes of the message) of the loss scenario
    loss_cases: tuple[tuple[int, int], ...] = ((5, 16 * MIB), (20, 256 * 1024))

    @property
    def group_runs(self) -> int:
        """Runs per figure of the multi-process scenarios (mesh, late joiner)."""
        return self.heavy_runs if self.heavy_runs is not None else self.runs

    @property
    def group_loop(self) -> str:
        """The one event loop of the Python peers in the memory, mesh and late-joiner
        scenarios: the last of :attr:`loops` (uvloop when both are measured)."""
        return self.loops[-1]

    @property
    def transfer_timeout(self) -> float:
        """Generous: 20 s plus 1 s per MiB (the slowest pair does well over 5 MiB/s)."""
        return 20.0 + self.size / MIB


class Scenario(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]

    async def run(self, settings: Settings, log: Log) -> list[Figure]: ...


def pairs_for(settings: Settings) -> list[Pair]:
    """Node⇄Node (the anchor) first, then every Python pair once per event loop."""
    node = PeerSpec("node")
    pairs = [Pair(node, node)]
    for loop in settings.loops:
        py = PeerSpec("python", loop)
        pairs += [Pair(py, py), Pair(py, node), Pair(node, py)]
    if settings.pairs is not None:
        wanted = set(settings.pairs)
        pairs = [p for p in pairs if p.key in wanted or p.key.split("@")[0] in wanted]
    return pairs


@contextlib.asynccontextmanager
async def _tracker() -> AsyncIterator[TrackerServer]:
    tracker: TrackerServer = await serve_tracker("127.0.0.1", port=0, interval=TRACKER_INTERVAL)
    try:
        yield tracker
    finally:
        await tracker.close()


async def _start_pair(pair: Pair) -> tuple[PeerProcess, PeerProcess]:
    """Both processes, started concurrently; each has said ``ready`` when this returns."""
    started = await asyncio.gather(
        PeerProcess.start(pair.first), PeerProcess.start(pair.second), return_exceptions=True
    )
    peers = [p for p in started if isinstance(p, PeerProcess)]
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
        await asyncio.gather(*(p.close() for p in peers))
        raise errors[0]
    return peers[0], peers[1]


async def _join(peer: PeerProcess, tracker: TrackerServer, room_id: str) -> None:
    await join_via(peer, "torrent", tracker.url, room_id)


async def join_via(
    peer: PeerProcess, strategy: str, url: str, room_id: str, *, timeout: float = 30.0
) -> None:
    """``peer`` joins ``room_id`` through the signalling server at ``url``."""
    await peer.command(
        "join", strategy=strategy, tracker_url=url, app_id=APP_ID, room_id=room_id, timeout=timeout
    )


@dataclass(frozen=True)
class _TimedSend:
    """The receiver's events of one timed ``send``, its result, and the measurements."""

    received: Event
    verified: Event
    sent: Event
    details: dict[str, float]

    @property
    def seconds(self) -> float:
        return float(self.details["seconds"])


async def _timed_send(
    sender: PeerProcess,
    receiver: PeerProcess,
    done: str,
    timeout: float,
    *,
    verify_timeout: float,
    **send_args: object,
) -> _TimedSend:
    """Have ``sender`` send to ``receiver`` (``send_args`` go to the ``send`` command) and
    time it from the sender's ``sending`` event to the receiver's ``done`` event; then wait
    for ``verified``. Raises :class:`PeerError` if a peer fails or an event is late."""
    since_s, since_r = sender.mark(), receiver.mark()
    cpu_s, cpu_r = _cpu_seconds(sender.pid), _cpu_seconds(receiver.pid)
    send = asyncio.create_task(
        sender.command("send", target=receiver.self_id, timeout=timeout, **send_args)
    )
    try:
        sending = await sender.wait_event("sending", since=since_s, timeout=10)
        received = await receiver.wait_event(
            done, since=since_r, peer_id=sender.self_id, timeout=timeout
        )
        verified = await receiver.wait_event("verified", since=since_r, timeout=verify_timeout)
        sent = await send
    finally:
        if not send.done():
            send.cancel()
            with contextlib.suppress(BaseException):
                await send
    details = {
        "seconds": received["arrived"] - sending["arrived"],
        "peer_clock_seconds": received["t"] - sending["t"],
        "sender_cpu_s": _cpu_seconds(sender.pid) - cpu_s,
        "receiver_cpu_s": _cpu_seconds(receiver.pid) - cpu_r,
        "sender_rss_mib": _rss_mib(sender.pid),
        "receiver_rss_mib": _rss_mib(receiver.pid),
    }
    return _TimedSend(received, verified, sent, details)


async def _both_joined(a: PeerProcess, b: PeerProcess, timeout: float) -> tuple[Event, Event]:
    ea, eb = await asyncio.gather(
        a.wait_event("peer_joined", peer_id=b.self_id, timeout=timeout),
        b.wait_event("peer_joined", peer_id=a.self_id, timeout=timeout),
    )
    return ea, eb


@contextlib.asynccontextmanager
async def connected_pair(
    pair: Pair, settings: Settings
) -> AsyncIterator[tuple[PeerProcess, PeerProcess]]:
    """Both peers of ``pair`` started, in one fresh room of a fresh tracker, and seeing each
    other; closed on exit. Raises :class:`PeerError` (or ``OSError``) if that fails."""
    async with _tracker() as tracker:
        first, second = await _start_pair(pair)
        try:
            room_id = f"bench-{uuid.uuid4().hex[:16]}"
            await asyncio.gather(_join(first, tracker, room_id), _join(second, tracker, room_id))
            await _both_joined(first, second, settings.join_timeout)
            yield first, second
        finally:
            await asyncio.gather(first.close(), second.close())


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return float("nan")


def _rss_mib(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process(pid).memory_info().rss) / MIB
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (NaN if it is gone)."""
    return _cpu_seconds(pid)


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (NaN if it is gone)."""
    return _rss_mib(pid)


def _fail_rest(figure: Figure, runs: int, error: str) -> None:
    """Record the runs ``figure`` still lacks as failed with ``error``."""
    figure.samples += [Sample(None, error=error) for _ in range(runs - len(figure.samples))]


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


# -- join ---------------------------------------------------------------------------------


class JoinScenario:
    name: ClassVar[str] = "join"
    description: ClassVar[str] = "time from join to peer joined (fresh processes per run)"

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures: dict[tuple[str, Pair], Figure] = {}
        pairs = pairs_for(settings)
        for mode in settings.join_modes:
            for pair in pairs:
                figures[mode, pair] = Figure(
                    key=f"join.{mode}",
                    title=(
                        "join, simultaneous"
                        if mode == "simultaneous"
                        else f"join, 2nd +{settings.stagger:g} s"
                    ),
                    pair=pair,
                    arrow="⇄",
                    unit="ms",
                    higher_is_better=False,
                    definition=self._definition(mode, settings),
                )
        # Interleaved (run, then mode, then pair), so that a slow phase of the shared
        # machine spreads over every pair rather than landing on one.
        for run in range(settings.runs):
            for mode in settings.join_modes:
                for pair in pairs:
                    figure = figures[mode, pair]
                    sample = await self._once(pair, mode, settings)
                    figure.samples.append(sample)
                    shown = f"{sample.value:.0f} ms" if sample.value is not None else sample.error
                    log(f"join {mode:<12} {figure.pair_label:<22} run {run + 1}: {shown}")
        return list(figures.values())

    @staticmethod
    async def _order_ids(
        pair: Pair, a: PeerProcess, b: PeerProcess, order: str
    ) -> tuple[PeerProcess, PeerProcess, int]:
        """Replace both processes until their peer ids compare as ``order`` asks.

        Peer ids are random per process, and both Trystero and peermesh settle an offer
        collision by id: a peer that has offers out ignores offers from higher ids. Which
        side has the lower id therefore decides whether the second joiner's first announce
        connects, or the pair has to wait for a later announce (0.233 s and 0.533 s later
        in the warm-up schedule both use): a coin flip per run that would swamp any
        difference between implementations. Every pair gets the same order. Both processes
        are replaced (not just one) so that every attempt is an even chance.
        """
        respawns = 0
        while order != "random" and (a.self_id < b.self_id) != (order == "first-lower"):
            await asyncio.gather(a.close(), b.close())
            if respawns >= MAX_RESPAWNS:
                raise PeerError(f"no {order} peer ids after {respawns} respawns")
            a, b = await _start_pair(pair)
            respawns += 1
        return a, b, respawns

    @staticmethod
    def _definition(mode: str, settings: Settings) -> str:
        how = (
            "both join commands written back to back"
            if mode == "simultaneous"
            else f"second join command written {settings.stagger:g} s after the first peer's "
            "joining event"
        )
        return (
            "fresh, fully imported peer processes, fresh tracker and room; peer id order "
            f"{settings.id_order}; "
            f"{how}; from the later 'joining' event (the second join call) to the later "
            "'peer_joined' event (both sides report the other); parent monotonic clock"
        )

    async def _once(self, pair: Pair, mode: str, settings: Settings) -> Sample:
        room_id = f"bench-{uuid.uuid4().hex[:16]}"
        async with _tracker() as tracker:
            setup_start = time.monotonic()
            try:
                a, b = await _start_pair(pair)
                a, b, respawns = await self._order_ids(pair, a, b, settings.id_order)
            except (PeerError, OSError) as exc:
                return Sample(None, error=f"start: {_error_text(exc)}")
            setup_s = time.monotonic() - setup_start
            try:
                if mode == "simultaneous":
                    await asyncio.gather(_join(a, tracker, room_id), _join(b, tracker, room_id))
                else:
                    await _join(a, tracker, room_id)
                    first = await a.wait_event("joining", timeout=5)
                    await asyncio.sleep(
                        max(0.0, first["arrived"] + settings.stagger - time.monotonic())
                    )
                    await _join(b, tracker, room_id)
                ja = await a.wait_event("joining", timeout=5)
                jb = await b.wait_event("joining", timeout=5)
                pa, pb = await _both_joined(a, b, settings.join_timeout)
            except PeerError as exc:
                return Sample(None, error=_error_text(exc))
            finally:
                await asyncio.gather(a.close(), b.close())
        t0 = max(ja["arrived"], jb["arrived"])
        t1 = max(pa["arrived"], pb["arrived"])
        details = {
            "room_id": room_id,
            "first_id": a.self_id,
            "second_id": b.self_id,
            "lower_id": "first" if a.self_id < b.self_id else "second",
            "respawns_for_id_order": respawns,
            "process_start_s": setup_s,
            "joining_gap_ms": (jb["arrived"] - ja["arrived"]) * 1000,
            "first_sees_second_ms": (pa["arrived"] - t0) * 1000,
            "second_sees_first_ms": (pb["arrived"] - t0) * 1000,
            # the same interval on the children's wall clocks (cross-check)
            "peer_clock_ms": (max(pa["t"], pb["t"]) - max(ja["t"], jb["t"])) * 1000,
            "join_errors": [e for p in (a, b) for e in p.events if e["event"] == "join_error"],
        }
        return Sample((t1 - t0) * 1000, details)


# -- throughput ---------------------------------------------------------------------------


class ThroughputScenario:
    name: ClassVar[str] = "throughput"
    description: ClassVar[str] = "one-way throughput of one large binary action message"

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures = []
        for pair in pairs_for(settings):
            figure = self._figure(pair, settings)
            await self._pair(figure, settings, log)
            figures.append(figure)
        return figures

    @staticmethod
    def _figure(pair: Pair, settings: Settings) -> Figure:
        return Figure(
            key="throughput",
            title=f"throughput, {settings.size / MIB:g} MiB",
            pair=pair,
            arrow="→",
            unit="MiB/s",
            higher_is_better=True,
            definition=(
                f"{settings.size} deterministic bytes generated before the clock, sent as "
                "one binary action message over one connected pair (reused for every "
                "run); size / (receiver's 'received' event, first thing in its message "
                "callback, - sender's 'sending' event, right before its send call); "
                "parent monotonic clock; payload SHA-256 verified outside the interval"
            ),
        )

    async def _pair(self, figure: Figure, settings: Settings, log: Log) -> None:
        async with _tracker() as tracker:
            try:
                sender, receiver = await _start_pair(figure.pair)
            except (PeerError, OSError) as exc:
                _fail_rest(figure, settings.runs, f"start: {_error_text(exc)}")
                return
            try:
                room_id = f"bench-{uuid.uuid4().hex[:16]}"
                try:
                    await asyncio.gather(
                        _join(sender, tracker, room_id), _join(receiver, tracker, room_id)
                    )
                    await _both_joined(sender, receiver, settings.join_timeout)
                except PeerError as exc:
                    _fail_rest(figure, settings.runs, f"join: {_error_text(exc)}")
                    return
                for run in range(settings.runs):
                    sample = await self._once(sender, receiver, run, settings)
                    figure.samples.append(sample)
                    if sample.value is None:
                        log(f"{self.name} {figure.pair_label:<22} run {run + 1}: {sample.error}")
                        _fail_rest(figure, settings.runs, "skipped: the pair broke in a run")
                        return
                    log(
                        f"{self.name} {figure.pair_label:<22} run {run + 1}: "
                        f"{sample.value:.1f} MiB/s ({sample.details['seconds']:.2f} s)"
                    )
            finally:
                await asyncio.gather(sender.close(), receiver.close())

    @staticmethod
    async def _once(
        sender: PeerProcess, receiver: PeerProcess, run: int, settings: Settings
    ) -> Sample:
        size = settings.size
        try:
            prepared = await sender.command("prepare", size=size, seed=f"bench-{run}", timeout=120)
        except PeerError as exc:
            return Sample(None, error=f"prepare: {_error_text(exc)}")
        try:
            t = await _timed_send(
                sender, receiver, "received", settings.transfer_timeout, verify_timeout=120
            )
        except PeerError as exc:
            return Sample(None, error=_error_text(exc))
        details = {
            **t.details,
            "bytes": size,
            "send_call_ms": t.sent["ms"],
            "prepare_ms": prepared["ms"],
        }
        if t.verified["size"] != size or t.verified["sha256"] != prepared["sha256"]:
            return Sample(None, details, error="payload mismatch (size or SHA-256)")
        return Sample(size / MIB / t.seconds, details)


# -- random loss --------------------------------------------------------------------------


class LossScenario:
    name: ClassVar[str] = "loss"
    description: ClassVar[str] = "goodput of one binary action message through random loss"
    #: Generous: a Python sender at 20 % loss moves about 0.01-0.02 MiB/s.
    TIMEOUT: ClassVar[float] = 600.0

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        figures = []
        for pair in pairs_for(settings):
            if pair.loop not in (None, settings.group_loop):
                continue
            cases = [(self._figure(pair, *case), *case) for case in settings.loss_cases]
            figures += [figure for figure, _, _ in cases]
            error = "skipped: the pair broke in a run"
            try:
                async with connected_pair(pair, settings) as (sender, receiver):
                    for run in range(settings.group_runs):
                        for figure, percent, size in cases:
                            sample = await self._once(sender, receiver, run, percent, size)
                            figure.samples.append(sample)
                            shown = (
                                f"{sample.value:.3f} MiB/s ({sample.details['seconds']:.2f} s, "
                                f"{sample.details['dropped']} datagrams dropped)"
                                if sample.value is not None
                                else sample.error
                            )
                            log(f"loss {figure.pair_label:<22} {percent} % run {run + 1}: {shown}")
                            if sample.value is None:
                                raise PeerError(error)
            except (PeerError, OSError) as exc:
                error = _error_text(exc)
            for figure, _, _ in cases:
                _fail_rest(figure, settings.group_runs, error)
        return figures

    async def _once(
        self, sender: PeerProcess, receiver: PeerProcess, run: int, percent: int, size: int
    ) -> Sample:
        from tests.nft import NftUnavailable, udp_drop

        try:
            prepared = await sender.command("prepare", size=size, seed=f"loss-{run}", timeout=120)
            with udp_drop(percent) as rule:
                t = await _timed_send(
                    sender, receiver, "received", self.TIMEOUT, verify_timeout=120
                )
                dropped = rule.dropped()
        except (PeerError, NftUnavailable) as exc:
            return Sample(None, error=_error_text(exc))
        details = {**t.details, "bytes": size, "dropped": dropped}
        if t.verified["size"] != size or t.verified["sha256"] != prepared["sha256"]:
            return Sample(None, details, error="payload mismatch (size or SHA-256)")
        return Sample(size / MIB / t.seconds, details)

    @staticmethod
    def _figure(pair: Pair, percent: int, size: int) -> Figure:
        return Figure(
            key=f"loss.{percent}",
            title=f"goodput, {size / MIB:g} MiB, {percent} % UDP loss",
            pair=pair,
            arrow="→",
            unit="MiB/s",
            higher_is_better=True,
            definition=(
                f"as throughput ({size} bytes, one connected pair reused for every run), "
                f"while the kernel drops {percent} % of UDP datagrams at random (nftables "
                "numgen on lo's ingress, each datagram a separate draw; see tests/nft.py)"
            ),
        )


# -- many small messages ------------------------------------------------------------------


class BulkScenario(ThroughputScenario):
    name: ClassVar[str] = "bulk"
    description: ClassVar[str] = "one-way throughput of many 64 KiB binary action messages"

    @staticmethod
    def _figure(pair: Pair, settings: Settings) -> Figure:
        return Figure(
            key="bulk",
            title=f"{settings.bulk_count} × {settings.bulk_size // 1024} KiB actions",
            pair=pair,
            arrow="→",
            unit="MiB/s",
            higher_is_better=True,
            definition=(
                f"one {settings.bulk_size}-byte deterministic payload generated before the "
                f"clock, sent {settings.bulk_count} times as binary action messages, each "
                "send awaited before the next, over one connected pair (reused for every "
                "run); total bytes / (receiver's 'received_all' event, emitted in the message "
                "callback of the last message, - sender's 'sending' event, right before the "
                "first send call); parent monotonic clock; every message's size checked"
            ),
        )

    @staticmethod
    async def _once(
        sender: PeerProcess, receiver: PeerProcess, run: int, settings: Settings
    ) -> Sample:
        size, count = settings.bulk_size, settings.bulk_count
        total = size * count
        timeout = 20.0 + total / MIB
        try:
            prepared = await sender.command("prepare", size=size, seed=f"bulk-{run}")
            await receiver.command("expect", peer_id=sender.self_id, count=count, size=size)
        except PeerError as exc:
            return Sample(None, error=f"prepare: {_error_text(exc)}")
        try:
            t = await _timed_send(
                sender, receiver, "received_all", timeout, verify_timeout=30, count=count
            )
        except PeerError as exc:
            return Sample(None, error=_error_text(exc))
        details = {**t.details, "bytes": total, "messages": count, "send_calls_ms": t.sent["ms"]}
        if (
            t.received["bytes"] != total
            or t.received["bad"]
            or t.verified["sha256"] != prepared["sha256"]
        ):
            return Sample(None, details, error="payload mismatch (sizes or SHA-256)")
        return Sample(total / MIB / t.seconds, details)


# -- ping ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in (0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class PingScenario:
    name: ClassVar[str] = "ping"
    description: ClassVar[str] = "round-trip time of room.ping through the action stack"
    WARMUP: ClassVar[int] = 20

    async def run(self, settings: Settings, log: Log) -> list[Figure]:
        medians: list[Figure] = []
        p99s: list[Figure] = []
        for pair in pairs_for(settings):
            median, p99 = (
                Figure(
                    key=f"ping.{stat}",
                    title=f"ping RTT, {stat} of {settings.ping_count}",
                    pair=pair,
                    arrow="⇄",
                    unit="ms",
                    higher_is_better=False,
                    definition=(
                        f"one connected pair (reused for every run); the first peer calls "
                        f"room.ping(second) {self.WARMUP} times untimed, then "
                        f"{settings.ping_count} times one after the other, each call timed "
                        "inside the first peer (Python perf_counter, Node performance.now); "
                        f"a run's value is the {stat} (nearest rank) of those times"
                    ),
                )
                for stat in ("median", "p99")
            )
            medians.append(median)
            p99s.append(p99)
            try:
                async with connected_pair(pair, settings) as (first, second):
                    for run in range(settings.runs):
                        try:
                            result = await first.command(
                                "ping",
                                target=second.self_id,
                                count=settings.ping_count,
                                warmup=self.WARMUP,
                                timeout=30.0 + settings.ping_count * 0.05,
                            )
                        except PeerError as exc:
                            error = _error_text(exc)
                            log(f"ping {median.pair_label:<22} run {run + 1}: {error}")
                            for figure in (median, p99):
                                figure.samples.append(Sample(None, error=error))
                            break
                        rtts = [float(x) for x in result["rtts_ms"]]
                        details = {"pings": len(rtts), "mean_ms": statistics.fmean(rtts)}
                        details |= {"min_ms": min(rtts), "max_ms": max(rtts)}
                        median.samples.append(Sample(statistics.median(rtts), details))
                        p99.samples.append(Sample(percentile(rtts, 0.99), details))
                        log(
                            f"ping {median.pair_label:<22} run {run + 1}: median "
                            f"{median.samples[-1].value:.3f} ms, p99 {p99.samples[-1].value:.3f} ms"
                        )
            except (PeerError, OSError) as exc:
                for figure in (median, p99):
                    _fail_rest(figure, settings.runs, f"setup: {_error_text(exc)}")
            for figure in (median, p99):
                _fail_rest(figure, settings.runs, "skipped: the pair broke in a run")
        return medians + p99s


#: The two-peer scenarios; :data:`bench.groups.SCENARIOS` adds the multi-process ones.
PAIR_SCENARIOS: dict[str, type[Scenario]] = {
    JoinScenario.name: JoinScenario,
    ThroughputScenario.name: ThroughputScenario,
    BulkScenario.name: BulkScenario,
    PingScenario.name: PingScenario,
    LossScenario.name: LossScenario,
}
