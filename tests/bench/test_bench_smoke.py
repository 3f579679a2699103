"""``python -m bench`` in its quickest mode: it runs to the end and writes every figure.

Benchmarks are not tests: this checks that the machinery works (peer processes, tracker,
clock, table, JSON), never what the figures are.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOOP = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
PAIRS = ["node-node", f"py-py@{LOOP}", f"py-node@{LOOP}", f"node-py@{LOOP}"]
FIGURES = ["join.simultaneous", "join.staggered", "throughput"]


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(90)
def test_bench_quickest_mode_writes_every_figure(tmp_path: Path) -> None:
    argv = ["--runs", "1", "--size-mib", "1", "--loop", LOOP, "--stagger", "0.2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())

    got = {(f["key"], f["pair"]): f for f in data["figures"]}
    assert sorted(got) == sorted((key, pair) for key in FIGURES for pair in PAIRS)
    for figure in got.values():
        assert figure["runs"] == 1
        assert len(figure["samples"]) == 1
        assert figure["median"] is not None, figure["samples"]
        assert figure["unit"] in ("ms", "MiB/s")
        if figure["pair"] != "node-node":
            assert figure["ratio_vs_node_node"] is not None
    machine = data["machine"]
    assert machine["cpu_count_logical"] >= 1
    assert machine["python"]
    assert machine["node"]
    assert machine["python_peer_loops"] == [LOOP]
    assert "throughput" in done.stdout  # the table
