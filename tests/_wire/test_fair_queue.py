"""The fair, bounded queue behind request scheduling (peermesh._wire.fair_queue)."""

from __future__ import annotations

from peermesh._wire.fair_queue import FairQueue


def any_item(item: str) -> bool:
    return True


def drain(queue: FairQueue[str], busy: dict[str, int] | None = None) -> list[str]:
    out = []
    while (item := queue.pop(any_item, busy or {})) is not None:
        out.append(item)
    return out


def test_below_the_limit_everything_is_queued_and_served_round_robin() -> None:
    queue: FairQueue[str] = FairQueue(10)
    for item in ["a1", "a2", "a3", "b1", "c1", "b2"]:
        assert queue.push(item[0], item) is None
    assert len(queue) == 6
    assert list(queue) == ["a1", "a2", "a3", "b1", "b2", "c1"]
    assert drain(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert len(queue) == 0


def test_a_lone_peer_fills_the_queue_then_is_refused() -> None:
    queue: FairQueue[str] = FairQueue(3)
    assert [queue.push("a", f"a{i}") for i in range(3)] == [None, None, None]
    assert queue.push("a", "a3") == "a3"
    assert list(queue) == ["a0", "a1", "a2"]


def test_at_the_limit_the_biggest_holder_makes_room() -> None:
    queue: FairQueue[str] = FairQueue(4)
    for i in range(4):
        queue.push("a", f"a{i}")
    assert queue.push("b", "b0") == "a3"  # a's newest makes room for b
    assert queue.push("b", "b1") == "a2"
    assert queue.push("b", "b2") == "b2"  # b holds as many as a: b is refused
    assert queue.push("a", "a4") == "a4"
    assert queue.push("c", "c0") == "a1"  # ties: the first biggest holder gives way
    assert len(queue) == 4
    assert drain(queue) == ["a0", "b0", "c0", "b1"]


def test_a_peer_below_its_share_is_never_refused() -> None:
    limit = 12
    queue: FairQueue[str] = FairQueue(limit)
    peers = "abcd"
    # three floods race for the queue; d asks now and then
    for n in range(200):
        for flooder in "abc":
            queue.push(flooder, f"{flooder}{n}")
        if n % 10 == 0:
            held = sum(1 for item in queue if item[0] == "d")
            left_out = queue.push("d", f"d{n}")
            if held < limit // len(peers):
                assert left_out is None or left_out[0] != "d"
        assert len(queue) <= limit
    counts = {p: sum(1 for item in queue if item[0] == p) for p in peers}
    assert counts == {"a": 3, "b": 3, "c": 3, "d": 3}


def test_pop_prefers_the_least_busy_peer_and_skips_items_not_ready() -> None:
    queue: FairQueue[str] = FairQueue(10)
    for item in ["a1", "a2", "b1", "c1", "c2"]:
        queue.push(item[0], item)
    busy = {"a": 2, "b": 1}
    assert queue.pop(any_item, busy) == "c1"  # c has nothing in service
    assert queue.pop(lambda item: item != "b1", busy) == "c2"
    assert queue.pop(lambda item: item[0] != "c", busy) == "b1"
    assert queue.pop(lambda item: item != "a1", busy) == "a2"
    assert queue.pop(lambda item: False, busy) is None
    assert list(queue) == ["a1"]


def test_remove_drop_and_clear() -> None:
    queue: FairQueue[str] = FairQueue(10)
    for item in ["a1", "a2", "b1", "b2"]:
        queue.push(item[0], item)
    assert queue.remove("a", "a2")
    assert not queue.remove("a", "a2")
    assert not queue.remove("c", "c1")
    assert queue.drop("b") == ["b1", "b2"]
    assert queue.drop("b") == []
    assert len(queue) == 1
    queue.push("c", "c1")
    assert queue.clear() == ["a1", "c1"]
    assert len(queue) == 0
    assert queue.pop(any_item, {}) is None
