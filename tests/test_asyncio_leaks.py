"""The suite's leak check (tests/asyncio_leaks.py) fails the test that leaks, and only it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEAKY_TESTS = """
import asyncio

async def test_leaks_a_future_with_an_exception() -> None:
    asyncio.get_running_loop().create_future().set_exception(OSError("nobody reads me"))

def test_leaks_a_pending_task() -> None:
    loop = asyncio.new_event_loop()
    loop.create_task(asyncio.sleep(3600))
    loop.close()  # (pytest-asyncio cancels what a test's own loop leaves; this loop is ours)

async def test_awaits_what_it_starts() -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(OSError("read"))
    try:
        await future
    except OSError:
        pass
"""


def test_a_leaked_future_or_task_fails_the_test_that_leaked_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "tests.asyncio_leaks", "-o", "asyncio_mode=auto", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3, errors=2)  # a failed teardown is an error
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_future_with_an_exception*",
            "asyncio leaks: Future exception was never retrieved",
            "*OSError('nobody reads me')*",
            "*ERROR at teardown of test_leaks_a_pending_task*",
            "asyncio leaks: Task was destroyed but it is pending!",
        ]
    )
