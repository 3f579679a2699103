"""The ``peermesh`` command line (console script ``peermesh = "peermesh.cli:main"``).

Subcommands:

- ``peermesh tracker`` -- run the embedded WebTorrent tracker until Ctrl-C or SIGTERM;
- ``peermesh demo`` -- an offline tour: a local tracker and several peer processes that
  meet, chat, transfer a file, ping each other and leave, then a summary.

Run ``peermesh COMMAND --help`` for the options of each. Exit status: 0 success,
1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``peermesh`` command with ``argv`` (default: ``sys.argv[1:]``) and return
    its exit status. The console script passes the result to ``sys.exit``."""
    from ._app import run_cli  # imported lazily: demo peer processes import this package

    return run_cli(argv)
