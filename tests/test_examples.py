"""Every script in examples/ runs to completion (offline, on loopback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


#: Lines each example must print (the scripts also assert their own outcomes).
EXPECTED = {
    "two_peers.py": ["alice says {'text': 'hello'}", "ping ", "both left"],
    "admission.py": [
        "host: guest joined with the right code",
        "host: refused intruder: wrong invitation code",
        "host: guest left",
        "done",
    ],
    "passive_backup.py": [
        "backups passive=True, peers after 1.5 s: 0",
        "editor joined; the backup woke and connected",
        "backup saved {'doc': 1, 'text': 'draft'}",
        "done",
    ],
    "streams.py": ["receiver: 3145728 bytes, sha256 ok", "sender: done, thanks", "done"],
    "video_call.py": [
        "bob: stream from alice, metadata {'label': 'camera'}",
        "bob: video 320x240, the pattern; audio is a tone",
        "bob: recorded enough frames",
        "done",
    ],
    "request_reply.py": [
        "apple costs 0.5",
        "durian: no such item: durian",
        "basket holds 3; server saw caller client",
        "done",
    ],
}


def test_every_example_has_expectations() -> None:
    assert sorted(EXPECTED) == [p.name for p in EXAMPLES]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for line in EXPECTED[script.name]:
        assert line in done.stdout, (line, done.stdout)
