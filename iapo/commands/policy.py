"""``iapo policy``: the policy store from the shell (list, show, put, activate, rollback, diff).

A running ``iapo serve`` whose tasks are bound to the store polls the active revision,
so ``put`` and ``activate`` take effect there within ``[store] poll_interval_s``.
A revision is named ``TASK@N`` (``math@3``; the ``/digest`` of a label is ignored), or
``N`` alone when the store holds one task or ``--task`` names it.

    iapo policy --store iapo.sqlite put policies/math.json
    iapo policy --store iapo.sqlite rollback math
    iapo policy --store iapo.sqlite diff math@2 math@3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from typing import Any

import msgspec

from policies import (
    PolicyError,
    PolicyNotFound,
    SqlitePolicyStore,
    StoredPolicy,
    encode_policy,
    load_policy,
)
from policies.errors import ConfigError

_REVISION = re.compile(r"^(?:(?P<task>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})@)?(?P<n>\d+)(?:/\w+)?$")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "policy",
        help="list, show, put, activate, roll back and diff policies in the store",
        description="Manage the SQLite policy store that 'iapo serve' reads ([store] path). "
        "A running proxy picks up a new active revision at its next poll. Revisions are "
        "TASK@N (math@3), or N when the store holds one task or --task names it.",
    )
    parser.add_argument(
        "--store",
        metavar="FILE",
        default=os.environ.get("IAPO_STORE"),
        help="the policy store (SQLite; default $IAPO_STORE)",
    )
    parser.add_argument("--task", help="the task a bare revision number refers to")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="revisions per task, the active one marked")
    listing.add_argument("tasks", nargs="*", metavar="TASK", help="only these tasks")
    show = actions.add_parser("show", help="print a revision as JSON (default: the active one)")
    show.add_argument("revision", metavar="TASK|TASK@N|N")
    put = actions.add_parser("put", help="store a policy file as the task's next revision")
    put.add_argument("file", metavar="FILE", help="a policy JSON file (iapo optimize --out)")
    put.add_argument("--no-activate", action="store_true", help="store it without serving it")
    activate = actions.add_parser("activate", help="serve this revision")
    activate.add_argument("revision", metavar="TASK@N|N")
    rollback = actions.add_parser(
        "rollback", help="serve the revision before the active one (the newest older one)"
    )
    rollback.add_argument("rollback_task", nargs="?", metavar="TASK")
    diff = actions.add_parser("diff", help="what differs between two revisions")
    diff.add_argument("a", metavar="TASK@N|N")
    diff.add_argument("b", metavar="TASK@N|N")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise ConfigError("no policy store: pass --store FILE or set IAPO_STORE")
    if not os.path.exists(args.store) and args.action != "put":
        raise ConfigError(f"policy store {args.store} does not exist; 'put' creates it")
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with await SqlitePolicyStore.open(args.store) as store:
        action = args.action
        if action == "list":
            return await _list(store, args.tasks)
        if action == "show":
            stored = await _lookup(store, args.revision, args.task, allow_task=True)
            print(encode_policy(stored.policy).decode(), end="")
            return 0
        if action == "put":
            policy = load_policy(args.file)
            stored = await store.put(policy, activate=not args.no_activate)
            state = "active" if stored.active else "not active"
            print(f"stored {stored.label} ({state})")
            return 0
        if action == "activate":
            stored = await _lookup(store, args.revision, args.task)
            stored = await store.activate(stored.task, stored.revision)
            print(f"active: {stored.label}")
            return 0
        if action == "rollback":
            return await _rollback(store, args.rollback_task or args.task)
        a = await _lookup(store, args.a, args.task)
        b = await _lookup(store, args.b, args.task)
        lines = diff_policies(a, b)
        print(f"--- {a.label}\n+++ {b.label}")
        print("\n".join(lines) if lines else "(no differences)")
        return 0


async def _only_task(store: SqlitePolicyStore, task: str | None) -> str:
    if task is not None:
        return task
    tasks = await store.tasks()
    if len(tasks) != 1:
        raise PolicyError(
            f"the store holds tasks {tasks}; name one (TASK@N, or --task TASK)"
            if tasks
            else "the store holds no policies"
        )
    return tasks[0]


async def _lookup(
    store: SqlitePolicyStore, text: str, task: str | None, *, allow_task: bool = False
) -> StoredPolicy:
    """The revision ``text`` names (``TASK@N``, ``N``, or with ``allow_task`` a bare TASK
    for its active revision); PolicyNotFound / PolicyError say what is wrong."""
    if allow_task and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", text):
        active = await store.active(text)
        if active is None:
            raise PolicyNotFound(f"task {text!r} has no active policy in {store.path}")
        return active
    match = _REVISION.match(text)
    if match is None:
        raise PolicyError(f"{text!r} is not a revision; write TASK@N (e.g. math@3) or N")
    name = match.group("task") or await _only_task(store, task)
    return await store.get(name, int(match.group("n")))


async def _list(store: SqlitePolicyStore, only: list[str]) -> int:
    tasks = only or await store.tasks()  # tasks with an active revision
    if not tasks:
        print(f"{store.path}: no policies")
        return 0
    for task in tasks:
        history = await store.history(task)
        if not history:
            raise PolicyNotFound(f"no policy for task {task!r} in {store.path}")
        for stored in history:
            marker = "*" if stored.active else " "
            tiers = ", ".join(
                f"{name}={choice.prompt.id}@N{choice.n}"
                for name, choice in stored.policy.tiers.items()
            )
            print(
                f"{marker} {stored.label:<28} stored {stored.stored_at.isoformat()}  "
                f"{stored.policy.method}  {tiers}"
            )
    return 0


async def _rollback(store: SqlitePolicyStore, task: str | None) -> int:
    name = await _only_task(store, task)
    active = await store.active(name)
    if active is None:
        raise PolicyNotFound(f"task {name!r} has no active policy to roll back from")
    older = [s for s in await store.history(name) if s.revision < active.revision]
    if not older:
        raise PolicyError(
            f"{active.label} is the oldest revision; there is nothing to roll back to"
        )
    stored = await store.activate(name, older[0].revision)
    print(f"rolled back {name}: {active.label} -> {stored.label}")
    return 0


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def diff_policies(a: StoredPolicy, b: StoredPolicy) -> list[str]:
    """One line per field that differs, ``tiers.economy.n: 1 -> 4`` (dotted paths)."""
    left = _flatten(msgspec.to_builtins(a.policy))
    right = _flatten(msgspec.to_builtins(b.policy))
    lines = []
    for key in sorted(set(left) | set(right)):
        if left.get(key, _ABSENT) != right.get(key, _ABSENT):
            before = _show(left.get(key, _ABSENT))
            after = _show(right.get(key, _ABSENT))
            lines.append(f"{key}: {before} -> {after}")
    return lines


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."
