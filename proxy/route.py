"""Where a chat request goes, decided once before anything is sent: a route value.

    route = resolve_route(service, iapo, raw)     # InvalidRequest / UnknownTask / ...
    if isinstance(route, PassthroughRoute): ...   # bytes forwarded to an upstream
    else: ...                                      # a TaskPlan: tier, fields, body, N

A ``TaskPlan`` holds everything a task request needs and nothing it will learn later
(what was spent, how the vote went: that is the run's ``TaskOutcome``), so it can be
read by the run, the response headers, the metrics and the log alike.
"""

from __future__ import annotations

from typing import Any

import msgspec

from policies import Tier, TierPolicy, UnknownTask, UnknownTier, UpstreamSpec
from proxy.request import ChatView, IapoHeaders, decode_chat, decode_passthrough
from proxy.service import ProxyService
from proxy.taskfields import TaskFields, read_task_fields
from proxy.tasks import ServedTask

__all__ = ["PassthroughRoute", "Route", "TaskPlan", "find_task", "plan_task", "resolve_route"]


class PassthroughRoute(msgspec.Struct, frozen=True):
    """A request for no task: its bytes go to the upstream serving ``model``."""

    model: str | None
    stream: bool


class TaskPlan(msgspec.Struct, frozen=True):
    """A task request, resolved: the tier's policy, the fields as task mode reads them,
    the upstream body (prompt applied, sampling settings set) and N after the caps."""

    served: ServedTask
    tier_name: str
    choice: TierPolicy
    tier: Tier
    view: ChatView
    fields: TaskFields
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    n_policy: int
    n: int

    @property
    def spec(self) -> UpstreamSpec:
        return self.served.upstream

    @property
    def capped(self) -> bool:
        return self.n < self.n_policy

    def start_headers(self) -> dict[str, str]:
        """Headers known before sampling (all a streaming response can carry)."""
        headers = {
            "x-iapo-task": self.served.name,
            "x-iapo-tier": self.tier_name,
            "x-iapo-policy": self.served.label,
            "x-iapo-temperature": f"{self.fields.sampling['temperature']:g}",
        }
        if "top_p" in self.fields.sampling:
            headers["x-iapo-top-p"] = f"{self.fields.sampling['top_p']:g}"
        if self.capped:
            headers["x-iapo-n-capped"] = f"{self.n_policy}->{self.n}"
        return headers


Route = TaskPlan | PassthroughRoute


def find_task(
    service: ProxyService, iapo: IapoHeaders, raw: bytes
) -> ServedTask | PassthroughRoute:
    """The task a request names (``X-IAPO-Task``, else a model alias), or its pass-through
    route; UnknownTask for a task that does not exist, or for any model when pass-through
    is off."""
    registry = service.registry
    assert registry is not None
    if iapo.task is not None:
        served = registry.tasks.get(iapo.task)
        if served is None:
            raise UnknownTask(
                f"unknown task {iapo.task!r}; valid tasks: {', '.join(sorted(registry.tasks))}",
                param="X-IAPO-Task",
            )
        return served
    view = decode_passthrough(raw)
    served = registry.resolve(None, view.model)
    if served is not None:
        return served
    if not service.config.passthrough:
        raise UnknownTask(
            f"model {view.model!r} is not a task and pass-through is off; valid "
            f"tasks and aliases: {', '.join(sorted(registry.aliases))}",
            param="model",
        )
    return PassthroughRoute(view.model, view.stream)


def plan_task(
    service: ProxyService, served: ServedTask, raw: bytes, tier_name: str | None
) -> TaskPlan:
    """Resolve a task request; UnknownTier or InvalidRequest (naming the field) if it
    cannot be served as asked."""
    view, body = decode_chat(raw)
    tier_name = tier_name if tier_name is not None else served.policy.default
    if tier_name not in served.tiers:
        raise UnknownTier(
            f"unknown tier {tier_name!r} for task {served.name!r}; valid tiers: "
            f"{', '.join(sorted(served.tiers))}",
            param="X-IAPO-Tier",
        )
    choice, tier = served.tiers[tier_name]
    fields = read_task_fields(body, view, served, choice.strategy)
    messages = choice.prompt.apply(body["messages"])
    upstream_body = _upstream_body(body, messages, served.upstream, fields)
    cost = _cost_per_sample(service, served, view, tier, messages)
    return TaskPlan(
        served=served,
        tier_name=tier_name,
        choice=choice,
        tier=tier,
        view=view,
        fields=fields,
        messages=messages,
        body=upstream_body,
        n_policy=choice.n,
        n=tier.cap_n(choice.n, cost),
    )


def resolve_route(service: ProxyService, iapo: IapoHeaders, raw: bytes) -> Route:
    """The route of a request (see ``find_task`` and ``plan_task``)."""
    found = find_task(service, iapo, raw)
    if isinstance(found, PassthroughRoute):
        return found
    return plan_task(service, found, raw, iapo.tier)


def _upstream_body(
    body: dict[str, Any], messages: list[dict[str, Any]], spec: UpstreamSpec, fields: TaskFields
) -> dict[str, Any]:
    out = dict(body)
    out["messages"] = messages
    out["model"] = spec.model
    for key in ("stream", "stream_options", "n"):
        out.pop(key, None)
    out.update(fields.sampling)  # part of the arm the policy evaluated
    limits = ("max_tokens", "max_completion_tokens")
    if spec.max_tokens is not None and not any(k in out for k in limits):
        out["max_tokens"] = spec.max_tokens
    return out


def _cost_per_sample(
    service: ProxyService,
    served: ServedTask,
    view: ChatView,
    tier: Tier,
    messages: list[dict[str, Any]],
) -> float | None:
    """An estimate before sampling, for ``max_cost``: prompt bytes/4, completion bound."""
    if tier.max_cost is None:
        return None
    prompt_tokens = len(msgspec.json.encode(messages)) // 4
    completion = (
        view.max_completion_tokens
        or view.max_tokens
        or served.upstream.max_tokens
        or service.mean_completion_tokens.get(served.name, 0.0)
    )
    return served.upstream.cost(prompt_tokens, int(completion))
