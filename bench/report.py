"""The benchmark's outputs: one rich table and one JSON file with every raw sample."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from rich.table import Table

from .model import Figure
from .peers import INTEROP_DIR, REPO_DIR

__all__ = ["RESULTS_DIR", "machine_info", "ratio", "results_json", "table", "write_json"]

RESULTS_DIR = REPO_DIR / "bench" / "results"
SCHEMA_VERSION = 1


def _command_output(*argv: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _package_version(package_dir: Path) -> str | None:
    try:
        return str(json.loads((package_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def machine_info(loops: Sequence[str]) -> dict[str, Any]:
    """Where and with what the figures were measured."""
    memory = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mib": memory.total // (1024 * 1024),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_peer_loops": list(loops),
        "uvloop": _version("uvloop"),
        "parent_loop": "asyncio",
        "node": _command_output("node", "--version"),
        "trystero": _package_version(INTEROP_DIR / "node_modules" / "@trystero-p2p" / "torrent"),
        "wrtc": _package_version(INTEROP_DIR / "node_modules" / "@roamhq" / "wrtc"),
        "peermesh": _version("peermesh"),
        "aiortc": _version("aiortc"),
        "websockets": _version("websockets"),
        "git_commit": _command_output("git", "-C", str(REPO_DIR), "rev-parse", "HEAD"),
        "git_dirty": bool(_command_output("git", "-C", str(REPO_DIR), "status", "--porcelain")),
    }


def ratio(figure: Figure, figures: Sequence[Figure]) -> float | None:
    """``figure``'s median over the Node⇄Node median of the same figure (``None`` if either
    is missing, or the anchor is not positive: Node's RSS slope can be negative when its
    GC returns memory). For times > 1 means slower than Trystero; for throughputs < 1 does."""
    anchor = next((f for f in figures if f.key == figure.key and f.pair.is_anchor), None)
    if anchor is None or anchor.median is None or figure.median is None or anchor.median <= 0:
        return None
    return figure.median / anchor.median


def _number(value: float | None, unit: str) -> str:
    """Three significant figures or so: 245, 27.7, 0.43."""
    if value is None or math.isnan(value):
        return "—"
    magnitude = abs(value)
    return (
        f"{value:.0f}"
        if magnitude >= 100
        else f"{value:.1f}"
        if magnitude >= 10
        else (f"{value:.2f}")
    )


def _note(figure: Figure) -> str:
    """The first failed run's error, shortened (e.g. "incomplete after 90 s: 40/45 links")."""
    error = next((s.error for s in figure.samples if s.error), None)
    if error is None:
        return ""
    return error if len(error) <= 48 else error[:47] + "…"


def table(figures: Sequence[Figure], title: str) -> Table:
    """One row per figure and pair."""
    out = Table(
        title=title,
        caption=(
            "ratio = median ÷ Node⇄Node (Trystero) median of the same figure: for MiB/s "
            "< 1 is slower than Trystero, for every other unit > 1 is slower or bigger. "
            "note: why a run failed (the first failure)"
        ),
    )
    out.add_column("figure")
    out.add_column("pair")
    out.add_column("median", justify="right")
    out.add_column("min", justify="right")
    out.add_column("max", justify="right")
    out.add_column("unit")
    out.add_column("runs", justify="right")
    out.add_column("ratio", justify="right")
    notes = any(figure.failures for figure in figures)
    if notes:
        out.add_column("note", overflow="fold")
    previous = None
    for figure in figures:
        if previous is not None and figure.key != previous:
            out.add_section()
        previous = figure.key
        r = ratio(figure, figures)
        runs = f"{len(figure.values)}/{len(figure.samples)}"
        row = [
            figure.title,
            figure.pair_label,
            _number(figure.median, figure.unit),
            _number(figure.minimum, figure.unit),
            _number(figure.maximum, figure.unit),
            figure.unit,
            runs if not figure.failures else f"[red]{runs}[/red]",
            "anchor" if figure.pair.is_anchor else (f"{r:.2f}" if r is not None else "—"),
        ]
        out.add_row(*row, *([_note(figure)] if notes else []))
    return out


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def results_json(
    figures: Sequence[Figure],
    *,
    machine: dict[str, Any],
    settings: Any,
    started: dt.datetime,
    finished: dt.datetime,
    argv: Sequence[str],
) -> dict[str, Any]:
    data: dict[str, Any] = _clean(
        {
            "schema": SCHEMA_VERSION,
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "duration_s": (finished - started).total_seconds(),
            "argv": list(argv),
            "settings": dataclasses.asdict(settings),
            "machine": machine,
            "clock": (
                "Every interval is a difference of the parent's time.monotonic() stamps taken "
                "when each event line was read from a peer's stdout pipe (one clock for Python "
                "and Node peers alike; error: the difference of two pipe/wake-up latencies, "
                "sub-millisecond on an idle parent). details.peer_clock_* repeat each interval "
                "on the peers' own wall clocks (Python time.time(), Node "
                "performance.timeOrigin + performance.now()) as a cross-check."
            ),
            "figures": [
                {
                    "key": f.key,
                    "title": f.title,
                    "pair": f.pair.key,
                    "pair_label": f.pair_label,
                    "first": dataclasses.asdict(f.pair.first),
                    "second": dataclasses.asdict(f.pair.second),
                    "unit": f.unit,
                    "higher_is_better": f.higher_is_better,
                    "definition": f.definition,
                    "median": f.median,
                    "min": f.minimum,
                    "max": f.maximum,
                    "runs_ok": len(f.values),
                    "runs": len(f.samples),
                    "ratio_vs_node_node": ratio(f, figures),
                    "samples": [dataclasses.asdict(s) for s in f.samples],
                }
                for f in figures
            ],
        }
    )
    return data


def write_json(data: dict[str, Any], started: dt.datetime, directory: Path = RESULTS_DIR) -> Path:
    """``<directory>/<YYYY-MM-DD>T<HHMMSS>.json`` (a suffix is added rather than overwrite)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%dT%H%M%S")
    path = directory / f"{stem}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{stem}-{n}.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path
