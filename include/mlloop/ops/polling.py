"""One way to wait for something outside this process: poll it, and fail with what it said last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    *,
    every_s: float,
    timeout_s: float,
    timed_out: Callable[[float], Exception],
) -> T:
    """Call ``check`` every ``every_s`` seconds until it returns something other than None; return that.

    ``check`` may raise to stop early (e.g. a service it depends on stopped). After ``timeout_s`` seconds
    the exception ``timed_out(seconds waited)`` is raised: it should say what was last seen and where to
    look.
    """
    started = time.monotonic()
    while (result := check()) is None:
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise timed_out(waited)
        time.sleep(every_s)
    return result
