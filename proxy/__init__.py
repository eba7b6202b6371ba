"""The OpenAI-compatible serving proxy (not built yet)."""

from __future__ import annotations

__all__: list[str] = []
