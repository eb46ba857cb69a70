"""poll_until: the one wait the ops commands use for runs, DAGs, services and the scoring service."""

from __future__ import annotations

import pytest

from mlloop.ops.polling import poll_until


def test_returns_the_first_answer_that_is_not_none() -> None:
    answers = iter([None, None, "success"])
    assert poll_until(lambda: next(answers), every_s=0, timeout_s=5, timed_out=TimeoutError) == "success"


def test_a_falsy_answer_is_an_answer() -> None:
    assert poll_until(lambda: [], every_s=0, timeout_s=5, timed_out=TimeoutError) == []


def test_times_out_with_the_callers_message() -> None:
    seen = []

    def check() -> None:
        seen.append(1)

    with pytest.raises(TimeoutError, match=r"still queued after 0.05s; open the UI"):
        poll_until(
            check,
            every_s=0.01,
            timeout_s=0.05,
            timed_out=lambda waited: TimeoutError(f"still queued after 0.05s; open the UI ({waited:.2f}s)"),
        )
    assert len(seen) >= 2


def test_an_error_in_the_check_stops_the_wait() -> None:
    def check() -> None:
        raise RuntimeError("the scheduler stopped")

    with pytest.raises(RuntimeError, match="the scheduler stopped"):
        poll_until(check, every_s=0, timeout_s=5, timed_out=TimeoutError)
