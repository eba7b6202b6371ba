"""The ``iapo`` command line: it wires the optimizer, the proxy and the simulator together.

It is the only place that imports both ``optimizer`` and ``proxy``. The entry point is
:func:`iapo.cli.main`; importing this package alone imports neither (``iapo.testing``
is used by suites and benches that need no CLI).
"""

from __future__ import annotations

__all__: list[str] = []
