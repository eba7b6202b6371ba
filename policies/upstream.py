"""An OpenAI-compatible upstream, as the optimizer's live sampler and the proxy see it."""

from __future__ import annotations

import math
import os
from typing import Annotated

import msgspec

from policies.errors import ConfigError

__all__ = ["UpstreamSpec"]


class UpstreamSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where samples come from and what they cost.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``).
    The API key is read from the environment variable ``api_key_env``; a key is never
    written in a file. Prices are per 1,000 tokens in the cost unit of your choice (USD,
    or the unit a recorded table uses); a tier's ``cost_weight`` is utility per that unit.
    ``supports_n``: the upstream honours ``n`` > 1 in one call (vLLM, OpenAI do).
    """

    base_url: str
    model: str
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = "default"
    api_key_env: str | None = None
    supports_n: bool = True
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    price_per_1k_prompt_tokens: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    price_per_1k_completion_tokens: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    temperature: Annotated[float, msgspec.Meta(gt=0, le=2)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"upstream 'base_url' must be an http(s) URL, got {self.base_url!r}")
        for price in (self.price_per_1k_prompt_tokens, self.price_per_1k_completion_tokens):
            if not math.isfinite(price):
                raise ValueError("upstream prices must be finite")

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost of one call's usage, in the configured unit."""
        return (
            prompt_tokens * self.price_per_1k_prompt_tokens
            + completion_tokens * self.price_per_1k_completion_tokens
        ) / 1000.0

    def api_key(self) -> str | None:
        """The key from the environment; ConfigError if the variable is named but unset."""
        if self.api_key_env is None:
            return None
        # Surrounding whitespace is dropped: a key read from a mounted secret file
        # usually ends with a newline.
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"upstream {self.name!r}: environment variable {self.api_key_env} is not set; "
                f"export it with the upstream's API key"
            )
        if not key.isprintable() or " " in key:
            raise ConfigError(
                f"upstream {self.name!r}: environment variable {self.api_key_env} holds "
                f"spaces or control characters inside the key; it cannot go in a header"
            )
        return key
