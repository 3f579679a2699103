"""``python -m bench``: run the benchmarks, print a table, write a JSON file.

    python -m bench                          # everything, 5 runs, 64 MiB
    python -m bench --quick                  # 2 runs (1 for mesh and late), smaller sizes
    python -m bench --only join --runs 10
    python -m bench --loop uvloop --pairs py-node,node-node
    python -m bench --only mesh --mesh-50    # N = 5, 10, 20 and 50
    python -m bench --only loss --loss-cases 5:16,20:1

Run it through ``make bench`` (``BENCH_ARGS="..."``) to get a loopback-only network
namespace. See :mod:`bench.scenarios` for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from .groups import SCENARIOS, STRATEGIES
from .model import Figure
from .report import RESULTS_DIR, machine_info, results_json, table, write_json
from .scenarios import ID_ORDERS, JOIN_MODES, MIB, Settings

DEFAULT_RUNS = 5
DEFAULT_SIZE_MIB = 64.0
DEFAULT_BULK_COUNT = 1000
DEFAULT_MESH_SIZES = (5, 10, 20)
DEFAULT_MESH_TIMEOUT = 90.0
#: RSS grows in whole pages and allocator arenas, so the slope needs many points: over 8
#: peers five runs spread 131-215 KiB/peer here, over 16 peers 152-176.
DEFAULT_MEMORY_PEERS = 16
QUICK_RUNS = 2
QUICK_GROUP_RUNS = 1
QUICK_SIZE_MIB = 16.0
QUICK_BULK_COUNT = 250
QUICK_MESH_SIZES = (5, 10)
QUICK_MESH_TIMEOUT = 30.0
QUICK_MEMORY_PEERS = 5


def _csv(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
        unknown = [x for x in items if x not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(choices)}, got {text!r}"
            )
        return items

    return parse


def _int_csv(text: str) -> tuple[int, ...]:
    try:
        items = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        items = ()
    if not items or min(items) < 2:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers ≥ 2, got {text!r}")
    return items


def _loss_cases(text: str) -> tuple[tuple[int, int], ...]:
    """``5:16,20:0.25``: percent of datagrams dropped, then MiB sent, per case."""
    try:
        cases = tuple(
            (int(percent), int(float(mib) * MIB))
            for percent, mib in (item.split(":") for item in text.split(",") if item.strip())
        )
    except ValueError:
        cases = ()
    if not cases or any(not 1 <= p <= 99 or size < 1 for p, size in cases):
        raise argparse.ArgumentTypeError(f"expected PERCENT:MIB,... (1-99 %), got {text!r}")
    return cases


def _parser() -> argparse.ArgumentParser:
    uvloop = importlib.util.find_spec("uvloop") is not None
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="peermesh vs Trystero (Node) benchmarks, between local processes.",
    )
    parser.add_argument("--runs", type=int, help=f"runs per figure (default {DEFAULT_RUNS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a fast check: {QUICK_RUNS} runs and {QUICK_SIZE_MIB:g} MiB (unless given)",
    )
    parser.add_argument(
        "--only",
        type=_csv(tuple(SCENARIOS)),
        default=tuple(SCENARIOS),
        help=f"scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--size-mib", type=float, help=f"throughput message size (default {DEFAULT_SIZE_MIB:g})"
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both" if uvloop else "asyncio",
        help="event loop of the Python peers (default: both if uvloop is installed)",
    )
    parser.add_argument(
        "--join-modes",
        type=_csv(JOIN_MODES),
        default=JOIN_MODES,
        help="simultaneous (both join at once) and/or staggered (second joins later)",
    )
    parser.add_argument(
        "--stagger", type=float, default=0.5, help="seconds between staggered joins (0.5)"
    )
    parser.add_argument(
        "--id-order",
        choices=ID_ORDERS,
        default=ID_ORDERS[0],
        help="which joiner gets the lower peer id (default second-lower; see bench.scenarios)",
    )
    parser.add_argument(
        "--pairs",
        type=_csv(("py-py", "node-node", "py-node", "node-py")),
        help="only these pairs (first-second); default all",
    )
    parser.add_argument(
        "--bulk-count",
        type=int,
        help=f"64 KiB messages per bulk run (default {DEFAULT_BULK_COUNT}, quick "
        f"{QUICK_BULK_COUNT})",
    )
    parser.add_argument("--ping-count", type=int, default=1000, help="pings per run (1000)")
    parser.add_argument(
        "--memory-peers",
        type=int,
        help=f"connections the memory hub holds (default {DEFAULT_MEMORY_PEERS}, quick "
        f"{QUICK_MEMORY_PEERS})",
    )
    parser.add_argument(
        "--mesh-sizes",
        type=_int_csv,
        help="peer counts of the full mesh (default 5,10,20; quick 5,10)",
    )
    parser.add_argument(
        "--mesh-50", action="store_true", help="also a mesh of 50 peers (heavy: minutes)"
    )
    parser.add_argument(
        "--mesh-strategies",
        type=_csv(("torrent", "nostr")),
        default=("torrent", "nostr"),
        help="strategies of the full mesh (torrent,nostr)",
    )
    parser.add_argument(
        "--mesh-timeout",
        type=float,
        help=f"time box of one mesh run in seconds (default {DEFAULT_MESH_TIMEOUT:g}, quick "
        f"{QUICK_MESH_TIMEOUT:g})",
    )
    parser.add_argument(
        "--strategies",
        type=_csv(STRATEGIES),
        default=STRATEGIES,
        help=f"strategies of the late joiner ({','.join(STRATEGIES)})",
    )
    parser.add_argument(
        "--late-delay", type=float, default=5.0, help="seconds before the late joiner (5)"
    )
    parser.add_argument(
        "--loss-cases",
        type=_loss_cases,
        default=Settings.loss_cases,
        help="the loss scenario's cases, PERCENT:MIB (default 5:16,20:0.25)",
    )
    parser.add_argument(
        "--group-runs",
        type=int,
        help="runs of the mesh, late-joiner and loss figures "
        f"(default --runs; quick {QUICK_GROUP_RUNS})",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"JSON directory (default {RESULTS_DIR})"
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    runs = args.runs if args.runs is not None else QUICK_RUNS if args.quick else DEFAULT_RUNS
    size_mib = (
        args.size_mib
        if args.size_mib is not None
        else QUICK_SIZE_MIB
        if args.quick
        else DEFAULT_SIZE_MIB
    )

    T = TypeVar("T")

    def pick(given: T | None, quick: T, default: T) -> T:
        return given if given is not None else quick if args.quick else default

    bulk_count = pick(args.bulk_count, QUICK_BULK_COUNT, DEFAULT_BULK_COUNT)
    memory_peers = pick(args.memory_peers, QUICK_MEMORY_PEERS, DEFAULT_MEMORY_PEERS)
    mesh_sizes = pick(args.mesh_sizes, QUICK_MESH_SIZES, DEFAULT_MESH_SIZES)
    if args.mesh_50 and 50 not in mesh_sizes:
        mesh_sizes = (*mesh_sizes, 50)
    mesh_timeout = pick(args.mesh_timeout, QUICK_MESH_TIMEOUT, DEFAULT_MESH_TIMEOUT)
    group_runs = (
        args.group_runs
        if args.group_runs is not None
        else (QUICK_GROUP_RUNS if args.quick and args.runs is None else None)
    )
    if min(runs, bulk_count, args.ping_count, group_runs or 1) < 1:
        raise SystemExit("--runs, --*-count and --group-runs must be ≥ 1")
    if memory_peers < 2:
        raise SystemExit("--memory-peers must be ≥ 2 (a slope over 1..N peers)")
    if mesh_timeout <= 0 or args.late_delay < 0:
        raise SystemExit("--mesh-timeout must be positive and --late-delay not negative")
    if size_mib <= 0:
        raise SystemExit("--size-mib must be positive")
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    return Settings(
        runs=runs,
        size=int(size_mib * MIB),
        loops=loops,
        join_modes=args.join_modes,
        stagger=args.stagger,
        id_order=args.id_order,
        pairs=args.pairs,
        bulk_count=bulk_count,
        ping_count=args.ping_count,
        memory_peers=memory_peers,
        mesh_sizes=mesh_sizes,
        mesh_strategies=args.mesh_strategies,
        mesh_timeout=mesh_timeout,
        late_strategies=args.strategies,
        late_delay=args.late_delay,
        heavy_runs=group_runs,
        loss_cases=args.loss_cases,
    )


async def run_all(names: Sequence[str], settings: Settings, console: Console) -> list[Figure]:
    figures: list[Figure] = []
    for name in names:
        scenario = SCENARIOS[name]()
        console.rule(f"[bold]{name}[/bold]: {scenario.description}")
        figures += await scenario.run(settings, lambda line: console.print(line, highlight=False))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_from(args)
    progress = Console(stderr=True)
    started = dt.datetime.now().astimezone()
    machine = machine_info(settings.loops)
    progress.print(
        f"{machine['cpu_count_logical']} CPUs, load {machine['load_average']}, "
        f"Python {machine['python']} (peers on {', '.join(settings.loops)}), "
        f"Node {machine['node']}, Trystero {machine['trystero']}; "
        f"{settings.runs} runs, {settings.size / MIB:g} MiB",
        highlight=False,
    )
    figures = asyncio.run(run_all(args.only, settings, progress))
    finished = dt.datetime.now().astimezone()
    machine["load_average_end"] = machine_info(settings.loops)["load_average"]
    data = results_json(
        figures,
        machine=machine,
        settings=settings,
        started=started,
        finished=finished,
        argv=sys.argv[1:] if argv is None else list(argv),
    )
    path = write_json(data, started, args.out)
    title = (
        f"peermesh {machine['peermesh']} vs Trystero {machine['trystero']}: "
        f"{settings.runs} runs each, {machine['cpu_count_logical']} CPUs, "
        f"Python peers on {' and '.join(settings.loops)}"
    )
    # A pipe or file gets 80 columns by default: too narrow for the table.
    Console(width=None if sys.stdout.isatty() else 120).print(table(figures, title))
    progress.print(f"raw samples and machine info: {path}", highlight=False)
    # Trystero's own figures may legitimately never succeed (its torrent mesh of 20 does
    # not complete here): reported, not a failure of the suite. Ours must succeed.
    unmeasured = [f for f in figures if not f.values]
    empty_anchors = [f"{f.key} {f.pair_label}" for f in unmeasured if f.pair.is_anchor]
    empty = [f"{f.key} {f.pair_label}" for f in unmeasured if not f.pair.is_anchor]
    if empty_anchors:
        progress.print(f"[yellow]no successful run of Trystero for: {', '.join(empty_anchors)}")
    if empty:
        progress.print(f"[red]no successful run for: {', '.join(empty)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
