"""The ``peermesh`` command line: help, usage errors, exit statuses, shared plumbing."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from peermesh.cli import main
from peermesh.cli._app import event_loop_factory
from peermesh.cli._arguments import bounded_float, bounded_int, port_number, positive_float
from peermesh.cli._output import CliError

from ._run import CONSOLE_SCRIPT, PEERMESH, run_peermesh

pytestmark = pytest.mark.timeout(60)


def test_help_lists_every_subcommand() -> None:
    result = run_peermesh("--help")
    assert result.returncode == 0
    assert "tracker" in result.stdout
    assert "demo" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("command", ["tracker", "demo"])
def test_subcommand_help(command: str) -> None:
    result = run_peermesh(command, "--help")
    assert result.returncode == 0
    assert f"usage: peermesh {command}" in result.stdout


def test_version() -> None:
    result = run_peermesh("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("peermesh ")


def test_console_script_runs() -> None:
    assert CONSOLE_SCRIPT.exists(), "pip install -e . (make test does) installs `peermesh`"
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert "demo" in result.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "invalid choice"),
        (["demo", "--peers", "one"], "'one' is not a whole number"),
        (["demo", "--peers", "1"], "1 is not between 2 and"),
        (["demo", "--size-mib", "0"], "must be greater than 0"),
        (["demo", "--size-mib", "nan"], "must be greater than 0"),
        (["tracker", "--port", "70000"], "70000 is not between 0 and 65535"),
        (["tracker", "--interval", "-1"], "must be a number greater than 0"),
        (["tracker", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(args: list[str], complaint: str) -> None:
    result = run_peermesh(*args)
    assert result.returncode == 2
    assert "usage: peermesh" in result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_main_returns_status_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--peers", "x"]) == 2
    assert main(["--version"]) == 0
    assert "peermesh" in capsys.readouterr().out


def test_verbose_accepted_before_and_after_subcommand() -> None:
    for args in (["-v", "tracker", "--help"], ["tracker", "-vv", "--help"]):
        assert subprocess.run([*PEERMESH, *args], capture_output=True, timeout=30).returncode == 0


def test_argument_parsers() -> None:
    assert positive_float("2.5") == 2.5
    assert port_number("0") == 0
    assert bounded_int(2, 6)("6") == 6
    assert bounded_float(0, 256)("256") == 256.0
    for parse, text in [
        (positive_float, "0"),
        (positive_float, "inf"),
        (port_number, "-1"),
        (bounded_int(2, 6), "7"),
        (bounded_float(0, 256), "256.5"),
        (bounded_float(0, 256), "x"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


#: A command that ends at once without a network: ``relays`` on a port nothing listens on.
QUICK_COMMAND = (
    "relays",
    "--strategy",
    "relay",
    "--relay-url",
    "ws://127.0.0.1:1",
    "--wait",
    "0.1",
)


@pytest.mark.parametrize(
    ("choice", "loop_module"), [("asyncio", "asyncio.unix_events"), ("uvloop", "uvloop")]
)
def test_event_loop_option_picks_the_loop(choice: str, loop_module: str) -> None:
    pytest.importorskip("uvloop", reason="make test installs peermesh[fast]")
    result = run_peermesh("-vv", "--event-loop", choice, *QUICK_COMMAND)
    assert f"event loop: {loop_module}" in result.stderr, result.stderr


def test_event_loop_auto_is_uvloop_when_installed_else_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uvloop = pytest.importorskip("uvloop", reason="make test installs peermesh[fast]")
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop_factory("auto") is None
    with pytest.raises(CliError, match="uvloop is not installed"):
        event_loop_factory("uvloop")
