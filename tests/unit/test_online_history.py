"""The scoring service's per-entity history: what it keeps, what it forgets, what it hands to features."""

from __future__ import annotations

from mlloop.serving.scorer import OnlineHistory

HOUR_NS = 3600 * 1_000_000_000
DAY_NS = 24 * HOUR_NS


def _add(history: OnlineHistory, entity: str, times: list[int], prefix: str) -> None:
    history.add([entity] * len(times), times, [1.0] * len(times), [f"{prefix}{i}" for i in range(len(times))])


def test_events_of_the_requested_entities_come_back_once_each() -> None:
    history = OnlineHistory("card", "amount", lookback_s=7 * 86_400)
    history.add(["a", "b", "a"], [1, 2, 3], [10.0, 20.0, 30.0], ["k1", "k2", "k3"])
    history.add(["a"], [3], [30.0], ["k3"])  # a retried request: same key, not counted twice
    events = history.events(["a", "a"])
    assert events is not None
    assert sorted(events.times_ns.tolist()) == [1, 3] and sorted(events.values.tolist()) == [10.0, 30.0]
    assert history.events(["nobody"]) is None


def test_old_events_are_forgotten_relative_to_the_latest_traffic() -> None:
    history = OnlineHistory("card", "amount", lookback_s=86_400)
    _add(history, "a", [0, 10 * DAY_NS], "old")
    _add(history, "b", [10 * DAY_NS + HOUR_NS + i for i in range(10_000)], "new")  # triggers a prune
    kept = history.events(["a"])
    assert kept is not None and kept.times_ns.tolist() == [10 * DAY_NS]


def test_replayed_past_traffic_keeps_its_history_after_newer_events_were_seeded() -> None:
    """A simulation or backfill serves days older than the newest seeded day: its history must stay."""
    history = OnlineHistory("card", "amount", lookback_s=86_400)
    _add(history, "seeded", [100 * DAY_NS], "seed")  # the newest validated day, far in the "future"
    past = [50 * DAY_NS + i for i in range(10_001)]  # replayed traffic of an older day, > one prune
    _add(history, "a", past, "past")
    kept = history.events(["a"])
    assert kept is not None and len(kept) == len(past)
