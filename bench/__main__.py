"""``python -m bench``: run the benchmarks, print a table, write a JSON file.

    python -m bench                          # everything, 5 runs, 64 MiB
    python -m bench --quick                  # 2 runs, 16 MiB
    python -m bench --only join --runs 10
    python -m bench --loop uvloop --pairs py-node,node-node

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

from rich.console import Console

from .model import Figure
from .report import RESULTS_DIR, machine_info, results_json, table, write_json
from .scenarios import ID_ORDERS, JOIN_MODES, MIB, SCENARIOS, Settings

DEFAULT_RUNS = 5
DEFAULT_SIZE_MIB = 64.0
QUICK_RUNS = 2
QUICK_SIZE_MIB = 16.0


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
    if runs < 1:
        raise SystemExit("--runs must be at least 1")
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
    empty = [f"{f.key} {f.pair_label}" for f in figures if not f.values]
    if empty:
        progress.print(f"[red]no successful run for: {', '.join(empty)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
