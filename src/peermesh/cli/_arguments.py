"""argparse value parsers shared by the subcommands (each raises ``ArgumentTypeError``, which
argparse turns into a usage error with exit status 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["bounded_float", "bounded_int", "port_number", "positive_float"]


def positive_float(text: str) -> float:
    """A finite number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number greater than 0")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0–65535 (0: let the system pick a free one)."""
    return bounded_int(0, 65535)(text)


def bounded_int(lowest: int, highest: int) -> Callable[[str], int]:
    """A parser accepting integers from ``lowest`` to ``highest`` inclusive."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"{value} is not between {lowest} and {highest}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def bounded_float(lowest: float, highest: float) -> Callable[[str], float]:
    """A parser accepting numbers greater than ``lowest`` and at most ``highest``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and lowest < value <= highest):
            raise argparse.ArgumentTypeError(
                f"{text!r} must be greater than {lowest:g} and at most {highest:g}"
            )
        return value

    parse.__name__ = "number"
    return parse
