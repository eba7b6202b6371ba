"""The offline optimizer: PSST over (prompt, N) per budget tier (not built yet)."""

from __future__ import annotations

__all__: list[str] = []
