"""The proxy's configuration: one TOML file, validated, plus environment overrides.

    [server]
    host = "127.0.0.1"
    port = 8080
    deadline_s = 120                  # one deadline per request, all retries included

    [auth]
    keys_env = "IAPO_API_KEYS"        # comma-separated proxy keys, read from the environment

    [[upstreams]]                     # a policies.UpstreamSpec; the key only via api_key_env
    name = "vllm"
    base_url = "http://127.0.0.1:8000/v1"
    model = "meta-llama/Llama-3.3-70B-Instruct"
    api_key_env = "VLLM_API_KEY"

    [[tasks]]
    name = "math"
    policy_file = "policies/math.json"   # or omit it to serve the store's active revision
    aliases = ["math-solver"]            # a request with model="math-solver" is this task

Every table rejects unknown keys and errors name the bad key. ``IAPO_HOST``,
``IAPO_PORT``, ``IAPO_STORE`` and ``IAPO_REQUEST_LOG`` override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from policies import (
    ConfigError,
    ExtractorSpec,
    RewardSpec,
    StopKind,
    StopRule,
    UpstreamSpec,
    read_toml,
)

__all__ = [
    "AuthConfig",
    "BreakerConfig",
    "ProxyConfig",
    "RequestLogConfig",
    "RetryConfig",
    "ServerConfig",
    "StoreConfig",
    "TaskConfig",
    "TierCaps",
    "load_config",
    "parse_config",
]

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]

# Keys that would carry a secret literal in an upstream table; only ``api_key_env`` is allowed.
_SECRET_KEYS = ("api_key", "key", "token", "secret", "password", "authorization", "bearer")


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where to listen and the per-request limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 4 * 1024 * 1024
    deadline_s: PositiveFloat = 300.0
    keepalive_interval_s: PositiveFloat = 10.0
    drain_timeout_s: PositiveFloat = 30.0
    access_log: bool = False
    # "lean": plain-HTTP upstreams use proxy.transport.LeanTransport; "httpx": httpx's own.
    upstream_transport: Literal["lean", "httpx"] = "lean"
    # What a client may make the server hold (proxy.protocol): a larger head is a 431, a
    # head not in after header_timeout_s a 408, a body silent for body_timeout_s is closed.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    header_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 15.0


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Proxy API keys (``Authorization: Bearer``); required unless ``disabled = true``.

    ``keys_env`` names an environment variable with comma-separated keys;
    ``key_sha256`` lists hex SHA-256 digests of keys, so no key is written anywhere.
    """

    disabled: bool = False
    keys_env: str | None = None
    key_sha256: tuple[str, ...] = ()
    open_metrics: bool = False
    open_health: bool = True


class RetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounded retries with exponential backoff and full jitter (connect errors, 429, 502-504).

    ``max_resends``: how many times one client request may re-send a call the upstream
    may already have processed (and billed): a connection broken after the request was
    sent, or a 502/504 from a gateway. Shared by all the calls of a fanned-out request.
    """

    base_delay_s: PositiveFloat = 0.1
    max_delay_s: PositiveFloat = 5.0
    max_resends: Annotated[int, msgspec.Meta(ge=0, le=100)] = 2


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A circuit breaker per upstream: opens after ``failure_threshold`` consecutive failures."""

    failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 5
    cooldown_s: PositiveFloat = 10.0


class StoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The SQLite policy store, polled for newly activated revisions."""

    path: str | None = None
    poll_interval_s: PositiveFloat = 2.0


class RequestLogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The request log: one row per request, written in batches off the request path."""

    path: str | None = None
    log_content: bool = False
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 256
    flush_interval_s: PositiveFloat = 1.0
    max_queue: Annotated[int, msgspec.Meta(ge=1)] = 100_000


class TierCaps(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Caps on one tier's fan-out, on top of (tighter than) the policy's, and when its
    requests stop drawing samples (``stop``; default: the rule the policy priced the tier
    under, else the task's ``early_stop``)."""

    max_n: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_cost: Annotated[float, msgspec.Meta(gt=0)] | None = None
    stop: StopKind | None = None
    delta: float | None = None

    def stop_rule(self, early_stop: bool, priced: StopRule | None = None) -> StopRule:
        """This tier's stopping rule: this override, else ``priced`` (the policy's rule,
        if it stops early), else the task's ``early_stop`` default."""
        if self.stop is not None:
            return StopRule(kind=self.stop, delta=self.delta)
        if priced is not None and priced.stops_early:
            return priced
        return StopRule(kind="exact" if early_stop else "full")


class TaskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A served task, bound to a policy file or to the store's active revision.

    ``extractor`` and ``reward`` override the policy's: where this deployment's answers are
    read and its Best-of-N candidates scored (e.g. the reward endpoint of the
    ``iapo simulate --replay`` that serves the table a policy was optimized on). A reward
    override must score the objectives the policy's tiers weight.
    """

    name: Name
    policy_file: str | None = None
    upstream: str | None = None
    aliases: tuple[str, ...] = ()
    early_stop: bool = False
    extractor: ExtractorSpec | None = None
    reward: RewardSpec | None = None
    tiers: dict[str, TierCaps] = msgspec.field(default_factory=dict)


class ProxyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything ``iapo serve`` needs; ``parse_config`` validates cross-references."""

    upstreams: tuple[UpstreamSpec, ...]
    tasks: tuple[TaskConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    store: StoreConfig = StoreConfig()
    request_log: RequestLogConfig = RequestLogConfig()
    passthrough: bool = True
    passthrough_upstream: str | None = None

    def upstream(self, name: str | None) -> UpstreamSpec:
        """The upstream called ``name`` (None: the first one)."""
        if name is None:
            return self.upstreams[0]
        for spec in self.upstreams:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _check_secrets(raw: dict[str, Any], source: str) -> None:
    for i, upstream in enumerate(raw.get("upstreams") or []):
        if not isinstance(upstream, dict):
            continue
        for key in upstream:
            if key.lower() in _SECRET_KEYS:
                name = upstream.get("name", i)
                raise ConfigError(
                    f"{source}: upstreams[{name}] has {key!r}: a secret is never written in the "
                    f"config file; put it in an environment variable and set api_key_env"
                )


def _check_references(config: ProxyConfig, source: str) -> None:
    names = [u.name for u in config.upstreams]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: upstream names must be unique, got {names}")
    if config.passthrough_upstream is not None and config.passthrough_upstream not in names:
        raise ConfigError(
            f"{source}: passthrough_upstream {config.passthrough_upstream!r} is not one of {names}"
        )
    seen: set[str] = set()
    for task in config.tasks:
        for tier, caps in task.tiers.items():
            where = f"{source}: tasks[{task.name}].tiers.{tier}"
            if caps.delta is not None and caps.stop != "confident":
                raise ConfigError(f'{where}: delta is only read with stop = "confident"')
            try:
                caps.stop_rule(task.early_stop)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if task.upstream is not None and task.upstream not in names:
            raise ConfigError(
                f"{source}: tasks[{task.name}].upstream {task.upstream!r} is not one of {names}"
            )
        if task.policy_file is None and config.store.path is None:
            raise ConfigError(
                f"{source}: tasks[{task.name}] has no policy_file and no [store] path is set"
            )
        for name in (task.name, *task.aliases):
            if name in seen:
                raise ConfigError(f"{source}: task name or alias {name!r} is used twice")
            seen.add(name)
    auth = config.auth
    if not auth.disabled and auth.keys_env is None and not auth.key_sha256:
        raise ConfigError(
            f"{source}: [auth] needs keys_env or key_sha256, or an explicit disabled = true"
        )
    for digest in auth.key_sha256:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ConfigError(f"{source}: auth.key_sha256 entries must be 64 hex digits")


def _apply_env(raw: dict[str, Any], env: dict[str, str]) -> None:
    server = raw.setdefault("server", {})
    if "IAPO_HOST" in env:
        server["host"] = env["IAPO_HOST"]
    if "IAPO_PORT" in env:
        try:
            server["port"] = int(env["IAPO_PORT"])
        except ValueError:
            raise ConfigError(f"IAPO_PORT must be an integer, got {env['IAPO_PORT']!r}") from None
    if "IAPO_STORE" in env:
        raw.setdefault("store", {})["path"] = env["IAPO_STORE"]
    if "IAPO_REQUEST_LOG" in env:
        raw.setdefault("request_log", {})["path"] = env["IAPO_REQUEST_LOG"]


def _resolve_paths(config: ProxyConfig, base: Path) -> ProxyConfig:
    def resolve(path: str | None) -> str | None:
        if path is None or path == ":memory:" or Path(path).is_absolute():
            return path
        return str(base / path)

    tasks = tuple(
        msgspec.structs.replace(t, policy_file=resolve(t.policy_file)) for t in config.tasks
    )
    store = msgspec.structs.replace(config.store, path=resolve(config.store.path))
    log = msgspec.structs.replace(config.request_log, path=resolve(config.request_log.path))
    return msgspec.structs.replace(config, tasks=tasks, store=store, request_log=log)


def parse_config(
    raw: dict[str, Any],
    *,
    source: str = "config",
    base: Path | None = None,
    env: dict[str, str] | None = None,
) -> ProxyConfig:
    """Validate a decoded config (a TOML table); relative paths resolve against ``base``."""
    raw = dict(raw)
    _check_secrets(raw, source)
    _apply_env(raw, dict(os.environ) if env is None else env)
    try:
        config = msgspec.convert(raw, ProxyConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not config.upstreams:
        raise ConfigError(f"{source}: at least one [[upstreams]] entry is needed")
    _check_references(config, source)
    return _resolve_paths(config, base) if base is not None else config


def load_config(
    path: str | Path | None = None, *, env: dict[str, str] | None = None
) -> ProxyConfig:
    """Read the config file (``path``, else ``$IAPO_CONFIG``) and validate it."""
    environ = dict(os.environ) if env is None else env
    target = path if path is not None else environ.get("IAPO_CONFIG")
    if target is None:
        raise ConfigError("no config file: pass --config FILE or set IAPO_CONFIG")
    file = Path(target)
    raw = read_toml(file, "config file")
    return parse_config(raw, source=str(file), base=file.parent, env=environ)
