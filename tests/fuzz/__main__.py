"""Fuzz one target, or all of them, with atheris (libFuzzer, coverage-guided).

::

    python -m tests.fuzz TARGET [--runs N] [--work DIR] [LIBFUZZER_ARG ...]
    python -m tests.fuzz all [--runs N]
    python -m tests.fuzz --list

``TARGET`` is a name from :data:`tests.fuzz.targets.TARGETS`, or ``module:attribute`` naming
another :class:`~tests.fuzz.harness.Target` (the smoke test fuzzes a broken one).

One target runs in this process: peermesh (and aiortc, for the SCTP chunk classes) is
imported under atheris' instrumentation, the fuzzer starts from the seeds in
``tests/fuzz/corpus/TARGET/`` and keeps what it finds in ``WORK/corpus/TARGET/`` (``WORK`` is
``build/fuzz`` unless ``--work`` says otherwise), and every input goes through
:class:`tests.fuzz.harness.Checker`. After ``--runs`` inputs it prints a ``FUZZ-SUMMARY``
line (JSON) and exits 0. The first violation (an invariant, the time or memory limit, an
exception that escaped) is printed with its traceback, the input is written to
``WORK/crashes/TARGET-crash-<sha1>``, and the exit status is non-zero.

``all`` runs every target in turn, each in its own process (logs in ``WORK/logs/``),
then prints a table of inputs, time, inputs per second and crashes; its exit status is
non-zero if any target failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
WORK = ROOT / "build" / "fuzz"
SUMMARY = "FUZZ-SUMMARY "
#: libFuzzer: a single input running this long (seconds) is reported as a hang.
HANG_SECONDS = 10


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", nargs="?", help="a target name, or 'all'")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--work", type=Path, default=WORK, help="corpus and crashes (build/fuzz)")
    parser.add_argument("--list", action="store_true", help="list the targets")
    return parser.parse_known_args(argv)


def fuzz_one(name: str, runs: int, work: Path, extra: list[str]) -> None:
    import importlib

    import atheris

    with atheris.instrument_imports(include=["peermesh", "aiortc"]):
        from tests.fuzz.harness import Checker
        from tests.fuzz.targets import TARGETS

        if name in TARGETS:
            target = TARGETS[name]
        else:
            module, _, attribute = name.partition(":")
            target = getattr(importlib.import_module(module), attribute)
    checker = Checker(target)
    started = time.monotonic()

    def test_one_input(data: bytes) -> None:
        checker(data)
        if checker.inputs >= runs:
            seconds = time.monotonic() - started
            summary = {
                "target": target.name,
                "inputs": checker.inputs,
                "seconds": round(seconds, 1),
                "exec_per_s": round(checker.inputs / seconds),
                "memory_measured": checker.measured,
                "worst_memory": {"peak": checker.worst_memory[0], "size": checker.worst_memory[1]},
                "slowest_ms": round(checker.slowest * 1000, 2),
            }
            print(SUMMARY + json.dumps(summary), flush=True)
            sys.stderr.flush()
            os._exit(0)

    corpus = work / "corpus" / target.name
    seeds = HERE / "corpus" / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    (work / "crashes").mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        "-runs=-1",
        f"-max_len={target.max_len}",
        f"-timeout={HANG_SECONDS}",
        f"-artifact_prefix={work / 'crashes'}/{target.name}-",
        *([f"-dict={HERE / 'json.dict'}"] if target.json else []),
        *extra,
        str(corpus),
        *([str(seeds)] if seeds.is_dir() else []),
    ]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def fuzz_all(runs: int, work: Path) -> int:
    from tests.fuzz.targets import TARGETS

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in TARGETS:
        log = logs / f"{name}.log"
        print(f"fuzzing {name} for {runs} inputs (log: {log})", flush=True)
        started = time.monotonic()
        with log.open("w") as out:
            code = subprocess.call(
                [sys.executable, "-m", "tests.fuzz", name, f"--runs={runs}", f"--work={work}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        seconds = time.monotonic() - started
        summary = next(
            (
                json.loads(line[len(SUMMARY) :])
                for line in log.read_text(errors="replace").splitlines()
                if line.startswith(SUMMARY)
            ),
            None,
        )
        if code != 0 or summary is None:
            print(f"  FAILED (exit status {code}) after {seconds:.0f} s: see {log}", flush=True)
            rows.append((name, "-", f"{seconds:.0f}", "-", "1"))
        else:
            print(f"  {json.dumps(summary)}", flush=True)
            figures = (str(summary[key]) for key in ("inputs", "seconds", "exec_per_s"))
            rows.append((name, *figures, "0"))
    header = ("target", "inputs", "seconds", "inputs/s", "crashes")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 1 if any(row[4] != "0" for row in rows) else 0


def main(argv: list[str]) -> int:
    options, extra = _parse(argv)
    if options.list or options.target is None:
        from tests.fuzz.targets import TARGETS

        for name, target in TARGETS.items():
            print(f"{name}: {' '.join(target.invariant.split(chr(10) * 2)[0].split())}")
        return 0
    if options.target == "all":
        return fuzz_all(options.runs, options.work)
    fuzz_one(options.target, options.runs, options.work, extra)
    return 0  # not reached: the fuzzer exits the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
