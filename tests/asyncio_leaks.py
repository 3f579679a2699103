"""A pytest plugin, loaded by ``tests/conftest.py``: a test fails when it leaves an asyncio
task or future behind unfinished, or with an exception nobody retrieved (issue 13).

asyncio reports such objects when they are collected, through the ``asyncio`` logger; the
fixture forces a collection at teardown, after the test's event loop has closed, and fails
the test whose objects they were. Run ``PYTHONASYNCIODEBUG=1 make test`` to see where a
leaked task or future was created.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

#: What asyncio logs when a task or future is dropped unfinished, or with an exception
#: nobody retrieved.
ASYNCIO_LEAKS = ("exception was never retrieved", "Task was destroyed but it is pending")


class _AsyncioLeaks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(leak in message for leak in ASYNCIO_LEAKS):
            self.leaks.append(f"{message} {record.exc_info[1]!r}" if record.exc_info else message)


@pytest.fixture(autouse=True)
def no_asyncio_leaks() -> Iterator[None]:
    """Fail the test that leaves a task or future behind unfinished or with an exception
    nobody retrieved."""
    handler = _AsyncioLeaks()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield
        gc.collect()
    finally:
        asyncio_logger.removeHandler(handler)
    if handler.leaks:
        pytest.fail("asyncio leaks: " + "; ".join(handler.leaks), pytrace=False)
