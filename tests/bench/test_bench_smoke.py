"""``python -m bench`` in its quickest modes: each scenario runs to the end and writes every
figure it should, well formed.

Benchmarks are not tests: this checks that the machinery works (peer processes, signalling
servers, clock, table, JSON), never what the figures are.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LOOP = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
PAIRS = ["node-node", f"py-py@{LOOP}", f"py-node@{LOOP}", f"node-py@{LOOP}"]
GROUP_PAIRS = ["node-node", f"py-py@{LOOP}"]
UNITS = {"ms", "MiB/s", "KiB", "s", "CPU s", "MiB"}


def run_bench(tmp_path: Path, *argv: str, timeout: float = 150) -> tuple[dict[str, Any], str]:
    """Run the suite with ``argv`` (one run, one loop); return its JSON and printed table."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--runs", "1", "--loop", LOOP, *argv, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (path,) = out.glob("*.json")
    return json.loads(path.read_text()), done.stdout


def check_figures(data: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    """Exactly the ``expected`` (key, pair) figures, each with one successful, finite run."""
    got = {(f["key"], f["pair"]): f for f in data["figures"]}
    assert sorted(got) == sorted(expected)
    for figure in got.values():
        assert figure["runs"] == 1
        assert len(figure["samples"]) == 1
        assert figure["median"] is not None, figure["samples"]
        assert math.isfinite(figure["median"])
        assert figure["min"] <= figure["median"] <= figure["max"]
        assert figure["unit"] in UNITS
        assert figure["definition"]
        anchor = got.get((figure["key"], "node-node"))
        if figure["pair"] != "node-node" and anchor is not None and anchor["median"] > 0:
            assert figure["ratio_vs_node_node"] is not None


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(120)
def test_bench_join_and_throughput(tmp_path: Path) -> None:
    argv = ["--only", "join,throughput", "--size-mib", "1", "--stagger", "0.2"]
    data, table = run_bench(tmp_path, *argv)
    keys = ["join.simultaneous", "join.staggered", "throughput"]
    check_figures(data, {(key, pair) for key in keys for pair in PAIRS})
    machine = data["machine"]
    assert machine["cpu_count_logical"] >= 1
    assert machine["python"]
    assert machine["node"]
    assert machine["python_peer_loops"] == [LOOP]
    assert "throughput" in table


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(120)
def test_bench_bulk_and_ping(tmp_path: Path) -> None:
    argv = ["--only", "bulk,ping", "--bulk-count", "16", "--ping-count", "20"]
    data, table = run_bench(tmp_path, *argv)
    check_figures(data, {(k, p) for k in ("bulk", "ping.median", "ping.p99") for p in PAIRS})
    for figure in data["figures"]:
        details = figure["samples"][0]["details"]
        if figure["key"] == "bulk":
            assert details["messages"] == 16
            assert details["bytes"] == 16 * 64 * 1024
        else:
            assert details["pings"] == 20
            assert details["min_ms"] <= figure["median"] <= details["max_ms"]
    assert "16 × 64 KiB actions" in table
    assert "ping RTT" in table


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(120)
def test_bench_memory(tmp_path: Path) -> None:
    data, _ = run_bench(tmp_path, "--only", "memory", "--memory-peers", "2")
    check_figures(
        data, {(key, p) for key in ("memory.per_peer", "memory.first_peer") for p in GROUP_PAIRS}
    )
    for figure in data["figures"]:
        assert len(figure["samples"][0]["details"]["rss_mib"]) == 3  # hub alone, +1, +2


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(150)
def test_bench_mesh(tmp_path: Path) -> None:
    argv = ["--only", "mesh", "--mesh-sizes", "3", "--mesh-timeout", "30"]
    data, table = run_bench(tmp_path, *argv)
    keys = [f"mesh.{s}.n3.{what}" for s in ("torrent", "nostr") for what in ("time", "cpu", "rss")]
    check_figures(data, {(k, p) for k in keys for p in GROUP_PAIRS})
    for figure in data["figures"]:
        details = figure["samples"][0]["details"]
        assert details["links"] == details["links_total"] == 3
        assert len(details["cpu_s"]) == len(details["rss_mib"]) == 3
    assert "mesh nostr N=3" in table


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(150)
@pytest.mark.parametrize("strategies", ["torrent,ws-relay", "nostr,mqtt"])
def test_bench_late_joiner(tmp_path: Path, strategies: str) -> None:
    argv = ["--only", "late", "--strategies", strategies, "--late-delay", "0.5"]
    data, _ = run_bench(tmp_path, *argv)
    keys = [f"late.{s}.{o}" for s in strategies.split(",") for o in ("late-lower", "late-higher")]
    check_figures(data, {(k, p) for k in keys for p in GROUP_PAIRS})
    for figure in data["figures"]:
        details = figure["samples"][0]["details"]
        late_lower = details["late_id"] < details["first_id"]
        assert late_lower == figure["key"].endswith("late-lower")
        assert details["gap_s"] >= 0.5


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(120)
def test_bench_loss(tmp_path: Path) -> None:
    from tests.nft import skip_unless_available

    skip_unless_available()
    data, table = run_bench(tmp_path, "--only", "loss", "--loss-cases", "5:0.25")
    check_figures(data, {("loss.5", pair) for pair in PAIRS})
    for figure in data["figures"]:
        details = figure["samples"][0]["details"]
        assert details["bytes"] == 256 * 1024
        assert details["dropped"] > 0
    assert "goodput, 0.25 MiB, 5 % UDP loss" in table


def test_bench_quick_settings_cover_every_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--quick`` keeps every scenario, with smaller sizes and fewer runs."""
    monkeypatch.syspath_prepend(str(REPO))
    from bench.__main__ import _parser, settings_from
    from bench.groups import SCENARIOS

    args = _parser().parse_args(["--quick"])
    settings = settings_from(args)
    assert set(args.only) == set(SCENARIOS) >= {"bulk", "ping", "memory", "mesh", "late", "loss"}
    assert settings.runs == 2
    assert settings.group_runs == 1
    assert settings.mesh_sizes == (5, 10)
    full = settings_from(_parser().parse_args(["--mesh-50"]))
    assert full.runs == full.group_runs == 5
    assert full.mesh_sizes == (5, 10, 20, 50)
    assert full.bulk_count == 1000
    assert full.late_delay == 5.0
