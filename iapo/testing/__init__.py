"""Test tools iapo ships: a fault-injecting OpenAI-compatible upstream on loopback.

Used by the reliability suites (``tests/reliability``) and the soak bench
(``bench/soak.py``); run it alone with ``python -m iapo.testing --port 8901``.
"""

from __future__ import annotations

from iapo.testing.plan import (
    FAULT_HELP,
    FAULT_KINDS,
    FaultKind,
    FaultPlan,
    UnknownFault,
    fault_from_marker,
    parse_fault,
    pick_fault,
    request_tag,
)
from iapo.testing.process import free_port, wait_ready
from iapo.testing.upstream import FaultStats, FaultUpstream, ReceivedRequest

__all__ = [
    "FAULT_HELP",
    "FAULT_KINDS",
    "FaultKind",
    "FaultPlan",
    "FaultStats",
    "FaultUpstream",
    "ReceivedRequest",
    "UnknownFault",
    "fault_from_marker",
    "free_port",
    "parse_fault",
    "pick_fault",
    "request_tag",
    "wait_ready",
]
