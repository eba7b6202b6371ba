"""The policy artifact: for each tier of a task, the (prompt, N) to serve.

The optimizer writes it, the proxy executes exactly what it says. It is versioned
JSON; readers ignore fields they do not know, so newer writers never break older
readers. ``load_policy(path)`` validates and names the bad field on error.

    policy = load_policy("policies/math.json")
    choice = policy.tiers["standard"]       # TierPolicy: prompt, n, strategy, ...
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated

import msgspec

from policies.errors import PolicyError
from policies.extract import ExtractorSpec
from policies.reward import RewardSpec
from policies.stopping import StopKind, StopRule
from policies.tasks import PromptCandidate, Strategy
from policies.tiers import Tier
from policies.upstream import UpstreamSpec

__all__ = [
    "POLICY_VERSION",
    "BudgetSpent",
    "Policy",
    "SamplingSettings",
    "TierPolicy",
    "decode_policy",
    "encode_policy",
    "library_versions",
    "load_policy",
    "now_utc",
    "save_policy",
]

logger = logging.getLogger(__name__)

POLICY_VERSION = 1


class BudgetSpent(msgspec.Struct, frozen=True):
    """Samples the optimizer was given (``planned``) and drew (``spent``)."""

    planned: Annotated[int, msgspec.Meta(ge=0)]
    spent: Annotated[int, msgspec.Meta(ge=0)]


class SamplingSettings(msgspec.Struct, frozen=True):
    """The sampling settings the optimizer drew its samples with: part of every arm it
    evaluated, so the proxy applies them, and a client value that differs is refused."""

    temperature: Annotated[float, msgspec.Meta(gt=0, le=2)]
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None

    @classmethod
    def of(cls, upstream: UpstreamSpec) -> SamplingSettings:
        """The settings a live run samples ``upstream`` with."""
        return cls(temperature=upstream.temperature, top_p=upstream.top_p)


class TierPolicy(msgspec.Struct, frozen=True):
    """What one tier serves, with the optimizer's estimate of its utility.

    ``interval`` is a confidence interval [lo, hi] around ``expected_utility``.
    The tier's own settings (cost weight, objective weights, caps, stopping rule) travel
    with it so the proxy enforces exactly what was optimised.

    ``stop``/``delta``: the stopping rule N was priced under; ``expected_samples``: the
    samples one request is expected to draw under it (N for ``full``), which
    ``expected_cost`` is the cost of. ``threshold`` (``stop = "threshold"``, Best-of-N):
    a request stops at the first sample whose weighted reward reaches it, or at ``n``.
    """

    prompt: PromptCandidate
    n: Annotated[int, msgspec.Meta(ge=1, le=1024)]
    strategy: Strategy
    expected_utility: float
    interval: tuple[float, float]
    cost_weight: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    objective_weights: dict[str, float] | None = None
    max_n: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_cost: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    expected_quality: float | None = None
    expected_cost: float | None = None
    observations: Annotated[int, msgspec.Meta(ge=0)] = 0
    stop: StopKind = "full"
    delta: float | None = None
    expected_samples: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        self.stop_rule.check_strategy(self.strategy)
        if (self.stop == "threshold") != (self.threshold is not None):
            raise ValueError('threshold is given exactly when stop = "threshold"')
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number")
        if self.expected_samples is not None and self.expected_samples > self.n + 1e-9:
            raise ValueError(f"expected_samples {self.expected_samples} is more than n={self.n}")
        lo, hi = self.interval
        if not all(math.isfinite(x) for x in (self.expected_utility, lo, hi)):
            raise ValueError("expected_utility and interval must be finite numbers")
        if lo > hi:
            raise ValueError(f"interval [{lo}, {hi}] has lo > hi")

    def tier(self, name: str) -> Tier:
        """The Tier this entry was optimised for."""
        return Tier(
            name,
            cost_weight=self.cost_weight,
            objective_weights=self.objective_weights,
            max_n=self.max_n,
            max_cost=self.max_cost,
            stop=self.stop,
            delta=self.delta,
        )

    @property
    def stop_rule(self) -> StopRule:
        """The stopping rule N was priced under (ValueError if ``delta`` does not fit it)."""
        return StopRule(kind=self.stop, delta=self.delta)


class Policy(msgspec.Struct, frozen=True):
    """The artifact the optimizer writes and the proxy executes (format ``version`` 1)."""

    task: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    created_at: datetime
    budget: BudgetSpent
    tiers: dict[str, TierPolicy]
    version: int = POLICY_VERSION
    default_tier: str | None = None
    extractor: ExtractorSpec | None = None
    reward: RewardSpec | None = None
    method: str = "psst"
    seed: int | None = None
    source: str | None = None
    generator: dict[str, str] = msgspec.field(default_factory=dict)
    sampling: SamplingSettings | None = None

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"version must be ≥ 1, got {self.version}")
        if not self.tiers:
            raise ValueError("a policy needs at least one tier")
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not one of {sorted(self.tiers)}"
            )
        for name, choice in self.tiers.items():
            if choice.strategy == "best_of_n" and self.reward is None:
                raise ValueError(f"tier {name!r} uses best_of_n but the policy has no 'reward'")

    @property
    def digest(self) -> str:
        """A short content hash: what the proxy reports as ``x-iapo-policy``."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:12]

    @property
    def default(self) -> str:
        """The tier to serve when a request names none."""
        if self.default_tier is not None:
            return self.default_tier
        return "standard" if "standard" in self.tiers else next(iter(self.tiers))


def library_versions() -> dict[str, str]:
    """Versions recorded in an artifact so a reader can warn on mismatch."""
    versions = {"python": platform.python_version()}
    for dist in ("iapo", "numpy", "msgspec"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def encode_policy(policy: Policy) -> bytes:
    """Pretty JSON bytes of a policy."""
    return msgspec.json.format(msgspec.json.encode(policy), indent=2) + b"\n"


def decode_policy(data: bytes | str, *, source: str = "policy") -> Policy:
    """Decode and validate a policy; PolicyError names the bad field."""
    try:
        policy = msgspec.json.decode(data, type=Policy, strict=True)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"{source}: invalid policy: {_name_tier(data, exc)}") from None
    except msgspec.DecodeError as exc:
        raise PolicyError(f"{source}: not valid JSON: {exc}") from None
    if policy.version > POLICY_VERSION:
        logger.warning(
            "%s: policy format version %d is newer than this reader's %d; "
            "fields it does not know are ignored",
            source,
            policy.version,
            POLICY_VERSION,
        )
    writer = policy.generator.get("iapo")
    ours = library_versions().get("iapo")
    if writer and ours and writer.split(".")[:2] != ours.split(".")[:2]:
        logger.warning("%s was written by iapo %s; this is iapo %s", source, writer, ours)
    return policy


def _name_tier(data: bytes | str, exc: msgspec.ValidationError) -> str:
    """msgspec reports dict entries as ``$.tiers[...]``; say which tier is bad."""
    message = str(exc)
    if "$.tiers[...]" not in message:
        return message
    try:
        tiers = msgspec.json.decode(data).get("tiers", {})
        for name, entry in tiers.items():
            try:
                msgspec.convert(entry, TierPolicy, strict=True)
            except msgspec.ValidationError:
                return message.replace("$.tiers[...]", f"$.tiers.{name}")
    except (msgspec.DecodeError, AttributeError):
        pass
    return message


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    return decode_policy(data, source=str(path))


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write a policy atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode_policy(policy))
    tmp.replace(path)


def now_utc() -> datetime:
    """The current UTC time to the second: the ``created_at`` of new artifacts."""
    return datetime.now(UTC).replace(microsecond=0)
