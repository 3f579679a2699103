"""Helpers to run the ``peermesh`` command as a real subprocess in the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: The command as tests invoke it: the venv's interpreter running the CLI package.
PEERMESH = [sys.executable, "-m", "peermesh.cli"]
#: The installed console script next to the interpreter (absent outside a venv install).
CONSOLE_SCRIPT = Path(sys.executable).with_name("peermesh")


def run_peermesh(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``peermesh ARGS...`` to completion and return its captured output."""
    return subprocess.run(
        [*PEERMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
