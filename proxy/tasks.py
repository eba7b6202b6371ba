"""The tasks the proxy serves, each bound to its live policy, with hot reload.

A task's policy comes from a policy file or from the store's active revision. The
registry polls both (file mtime and size, store revision); a new policy replaces the
old one atomically between requests. A corrupt or half-written file, or a policy for
the wrong task, is rejected with a logged error and the previous policy keeps serving.

    registry = TaskRegistry(config, metrics, store)
    await registry.load()                     # ConfigError if a task cannot start
    served = registry.resolve("math", None)   # by X-IAPO-Task, else by model alias
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import msgspec

from policies import (
    ConfigError,
    Extractor,
    ExtractorSpec,
    IapoError,
    Policy,
    PolicyStore,
    RewardSpec,
    StopRule,
    Tier,
    TierPolicy,
    UpstreamSpec,
    load_policy,
    make_extractor,
)
from proxy.config import ProxyConfig, TaskConfig, TierCaps
from proxy.metrics import ProxyMetrics

__all__ = ["ServedTask", "TaskRegistry"]

logger = logging.getLogger(__name__)


def _tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class ServedTask:
    """A task and the policy it serves now (immutable: reloads build a new one)."""

    __slots__ = (
        "config",
        "extractor",
        "label",
        "policy",
        "revision",
        "reward",
        "stamp",
        "stops",
        "tiers",
        "upstream",
    )

    def __init__(
        self,
        config: TaskConfig,
        policy: Policy,
        upstream: UpstreamSpec,
        *,
        revision: int | None,
        stamp: object,
    ) -> None:
        self.config = config
        self.policy = policy
        self.upstream = upstream
        self.revision = revision
        self.stamp = stamp
        spec = config.extractor or policy.extractor or ExtractorSpec()
        self.extractor: Extractor = make_extractor(spec)
        self.reward: RewardSpec | None = config.reward or policy.reward
        if config.reward is not None:
            _check_reward(config, policy)
        digest = policy.digest
        self.label = digest if revision is None else f"{revision}/{digest}"
        unknown = set(config.tiers) - set(policy.tiers)
        if unknown:
            raise ConfigError(
                f"task {config.name!r}: caps for tiers {sorted(unknown)} the policy does not "
                f"have; its tiers are {sorted(policy.tiers)}"
            )
        self.tiers: dict[str, tuple[TierPolicy, Tier]] = {
            name: (choice, _capped(choice.tier(name), config.tiers.get(name)))
            for name, choice in policy.tiers.items()
        }
        self.stops: dict[str, StopRule] = {
            name: _stop_rule(config, name, choice) for name, choice in policy.tiers.items()
        }

    @property
    def name(self) -> str:
        return self.config.name


def _stop_rule(config: TaskConfig, name: str, choice: TierPolicy) -> StopRule:
    """The tier's rule: the config's, else the one the policy priced N under, else the
    task's ``early_stop`` (exact stopping for majority vote). A config rule that differs
    from the priced one is served, with a warning: N was chosen for the other."""
    caps = config.tiers.get(name, TierCaps())
    priced = choice.stop_rule
    rule = caps.stop_rule(config.early_stop and choice.strategy == "majority", priced)
    where = f"task {config.name!r}, tier {name!r}"
    try:
        rule.check_strategy(choice.strategy)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if rule.kind == "threshold" and choice.threshold is None:
        raise ConfigError(
            f'{where}: stop = "threshold" needs a threshold the optimizer estimated; this '
            f"policy priced the tier under stop = {priced.kind!r}: re-run iapo optimize with "
            f"the tier's stop set"
        )
    if caps.stop is not None and rule != priced:
        logger.warning(
            "%s: serving stop = %r where the policy priced N under stop = %r",
            where,
            rule.kind,
            priced.kind,
        )
    return rule


def _check_reward(config: TaskConfig, policy: Policy) -> None:
    """A reward override must score the objectives the policy was optimized on (a tier
    without objective weights weights every scored objective equally)."""
    assert config.reward is not None
    if policy.reward is None:
        return
    if set(config.reward.objectives) != set(policy.reward.objectives):
        raise ConfigError(
            f"task {config.name!r}: its reward override scores {list(config.reward.objectives)} "
            f"but the policy was optimized on {list(policy.reward.objectives)}"
        )


def _capped(tier: Tier, caps: TierCaps | None) -> Tier:
    if caps is None:
        return tier
    max_n = _tighter(tier.max_n, caps.max_n)
    return msgspec.structs.replace(
        tier,
        max_n=None if max_n is None else int(max_n),
        max_cost=_tighter(tier.max_cost, caps.max_cost),
    )


class TaskRegistry:
    """Name and alias lookup of served tasks, and their hot reload."""

    def __init__(
        self, config: ProxyConfig, metrics: ProxyMetrics, store: PolicyStore | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._store = store
        self._tasks: dict[str, ServedTask] = {}
        self._aliases: dict[str, str] = {}
        self._rejected: dict[str, object] = {}  # task -> the stamp that was rejected
        self._latest: dict[str, object] = {}  # task -> the newest stamp seen
        self._reasons: dict[str, str] = {}  # task -> why its rejected stamp was refused
        for task in config.tasks:
            self._aliases[task.name] = task.name
            for alias in task.aliases:
                self._aliases[alias] = task.name
        if store is None and any(t.policy_file is None for t in config.tasks):
            raise ConfigError("a task is bound to the policy store but no store is open")

    @property
    def tasks(self) -> Mapping[str, ServedTask]:
        return self._tasks

    @property
    def aliases(self) -> Mapping[str, str]:
        return self._aliases

    @property
    def rejected(self) -> dict[str, str]:
        """Tasks whose newest policy was rejected (an older one serves), with the reason."""
        return {
            name: reason
            for name, reason in self._reasons.items()
            if name in self._rejected and self._rejected[name] == self._latest.get(name)
        }

    def resolve(self, task: str | None, model: str | None) -> ServedTask | None:
        """The task named by the header, else the task ``model`` is an alias of, else None."""
        if task is not None:
            return self._tasks.get(task)
        name = self._aliases.get(model) if model is not None else None
        return None if name is None else self._tasks.get(name)

    async def _read(self, task: TaskConfig) -> ServedTask | None:
        """Read the task's current policy; None when it has not changed since last time."""
        current = self._tasks.get(task.name)
        revision: int | None = None
        if task.policy_file is not None:
            try:
                stat = os.stat(task.policy_file)
                stamp: object = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamp = "unreadable"  # load_policy says why, once
            self._latest[task.name] = stamp
            if current is not None and current.stamp == stamp:
                return None
            if self._rejected.get(task.name) == stamp:
                return None  # already logged; wait for the file to change again
            try:
                policy = load_policy(task.policy_file)
            except IapoError:
                self._rejected[task.name] = stamp
                raise
        else:
            assert self._store is not None
            stored = await self._store.active(task.name)
            if stored is None:
                raise ConfigError(f"task {task.name!r}: the store has no active policy for it")
            stamp = stored.revision
            self._latest[task.name] = stamp
            if current is not None and current.stamp == stamp:
                return None
            if self._rejected.get(task.name) == stamp:
                return None
            policy, revision = stored.policy, stored.revision
        try:
            if policy.task != task.name:
                raise ConfigError(f"policy is for task {policy.task!r}, not {task.name!r}")
            upstream = self._config.upstream(task.upstream)
            return ServedTask(task, policy, upstream, revision=revision, stamp=stamp)
        except IapoError:
            self._rejected[task.name] = stamp  # log a bad revision once, not every poll
            raise

    def _install(self, served: ServedTask) -> None:
        self._tasks[served.name] = served
        self._metrics.allow(tasks=[served.name], tiers=served.policy.tiers)
        for tier, (choice, _) in served.tiers.items():
            self._metrics.set_policy(
                served.name,
                tier,
                prompt=choice.prompt.id,
                n=choice.n,
                strategy=choice.strategy,
                policy=served.policy.digest,
            )

    async def load(self) -> None:
        """Load every task's policy; ConfigError names the task that cannot be served."""
        for task in self._config.tasks:
            try:
                served = await self._read(task)
            except (IapoError, OSError) as exc:
                raise ConfigError(f"task {task.name!r}: {exc}") from None
            if served is not None:
                self._install(served)
            self._metrics.policy_rejected.labels(task.name).set(0)
        logger.info("serving tasks %s", sorted(self._tasks))

    async def refresh(self) -> list[str]:
        """Reload policies that changed; returns the tasks reloaded. Never raises for bad input."""
        reloaded: list[str] = []
        for task in self._config.tasks:
            try:
                served = await self._read(task)
            except (IapoError, OSError, ValueError) as exc:
                logger.error(
                    "task %s: new policy rejected, the previous one keeps serving: %s",
                    task.name,
                    exc,
                )
                self._reasons[task.name] = str(exc)
                self._metrics.policy_reloads_rejected.labels(task.name).inc()
            else:
                if served is not None:
                    self._install(served)
                    reloaded.append(task.name)
                    logger.warning("task %s: now serving policy %s", task.name, served.label)
            rejected = task.name in self.rejected
            self._metrics.policy_rejected.labels(task.name).set(1 if rejected else 0)
        return reloaded
