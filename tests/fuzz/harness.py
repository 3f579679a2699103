"""What every fuzz target shares: the per-input limits, input framing, and a size measure.

A target is a function ``(data: bytes) -> None`` that returns normally for every input that
keeps its invariants, and raises otherwise: :class:`Violation` for a broken invariant, or
whatever undocumented exception escaped the code under test. :func:`check` runs one input
through a target and adds the limits every target shares:

- **time**: an input may take at most :data:`TIME_LIMIT` seconds. One that takes longer is
  run twice more and fails only if the fastest of the three runs is still over the limit
  (a garbage collection or a busy machine can stall any single run);
- **memory**: every :data:`MEMORY_SAMPLE`-th input, and every input slower than
  :data:`SLOW`, is run again under :mod:`tracemalloc`; the peak of what the run allocates
  must stay within ``target.memory_bound(len(data))``.

It imports nothing of peermesh.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "MEMORY_SAMPLE",
    "SLOW",
    "TIME_LIMIT",
    "Checker",
    "Target",
    "Violation",
    "deep_size",
    "expect",
    "pack_records",
    "records",
]

#: Longest time one input may take, in seconds.
TIME_LIMIT = 0.050
#: Inputs slower than this (seconds) are also measured for memory.
SLOW = 0.005
#: One input in this many is measured for memory.
MEMORY_SAMPLE = 16
#: Allocation the interpreter may make for any input (a frame, an exception and its
#: traceback, a few small objects), whatever its size.
MEMORY_BASE = 256 * 1024


class Violation(AssertionError):
    """An invariant of a fuzz target does not hold for an input."""


def expect(condition: bool, what: str) -> None:
    """Raise :class:`Violation` with ``what`` unless ``condition``."""
    if not condition:
        raise Violation(what)


@dataclass(frozen=True, slots=True)
class Target:
    """A fuzz target: ``run(data)`` and its per-input limits.

    ``memory_factor``: the peak allocation of one input may be at most ``memory_factor``
    bytes per input byte, plus :data:`MEMORY_BASE`. ``max_len`` is the longest input the
    fuzzer makes; ``json``: its inputs hold JSON, so the fuzzer uses JSON tokens
    (``tests/fuzz/json.dict``).
    """

    name: str
    run: Callable[[bytes], None]
    memory_factor: int
    max_len: int
    json: bool = True

    def memory_bound(self, size: int) -> int:
        return self.memory_factor * size + MEMORY_BASE

    @property
    def invariant(self) -> str:
        return (self.run.__doc__ or "").strip()


class Checker:
    """Runs inputs through one target with the shared limits; counts what it measured."""

    def __init__(self, target: Target, *, memory_sample: int = MEMORY_SAMPLE) -> None:
        self.target = target
        self.memory_sample = memory_sample
        self.inputs = 0
        self.measured = 0
        #: The largest peak allocation seen, as ``(peak bytes, input size)``.
        self.worst_memory = (0, 0)
        #: The slowest input seen, in seconds.
        self.slowest = 0.0

    def __call__(self, data: bytes) -> None:
        """Run ``data``; raise :class:`Violation` (or what escaped the target) on failure."""
        run = self.target.run
        self.inputs += 1
        started = time.perf_counter()
        run(data)
        elapsed = time.perf_counter() - started
        if elapsed > TIME_LIMIT:
            for _ in range(2):
                started = time.perf_counter()
                run(data)
                elapsed = min(elapsed, time.perf_counter() - started)
            expect(
                elapsed <= TIME_LIMIT,
                f"{self.target.name}: an input of {len(data)} bytes took {elapsed * 1000:.1f} ms"
                f" (limit {TIME_LIMIT * 1000:.0f} ms)",
            )
        self.slowest = max(self.slowest, elapsed)
        if elapsed > SLOW or self.inputs % self.memory_sample == 0:
            self.measure(data)

    def measure(self, data: bytes) -> int:
        """Run ``data`` under tracemalloc; return its peak allocation (checked)."""
        tracemalloc.start()
        try:
            self.target.run(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.measured += 1
        self.worst_memory = max(self.worst_memory, (peak, len(data)))
        bound = self.target.memory_bound(len(data))
        expect(
            peak <= bound,
            f"{self.target.name}: an input of {len(data)} bytes allocated {peak} bytes at its"
            f" peak (bound {bound})",
        )
        return peak


# -- inputs made of records ---------------------------------------------------------------------


def records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split ``data`` into ``(selector, payload)`` records: a selector byte, a 16-bit
    big-endian payload length, the payload (cut short by the end of ``data``)."""
    pos = 0
    while pos + 3 <= len(data):
        length = int.from_bytes(data[pos + 1 : pos + 3])
        yield data[pos], data[pos + 3 : pos + 3 + length]
        pos += 3 + length


def pack_records(items: Iterable[tuple[int, bytes]]) -> bytes:
    """The inverse of :func:`records`."""
    return b"".join(bytes((selector,)) + len(p).to_bytes(2) + p for selector, p in items)


# -- sizes ------------------------------------------------------------------------------------


def deep_size(value: object) -> int:
    """Bytes held by a decoded JSON value (dicts, lists, strings, numbers), each object
    counted once. Singletons (``None``, booleans, the small ints CPython caches, the empty
    string and one-character Latin-1 strings) cost nothing."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or item is True or item is False or id(item) in seen:
            continue
        if type(item) is int and -5 <= item <= 256:
            continue
        if type(item) is str and len(item) <= 1 and (not item or ord(item) < 256):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total
