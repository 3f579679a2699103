"""The ``peermesh`` command line: the top-level parser and the dispatch to subcommands.

Each subcommand lives in its own module exposing ``register(subparsers, common)``, which
adds its parser (with ``parents=[common]`` for the shared options) and sets the
``handler`` default to an ``async def handler(args) -> int`` returning the exit status.
To add a subcommand, write such a module and list it in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar, cast

import peermesh
from peermesh.errors import PeermeshError

from ._output import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    configure_logging,
    print_error,
)

__all__ = [
    "COMMAND_MODULES",
    "LOOP_CHOICES",
    "build_parser",
    "event_loop_factory",
    "run_cli",
    "run_on_loop",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandModule(Protocol):
    """What a subcommand module provides."""

    def register(self, subparsers: SubParsers, common: argparse.ArgumentParser) -> None: ...


#: Subcommand modules, in the order ``--help`` lists them (relative to this package).
COMMAND_MODULES: tuple[str, ...] = ("._tracker", "._relay", "._relays", "._stream", "._demo")

#: ``--event-loop`` values: ``auto`` is uvloop when it is installed, else asyncio's own loop.
LOOP_CHOICES: tuple[str, ...] = ("auto", "asyncio", "uvloop")
_LOOP_HELP = (
    "event loop: uvloop (pip install 'peermesh[fast]'; about 1.6x the data throughput), "
    "asyncio, or auto, the first one installed (default)"
)


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``asyncio.Runner`` that ``--event-loop choice`` asks for; None means
    asyncio's default loop. Raises :class:`CliError` if ``uvloop`` is asked for and not
    installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise CliError(
                "--event-loop uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    return uvloop.new_event_loop


def run_on_loop(choice: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the event loop ``--event-loop choice`` asks for (as
    ``asyncio.run`` does, Ctrl-C included); raises what :func:`event_loop_factory` raises."""
    with asyncio.Runner(loop_factory=event_loop_factory(choice)) as runner:
        logger.debug("event loop: %s", type(runner.get_loop()).__module__)
        return runner.run(main)


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts after its name as well as before it.

    Defaults are suppressed so that ``peermesh -v demo`` is not reset by the subparser.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log peermesh activity to stderr (-vv: debug detail)",
    )
    common.add_argument(
        "--event-loop", choices=LOOP_CHOICES, default=argparse.SUPPRESS, help=_LOOP_HELP
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The complete ``peermesh`` argument parser, subcommands included."""
    parser = argparse.ArgumentParser(
        prog="peermesh",
        description="Serverless peer-to-peer rooms over WebRTC, wire-compatible with "
        "Trystero 0.25.",
    )
    parser.add_argument("--version", action="version", version=f"peermesh {peermesh.__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log peermesh activity to stderr (-vv: debug detail)",
    )
    parser.add_argument("--event-loop", choices=LOOP_CHOICES, default="auto", help=_LOOP_HELP)
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    common = _common_options()
    for name in COMMAND_MODULES:
        module = cast(CommandModule, importlib.import_module(name, __package__))
        module.register(subparsers, common)
    return parser


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit status.

    Expected failures (:class:`CliError`, any :class:`~peermesh.errors.PeermeshError`) are
    printed as one line and give status 1; usage errors give 2; Ctrl-C gives 130 unless
    the command treats it as its normal way to stop.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    configure_logging(args.verbose)
    handler = cast(Handler, args.handler)
    try:
        return run_on_loop(args.event_loop, handler(args))
    except (CliError, PeermeshError) as exc:
        print_error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
