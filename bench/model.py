"""What a benchmark run produces: pairs of peers, figures, and their samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .peers import PeerSpec

__all__ = ["ANCHOR_RUNTIME", "Figure", "Pair", "Sample"]

#: Ratios are taken against the pair whose peers both run this (Trystero on Node).
ANCHOR_RUNTIME = "node"


@dataclass(frozen=True)
class Pair:
    """Two peers; ``first`` joins first / sends, ``second`` joins second / receives."""

    first: PeerSpec
    second: PeerSpec

    @property
    def loop(self) -> str | None:
        return self.first.loop or self.second.loop

    @property
    def is_anchor(self) -> bool:
        return self.first.runtime == self.second.runtime == ANCHOR_RUNTIME

    @property
    def key(self) -> str:
        """Stable id, e.g. ``py-node@uvloop`` (``node-node`` has no loop)."""
        base = f"{self.first.short.lower()}-{self.second.short.lower()}"
        return f"{base}@{self.loop}" if self.loop else base

    def label(self, arrow: str) -> str:
        """For humans, e.g. ``Py⇄Node (uvloop)``."""
        base = f"{self.first.short}{arrow}{self.second.short}"
        return f"{base} ({self.loop})" if self.loop else base


@dataclass
class Sample:
    """One run: its value (``None`` if the run failed) and whatever else was measured."""

    value: float | None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Figure:
    """One measured quantity for one pair, over several runs."""

    key: str  # e.g. "join.simultaneous"
    title: str  # e.g. "join → both joined (simultaneous)"
    pair: Pair
    arrow: str  # "⇄" (symmetric) or "→" (directed)
    unit: str
    higher_is_better: bool
    definition: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.samples if s.value is not None]

    @property
    def failures(self) -> int:
        return sum(1 for s in self.samples if s.value is None)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def minimum(self) -> float | None:
        return min(self.values, default=None)

    @property
    def maximum(self) -> float | None:
        return max(self.values, default=None)

    @property
    def pair_label(self) -> str:
        return self.pair.label(self.arrow)
