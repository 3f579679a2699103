"""Everything the CLI writes goes through here: two rich consoles, one-line errors and the
rich logging handler for the ``peermesh`` loggers.

The library itself never prints; only the CLI does, and only through these objects.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "configure_logging",
    "print_error",
    "stderr",
    "stdout",
]

EXIT_OK = 0
"""The command did what was asked."""
EXIT_FAILURE = 1
"""The command failed (a busy port, a demo step that failed or timed out, ...)."""
EXIT_USAGE = 2
"""The command line was wrong (argparse's own exit status)."""
EXIT_INTERRUPTED = 130
"""A long-running command other than a server was stopped with Ctrl-C (128 + SIGINT)."""

#: Results, tables and progress bars. Rich looks ``sys.stdout`` up on every write, so
#: redirections made after import (pytest's capture, for one) are honoured.
stdout = Console(highlight=False)
#: Errors, warnings and log records.
stderr = Console(stderr=True, highlight=False)


class CliError(Exception):
    """An expected failure of a command: printed as one clean line, exit status 1."""


def print_error(message: str) -> None:
    """Print ``error: <message>`` on stderr, without markup interpretation of ``message``."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def configure_logging(verbosity: int) -> None:
    """Route the ``peermesh`` loggers to a rich handler on stderr.

    ``verbosity`` 0 shows warnings and errors, 1 (``-v``) adds INFO, 2 or more (``-vv``)
    adds DEBUG. Other libraries' loggers (aiortc, websockets, ...) are left alone.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = RichHandler(
        console=stderr,
        show_path=verbosity >= 2,
        rich_tracebacks=True,
        markup=False,
        log_time_format="%H:%M:%S",
    )
    handler.setLevel(level)
    package_logger = logging.getLogger("peermesh")
    for existing in list(package_logger.handlers):
        if isinstance(existing, RichHandler):
            package_logger.removeHandler(existing)
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False
