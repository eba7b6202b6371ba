"""A circuit breaker per upstream: stop calling an upstream that keeps failing.

closed ──K consecutive failures──▶ open ──cool-down elapsed──▶ half-open
  ▲                                  ▲                           │
  └────────── probe succeeds ────────┼──────── probe fails ──────┘

While open, calls fail fast (503 with ``x-should-retry: true``) instead of queueing
on a dead upstream. Half-open lets exactly one probe call through at a time.

    breaker = CircuitBreaker("vllm", failure_threshold=5, cooldown_s=10)
    breaker.before_call()        # raises CircuitOpen when open
    ... breaker.record_success() / breaker.record_failure()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from policies import CircuitOpen

__all__ = ["CircuitBreaker", "CircuitOpen", "CircuitState"]

logger = logging.getLogger(__name__)

CircuitState = Literal["closed", "half_open", "open"]


class CircuitBreaker:
    """Consecutive-failure breaker with a cool-down and a single half-open probe.

    ``on_change(state)`` is called on every transition (the proxy sets the
    ``iapo_circuit_state`` gauge from it). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        if on_change is not None:
            on_change("closed")

    @property
    def state(self) -> CircuitState:
        """The current state, moving open → half-open once the cool-down has passed."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._set("half_open")
        return self._state

    def _set(self, state: CircuitState) -> None:
        if state != self._state:
            logger.warning("upstream %s: circuit %s -> %s", self.name, self._state, state)
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpen`."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probing:
            self._probing = True
            return
        retry_after = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        raise CircuitOpen(
            f"upstream {self.name!r} is failing; its circuit is open, retry later",
            retry_after=retry_after if state == "open" else 1.0,
        )

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self._set("closed")

    def record_failure(self) -> None:
        self._probing = False
        if self._state == "half_open":
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold and self._state == "closed":
            self._open()

    def release(self) -> None:
        """A call ended without a verdict on the upstream (cancelled, client error)."""
        self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._set("open")
