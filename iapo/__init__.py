"""The ``iapo`` command line: it wires the optimizer, the proxy and the simulator together.

It is the only place that imports both ``optimizer`` and ``proxy``.
"""

from __future__ import annotations

__all__ = ["main"]

from iapo.cli import main
