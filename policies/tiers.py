"""Budget tiers: how much utility a caller gives up per unit of cost."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from policies.errors import ConfigError
from policies.stopping import StopKind, StopRule

__all__ = ["DEFAULT_TIERS", "Tier", "parse_tiers"]

TierName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A budget preference.

    ``cost_weight`` is λ, the utility lost per unit of cost (the task's cost unit).
    ``objective_weights`` weight the reward objectives for Best-of-N (None: equal weights).
    ``max_n`` and ``max_cost`` are hard caps on one request's fan-out.
    ``stop`` (with ``delta`` for ``confident``) is when the tier's requests stop drawing
    samples (:class:`~policies.StopRule`); the optimizer prices N by the samples that rule
    is expected to draw, and the proxy applies it.

    ``Tier("standard", cost_weight=0.2, stop="exact")``
    """

    name: TierName
    cost_weight: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    objective_weights: dict[str, float] | None = None
    max_n: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_cost: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    stop: StopKind = "full"
    delta: float | None = None

    def __post_init__(self) -> None:
        try:
            _ = self.stop_rule
        except ValueError as exc:
            raise ValueError(f"tier {self.name!r}: {exc}") from None
        if not math.isfinite(self.cost_weight):
            raise ValueError(f"tier {self.name!r}: cost_weight must be finite")
        if self.objective_weights is not None:
            for key, weight in self.objective_weights.items():
                if not math.isfinite(weight):
                    raise ValueError(f"tier {self.name!r}: objective weight {key!r} must be finite")

    @property
    def stop_rule(self) -> StopRule:
        """When this tier's requests stop drawing samples."""
        return StopRule(kind=self.stop, delta=self.delta)

    def cap_n(self, n: int, cost_per_sample: float | None = None) -> int:
        """The largest N ≤ ``n`` this tier allows (at least 1).

        ``max_cost`` caps N only when the cost of one sample is known in advance.
        """
        capped = n if self.max_n is None else min(n, self.max_n)
        if self.max_cost is not None and cost_per_sample is not None and cost_per_sample > 0:
            capped = min(capped, int(self.max_cost // cost_per_sample))
        return max(1, capped)


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("economy", cost_weight=1.0),
    Tier("standard", cost_weight=0.2),
    Tier("premium", cost_weight=0.0),
)


STOP_KEYS = ("stop", "delta")  # tier options in the CLI form, not objective names


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{what} {text.strip()!r} is not a number") from None


def parse_tiers(spec: str) -> tuple[Tier, ...]:
    """Parse the CLI form ``economy=1.0,standard=0.2,premium=0``.

    Tiers are separated by commas; a tier may add Best-of-N objective weights after
    colons: ``helpful=0.2:helpfulness=1:harmlessness=0.2`` is λ=0.2 with those weights.
    After colons too, ``stop=KIND`` and ``delta=X`` set its stopping rule:
    ``standard=0.2:stop=confident:delta=0.05``. Raises ConfigError naming the bad entry.
    """
    tiers: list[Tier] = []
    seen: set[str] = set()
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        head, *weight_texts = entry.split(":")
        name, sep, weight_text = head.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"tier {entry!r}: expected NAME=COST_WEIGHT[:OBJECTIVE=WEIGHT...], "
                "e.g. standard=0.2 or helpful=0.2:helpfulness=1:harmlessness=0.2"
            )
        weight = _number(weight_text, f"tier {name!r}: cost weight")
        if name in seen:
            raise ConfigError(f"tier {name!r} is given twice")
        objective_weights: dict[str, float] | None = None
        fields: dict[str, object] = {"name": name, "cost_weight": weight}
        for text in weight_texts:
            objective, sep, value = text.partition("=")
            objective = objective.strip()
            if objective in STOP_KEYS and sep:
                if objective in fields:
                    raise ConfigError(f"tier {name!r}: {objective} is given twice")
                fields[objective] = (
                    value.strip()
                    if objective == "stop"
                    else _number(value, f"tier {name!r}: delta")
                )
                continue
            if not sep or not objective:
                raise ConfigError(
                    f"tier {name!r}: objective weight {text!r} is not OBJECTIVE=WEIGHT"
                )
            objective_weights = objective_weights or {}
            if objective in objective_weights:
                raise ConfigError(f"tier {name!r}: objective {objective!r} is weighted twice")
            objective_weights[objective] = _number(value, f"tier {name!r}: weight of {objective!r}")
        if objective_weights is not None:
            fields["objective_weights"] = objective_weights
        try:
            tiers.append(msgspec.convert(fields, Tier))
        except (msgspec.ValidationError, ValueError) as exc:
            message = str(exc)
            prefix = f"tier {name!r}: "
            raise ConfigError(message if message.startswith(prefix) else prefix + message) from None
        seen.add(name)
    if not tiers:
        raise ConfigError("no tiers given; expected e.g. economy=1.0,standard=0.2,premium=0")
    return tuple(tiers)
