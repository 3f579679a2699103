"""The memory budget shared by a process's rooms, and the Limits value (pure)."""

from __future__ import annotations

import pytest

from peermesh import Limits
from peermesh._limits import MemoryBudget, RateLimit, budget_for
from peermesh.errors import UsageError


class Holder:
    """A room as the budget sees it: it holds bytes per peer and can drop a peer."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held: dict[str, int] = {}
        self.evicted: list[tuple[str, str]] = []
        budget.add_holder(self.evict)

    def hold(self, peer_id: str, nbytes: int) -> bool:
        if not self.budget.charge(peer_id, nbytes):
            return False
        self.held[peer_id] = self.held.get(peer_id, 0) + nbytes
        return True

    def evict(self, peer_id: str, reason: str) -> None:
        self.evicted.append((peer_id, reason))
        self.budget.release(peer_id, self.held.pop(peer_id, 0))


def test_a_peer_past_its_own_cap_is_refused_and_nobody_is_evicted() -> None:
    budget = MemoryBudget(total=1000, per_peer=400)
    room = Holder(budget)
    assert room.hold("a", 400)
    assert not room.hold("a", 1)
    assert room.hold("b", 400)
    assert (budget.held("a"), budget.held(), budget.refused, room.evicted) == (400, 800, 1, [])


def test_when_the_process_is_full_the_peer_above_its_fair_share_is_evicted() -> None:
    budget = MemoryBudget(total=1000, per_peer=500)
    rooms = [Holder(budget), Holder(budget)]
    assert rooms[0].hold("flood", 300)
    assert rooms[1].hold("flood", 200)
    assert rooms[0].hold("honest", 300)
    # 800 held; 300 more for a third peer: fair share is 1000 / 3, "flood" holds 500.
    assert rooms[1].hold("late", 300)
    assert [r.evicted for r in rooms] == [[("flood", _reason())], [("flood", _reason())]]
    assert (budget.held("flood"), budget.held(), budget.evicted) == (0, 600, 1)


def test_the_peer_asking_is_evicted_when_it_is_the_one_above_its_fair_share() -> None:
    budget = MemoryBudget(total=1000, per_peer=1000)
    room = Holder(budget)
    assert room.hold("honest", 300)
    assert room.hold("flood", 600)
    assert not room.hold("flood", 200)
    assert room.evicted == [("flood", _reason())]
    assert (budget.held(), budget.refused) == (300, 1)


def test_a_newcomer_shrinks_the_fair_share() -> None:
    budget = MemoryBudget(total=1000, per_peer=500)
    room = Holder(budget)
    assert room.hold("a", 500)
    assert room.hold("b", 450)
    assert not room.hold("b", 100)  # its own cap
    assert room.evicted == []
    assert room.hold("c", 100)  # the fair share is now 333: "a", at 500, is disconnected
    assert room.evicted == [("a", _reason())]
    assert budget.held() == 550


def _reason() -> str:
    return "it holds more than its fair share of the memory budget"


def test_release_never_goes_below_zero_and_removed_holders_are_not_called() -> None:
    budget = MemoryBudget(total=100, per_peer=100)
    room = Holder(budget)
    budget.remove_holder(room.evict)
    budget.remove_holder(room.evict)
    assert room.hold("a", 60)
    budget.release("a", 1000)
    budget.release("nobody", 5)
    assert budget.held() == 0
    budget.evict("a", "test")
    assert room.evicted == []


def test_limits_validate_and_equal_limits_share_one_budget() -> None:
    with pytest.raises(UsageError, match="peer_memory"):
        Limits(memory_budget=10, peer_memory=20)
    with pytest.raises(UsageError, match="max_message_size"):
        Limits(max_message_size=0)
    with pytest.raises(UsageError, match="max_partial_messages"):
        Limits(max_partial_messages=True)
    assert budget_for(Limits()) is budget_for(Limits(max_message_size=1024))
    small = budget_for(Limits(memory_budget=2048, peer_memory=1024))
    assert (small.total, small.per_peer) == (2048, 1024)
    assert small is not budget_for(Limits())


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limit = RateLimit(rate=4, burst=8, now=100.0)  # times in binary fractions: exact sums
    assert sum(limit.allow(100.0) for _ in range(50)) == 8
    assert not limit.allow(100.125)  # half a token
    assert limit.allow(100.25)
    assert sum(limit.allow(101.25) for _ in range(50)) == 4  # one second refills 4
    assert sum(limit.allow(1000.0) for _ in range(50)) == 8  # never more than the burst
    assert not limit.allow(999.0)  # a clock going back refills nothing
    assert not limit.allow(1000.0)
    assert limit.allow(1000.25)
