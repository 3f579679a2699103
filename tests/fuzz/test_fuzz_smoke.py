"""A smoke run of the fuzz targets (``make fuzz`` runs them for 1,000,000 inputs each).

In-process and uninstrumented: every seed is replayed (each measured for memory), then
:data:`MUTANTS` mutants of the seeds per target go through the same checks. One real
atheris run, and one on a broken target, show that the runner works and reports a crash.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz.harness import TIME_LIMIT, Checker, Target, Violation
from tests.fuzz.targets import TARGETS

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
#: Mutants of the seeds run per target.
MUTANTS = 5000
_TOKENS = [
    line.strip()[1:-1].encode().decode("unicode_escape").encode("latin-1")
    for line in (HERE / "json.dict").read_text().splitlines()
    if line.startswith('"')
]


def seeds(name: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted((HERE / "corpus" / name).iterdir())]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """One to four random edits of the kinds libFuzzer makes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        end = min(len(out), at + rng.randint(1, 16))
        edit = rng.randrange(7)
        if edit == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif edit == 1 and at < len(out):
            out[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif edit == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif edit == 3:
            del out[at:end]
        elif edit == 4:
            out[at:at] = out[at:end] * rng.randint(1, 64)
        elif edit == 5:
            out[at:at] = rng.choice(_TOKENS)
        else:
            other = rng.choice(others)
            start = rng.randint(0, len(other))
            out[at:end] = other[start : start + rng.randint(1, 256)]
    return bytes(out)


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_mutants_keep_every_invariant(name: str) -> None:
    target = TARGETS[name]
    checker = Checker(target)
    corpus = seeds(name)
    assert corpus, f"no seeds for {name}"
    for seed in corpus:
        checker(seed)
        checker.measure(seed)
    rng = random.Random(name)
    current = rng.choice(corpus)
    for _ in range(MUTANTS):
        base = current if rng.random() < 0.5 else rng.choice(corpus)
        current = mutate(rng, base, corpus)[: target.max_len]
        checker(current)
    assert checker.inputs == len(corpus) + MUTANTS


# -- the harness itself -------------------------------------------------------------------------


def _slow(data: bytes) -> None:
    """Takes longer than the limit for an input starting with ``s``."""
    if data.startswith(b"s"):
        time.sleep(TIME_LIMIT * 1.5)


def _greedy(data: bytes) -> None:
    """Allocates far more than its memory bound for an input starting with ``m``."""
    if data.startswith(b"m"):
        bytearray(10 * 1024 * 1024)


def _raising(data: bytes) -> None:
    """Lets an undocumented exception escape for an input starting with ``x``."""
    if data.startswith(b"x"):
        json.loads(b"{")


def test_the_checker_fails_an_input_that_breaks_a_limit() -> None:
    slow, greedy, raising = (
        Checker(Target(run.__name__, run, memory_factor=64, max_len=64))
        for run in (_slow, _greedy, _raising)
    )
    for checker in (slow, greedy, raising):
        checker(b"fine")
        checker.measure(b"fine")
    with pytest.raises(Violation, match="took"):
        slow(b"s")
    with pytest.raises(Violation, match="allocated"):
        greedy.measure(b"m")
    with pytest.raises(json.JSONDecodeError):
        raising(b"x")


#: A target that fails on one input: what the runner must report as a crash.
BROKEN = Target("broken", _raising, memory_factor=64, max_len=64)


def fuzz(tmp_path: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("atheris")
    command = [sys.executable, "-m", "tests.fuzz", target, f"--work={tmp_path}", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )


def test_atheris_fuzzes_a_target_from_its_seeds(tmp_path: Path) -> None:
    result = fuzz(tmp_path, "sctp_packet", "--runs=3000")
    assert result.returncode == 0, result.stdout[-3000:]
    [line] = [x for x in result.stdout.splitlines() if x.startswith("FUZZ-SUMMARY ")]
    summary = json.loads(line.removeprefix("FUZZ-SUMMARY "))
    assert summary["target"] == "sctp_packet"
    assert summary["inputs"] == 3000
    assert summary["memory_measured"] > 0
    assert "INFO: Instrumenting peermesh" in result.stdout
    assert f"{len(seeds('sctp_packet'))} files found" in result.stdout
    assert list((tmp_path / "corpus" / "sctp_packet").iterdir()), "the fuzzer kept nothing new"


def test_atheris_reports_a_crash_with_its_input(tmp_path: Path) -> None:
    seeds_dir = tmp_path / "seeds"
    seeds_dir.mkdir()
    (seeds_dir / "x").write_bytes(b"x!")
    result = fuzz(tmp_path, "tests.fuzz.test_fuzz_smoke:BROKEN", "--runs=3000", str(seeds_dir))
    assert result.returncode != 0
    assert "JSONDecodeError" in result.stdout
    [crash] = (tmp_path / "crashes").iterdir()
    assert crash.name.startswith("broken-crash-")
    assert crash.read_bytes().startswith(b"x")
