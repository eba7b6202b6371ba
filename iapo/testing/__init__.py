"""Test tools iapo ships: a fault-injecting OpenAI-compatible upstream on loopback.

Used by the reliability suites (``tests/reliability``) and the soak bench
(``bench/soak.py``); run it alone with ``python -m iapo.testing --port 8901``.
"""

from __future__ import annotations

from iapo.testing.plan import (
    FAULT_KINDS,
    FaultKind,
    FaultPlan,
    fault_from_marker,
    pick_fault,
    request_tag,
)
from iapo.testing.process import free_port, wait_ready
from iapo.testing.upstream import FaultStats, FaultUpstream, ReceivedRequest

__all__ = [
    "FAULT_KINDS",
    "FaultKind",
    "FaultPlan",
    "FaultStats",
    "FaultUpstream",
    "ReceivedRequest",
    "fault_from_marker",
    "free_port",
    "pick_fault",
    "request_tag",
    "wait_ready",
]
