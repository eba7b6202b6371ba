"""Recorded-distribution tables (``.npz``): the one implementation lives in
:mod:`policies.table`, shared with the simulator. The optimizer never reads the
probabilities: it only samples them through :class:`optimizer.replay.ReplaySampler`.
"""

from __future__ import annotations

from policies.table import RecordedTable, load_table, save_table

__all__ = ["RecordedTable", "load_table", "save_table"]
