"""The liveness verdict of a connection (peermesh._wire.liveness), on a fake clock."""

from __future__ import annotations

import itertools

from peermesh._wire.liveness import (
    CHECK_INTERVAL,
    DEAD_AFTER,
    PROBE_INTERVAL,
    QUIET_AFTER,
    STALL_AFTER,
    Liveness,
    Verdict,
)


def run(
    liveness: Liveness, until: float, proofs: frozenset[float] = frozenset()
) -> list[tuple[float, Verdict]]:
    """Call the timer whenever it asks until ``until``; a proof arrives just before each
    check whose time is in ``proofs``. Returns the verdicts with their times."""
    verdicts = []
    while (now := liveness.get_timer()) <= until:
        if round(now, 6) in proofs:
            liveness.proof(now)
        verdict = liveness.handle_timer(now)
        if verdict is not None:
            verdicts.append((round(now, 6), verdict))
        if verdict is Verdict.DEAD:
            break
    return verdicts


def test_a_silent_peer_is_probed_then_declared_dead_within_11_s() -> None:
    liveness = Liveness(0.0)
    verdicts = run(liveness, 60.0)
    probes = [t for t, v in verdicts if v is Verdict.PROBE]
    assert probes[0] == QUIET_AFTER
    assert all(b - a >= PROBE_INTERVAL for a, b in itertools.pairwise(probes))
    assert verdicts[-1] == (DEAD_AFTER, Verdict.DEAD)
    assert DEAD_AFTER + CHECK_INTERVAL <= 11.0  # the documented bound


def test_a_busy_peer_is_never_probed_nor_dropped() -> None:
    liveness = Liveness(0.0)
    every_check = frozenset(float(t) for t in range(1, 3601))
    assert run(liveness, 3600.0, every_check) == []


def test_a_proof_between_checks_resets_the_silence() -> None:
    liveness = Liveness(0.0)
    assert run(liveness, 2.0) == []
    liveness.proof(2.5)  # e.g. the answer to a probe, between two checks
    assert liveness.silent_for(3.0) == 0.5
    verdicts = run(liveness, 30.0)
    assert verdicts[0] == (6.0, Verdict.PROBE)  # 3 s after the proof, at a check
    assert verdicts[-1] == (13.0, Verdict.DEAD)


def test_an_answered_probe_keeps_the_link() -> None:
    """A quiet but present peer (it answers every probe) is never declared dead."""
    liveness = Liveness(0.0)
    probes = 0
    for _ in range(600):
        now = liveness.get_timer()
        verdict = liveness.handle_timer(now)
        assert verdict is not Verdict.DEAD
        if verdict is Verdict.PROBE:
            probes += 1
            liveness.proof(now + 0.05)  # the answer comes back
    assert probes > 100


def test_a_stalled_event_loop_does_not_count_as_silence() -> None:
    """Our own loop was stuck longer than the dead time: packets may be waiting unread."""
    liveness = Liveness(0.0)
    late = liveness.get_timer() + STALL_AFTER + DEAD_AFTER
    assert liveness.handle_timer(late) is None
    assert liveness.silent_for(late) == 0.0


def test_old_proofs_do_not_move_the_clock_back() -> None:
    liveness = Liveness(0.0)
    liveness.proof(5.0)
    liveness.proof(4.0)
    assert liveness.silent_for(6.0) == 1.0
