"""Generate docs/config.md: every key of the proxy config and of the task file.

Keys, types and defaults are read from the msgspec schemas (``proxy.config.ProxyConfig``,
``policies.TaskFile``); only the meanings are written here, one per field, and a field
without one (or a meaning for a field that no longer exists) is an error. So the page
cannot drift from the code: ``tests/test_config_doc.py`` checks the committed file.

    python docs/build_config.py            # rewrite docs/config.md
    python docs/build_config.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies import TaskFile  # noqa: E402
from proxy.config import ProxyConfig  # noqa: E402

OUT = Path(__file__).with_name("config.md")

# (struct, field) -> meaning. Types and defaults come from the schema.
MEANINGS: dict[tuple[str, str], str] = {
    # proxy config, top level
    ("ProxyConfig", "upstreams"): "The OpenAI-compatible servers samples come from (at least one).",
    ("ProxyConfig", "tasks"): "The tasks served, each bound to a policy file or the store.",
    ("ProxyConfig", "server"): "Where to listen and per-request limits.",
    ("ProxyConfig", "auth"): "Proxy API keys.",
    ("ProxyConfig", "retry"): "Backoff of the bounded retries of upstream calls.",
    ("ProxyConfig", "breaker"): "The circuit breaker of each upstream.",
    ("ProxyConfig", "store"): "The SQLite policy store (for tasks without `policy_file`).",
    ("ProxyConfig", "request_log"): "The SQLite request log (one row per request).",
    ("ProxyConfig", "passthrough"): "Forward requests that name no task to an upstream "
    "unchanged; `false` refuses them with a 400 naming the tasks and aliases.",
    ("ProxyConfig", "passthrough_upstream"): "Where a pass-through request goes when no "
    "upstream's `model` is the one it names (default: the first upstream).",
    # [server]
    ("ServerConfig", "host"): "Listen address (`IAPO_HOST` overrides it).",
    ("ServerConfig", "port"): "Listen port (`IAPO_PORT` overrides it; 0 picks a free one).",
    ("ServerConfig", "max_body_bytes"): "Largest request body accepted (413 above it).",
    ("ServerConfig", "deadline_s"): "One deadline per request, all samples and retries "
    "included (a request's `X-IAPO-Deadline-Ms` may lower it).",
    ("ServerConfig", "keepalive_interval_s"): "Seconds between SSE keep-alive comments "
    "while a task stream's samples run.",
    ("ServerConfig", "drain_timeout_s"): "On SIGTERM, how long in-flight requests may "
    "finish before the server stops.",
    ("ServerConfig", "access_log"): "Log one line per HTTP request (uvicorn's access log).",
    ("ServerConfig", "max_header_bytes"): "Largest request head accepted (431 above it).",
    ("ServerConfig", "header_timeout_s"): "A request head not complete within this is "
    "answered 408 and closed.",
    ("ServerConfig", "body_timeout_s"): "A request body silent this long is closed.",
    ("ServerConfig", "upstream_transport"): "`lean`: plain-HTTP upstreams use iapo's "
    "keep-alive pool (`proxy.transport.LeanTransport`); `httpx`: httpx's own transport.",
    # [auth]
    ("AuthConfig", "disabled"): "Serve without keys; must be explicit (loopback demos).",
    ("AuthConfig", "keys_env"): "Environment variable holding comma-separated proxy keys.",
    ("AuthConfig", "key_sha256"): "Hex SHA-256 digests of accepted keys (no key in any file).",
    ("AuthConfig", "open_metrics"): "Serve `/metrics` without a key.",
    ("AuthConfig", "open_health"): "Serve `/healthz` and `/readyz` without a key.",
    # [retry]
    ("RetryConfig", "base_delay_s"): "First backoff (exponential, full jitter).",
    ("RetryConfig", "max_delay_s"): "Largest backoff between two attempts.",
    ("RetryConfig", "max_resends"): "How many times one client request may re-send a call "
    "the upstream may already have processed (a reset after the request was sent, a "
    "502/504); shared by its N calls.",
    # [breaker]
    ("BreakerConfig", "failure_threshold"): "Consecutive failures that open the circuit.",
    ("BreakerConfig", "cooldown_s"): "How long an open circuit waits before a trial call.",
    # [store]
    ("StoreConfig", "path"): "SQLite file of the policy store (`IAPO_STORE` overrides it; "
    "relative to the config file).",
    ("StoreConfig", "poll_interval_s"): "How often policy files and the store are checked "
    "for a new policy (hot reload).",
    # [request_log]
    ("RequestLogConfig", "path"): "SQLite file of the request log (`IAPO_REQUEST_LOG` "
    "overrides it); no log without it.",
    ("RequestLogConfig", "log_content"): "Also store the messages and the answer.",
    ("RequestLogConfig", "batch_size"): "Rows written per transaction.",
    ("RequestLogConfig", "flush_interval_s"): "Longest a row waits before it is written.",
    ("RequestLogConfig", "max_queue"): "Rows held in memory at most; beyond, rows are dropped "
    "and counted.",
    # [[tasks]]
    ("TaskConfig", "name"): "The task's name (`X-IAPO-Task`), as in its policy.",
    ("TaskConfig", "policy_file"): "Policy JSON to serve (relative to the config file); "
    "omit it to serve the store's active revision.",
    ("TaskConfig", "upstream"): "The upstream its samples come from (default: the first).",
    ("TaskConfig", "aliases"): 'Model names that select this task (`model="math-solver"`).',
    ("TaskConfig", "early_stop"): "Stop drawing samples once the majority vote cannot "
    "change (exact: the answer is the full vote's).",
    ("TaskConfig", "extractor"): "Override the policy's answer extractor.",
    ("TaskConfig", "reward"): "Override the policy's reward service (it must score the "
    "objectives the policy was optimized on).",
    ("TaskConfig", "tiers"): "Per-tier caps, tighter than the policy's, and stopping rules "
    "(`[tasks.tiers.economy]`).",
    ("TierCaps", "max_n"): "Most samples a request of this tier may draw.",
    ("TierCaps", "max_cost"): "Most estimated cost a request of this tier may spend.",
    ("TierCaps", "stop"): "When this tier's requests stop drawing samples: `full` (all N); "
    "majority vote: `exact` (once the vote cannot change), `confident` (also once the leader "
    "wins the full vote with posterior probability at least 1 − `delta`); Best-of-N: "
    "`threshold` (after the first wave with a reward at or over the policy's threshold; waves "
    "of one, then two samples, each scored). Default: the rule the "
    "policy priced the tier under, else the task's `early_stop`.",
    ("TierCaps", "delta"): '`stop = "confident"`: the accepted chance, 0 < delta < 0.5, '
    "that the answer differs from the full N-sample vote's.",
    # extractor (proxy [[tasks]] and task file)
    ("ExtractorSpec", "kind"): "How a sample's answer is read: last number, `\\boxed{}`, "
    "option letter, regex, or JSON.",
    ("ExtractorSpec", "pattern"): 'The regex (`kind = "regex"`; its first group if any).',
    ("ExtractorSpec", "options"): "The letters an `option_letter` answer may be.",
    ("ExtractorSpec", "case_sensitive"): "Compare answers case-sensitively.",
    ("ExtractorSpec", "path"): '`kind = "json"`: the value to vote on (`answer`, '
    "`result.items.0`); default the whole document.",
    # [[upstreams]] and the task file's [upstream]
    ("UpstreamSpec", "base_url"): "Base URL ending before `/chat/completions`.",
    ("UpstreamSpec", "model"): "Model name sent upstream.",
    ("UpstreamSpec", "name"): "Name used by `tasks.upstream`, metrics and logs.",
    ("UpstreamSpec", "api_key_env"): "Environment variable with the upstream's API key "
    "(never the key itself).",
    ("UpstreamSpec", "supports_n"): "The upstream honours `n` > 1 in one call; else N "
    "concurrent calls.",
    ("UpstreamSpec", "max_concurrency"): "Most calls in flight to this upstream.",
    ("UpstreamSpec", "timeout_s"): "Timeout of one call.",
    ("UpstreamSpec", "connect_timeout_s"): "Timeout of connecting.",
    ("UpstreamSpec", "max_retries"): "Retries of a failed call (where safe).",
    ("UpstreamSpec", "price_per_1k_prompt_tokens"): "Cost of 1,000 prompt tokens (any unit; "
    "a tier's cost weight is utility per that unit).",
    ("UpstreamSpec", "price_per_1k_completion_tokens"): "Cost of 1,000 completion tokens.",
    ("UpstreamSpec", "temperature"): "Sampling temperature (the optimizer records it in "
    "the policy; the proxy applies the policy's, else this).",
    ("UpstreamSpec", "top_p"): "Nucleus sampling (recorded and applied like `temperature`; "
    "unset: the upstream's default).",
    ("UpstreamSpec", "max_tokens"): "Completion limit sent when the client sets none.",
    # task file
    ("TaskFile", "task"): "The task: prompts, strategy, scoring, tiers.",
    ("TaskFile", "upstream"): "The upstream the optimizer samples from.",
    ("TaskFile", "dataset"): "The training questions.",
    ("TaskSpec", "name"): "The task's name (what the policy and the proxy call it).",
    ("TaskSpec", "prompts"): "The candidate prompts.",
    ("TaskSpec", "strategy"): "`majority` (vote over extracted answers) or `best_of_n` "
    "(a reward service picks).",
    ("TaskSpec", "extractor"): "How answers are read for majority vote.",
    ("TaskSpec", "reward"): "The reward service (`best_of_n`).",
    ("TaskSpec", "default_tier"): "The tier a request that names none gets.",
    ("TaskSpec", "n_max"): "Largest N considered.",
    ("TaskSpec", "tiers"): "The budget tiers to optimise for.",
    ("PromptCandidate", "id"): "Stable id of the prompt (in the policy and metrics).",
    ("PromptCandidate", "text"): "The prompt text.",
    ("PromptCandidate", "role"): "`system`: the system message; `template`: wraps the "
    "question at `{question}`.",
    ("RewardSpec", "url"): "The reward endpoint (iapo's contract, or vLLM `/pooling` / `/score`).",
    ("RewardSpec", "objectives"): "The objectives it scores (tiers weight them).",
    ("RewardSpec", "kind"): "`iapo` (the JSON contract) or `vllm` (one objective).",
    ("RewardSpec", "model"): "Model name sent to the reward service.",
    ("RewardSpec", "api_key_env"): "Environment variable with its API key.",
    ("RewardSpec", "timeout_s"): "Timeout of one scoring call.",
    ("Tier", "name"): "The tier's name (`X-IAPO-Tier`).",
    ("Tier", "cost_weight"): "λ: utility lost per unit of cost.",
    ("Tier", "objective_weights"): "Weights of the reward objectives (Best-of-N; default equal).",
    ("Tier", "max_n"): "Hard cap on N.",
    ("Tier", "max_cost"): "Hard cap on one request's estimated cost.",
    ("Tier", "stop"): "When the tier's requests stop drawing samples (as in the proxy's "
    "`[tasks.tiers.*]`); the optimizer prices N by the samples this rule is expected to draw. "
    "With `threshold` (Best-of-N) it also chooses the threshold, and a cap up to `n_max` "
    "where one pays, from the rewards it drew.",
    ("Tier", "delta"): '`stop = "confident"`: the accepted chance that the answer differs '
    "from the full vote's.",
    ("DatasetSpec", "path"): "JSONL file of questions (relative to the task file).",
    ("DatasetSpec", "limit"): "Use only the first questions.",
}

# Sections: (title, schema, TOML path prefix).
SECTIONS: tuple[tuple[str, type, str], ...] = (
    ("Proxy config (`iapo serve --config proxy.toml`)", ProxyConfig, ""),
    ("Task file (`iapo optimize --task math.toml`)", TaskFile, ""),
)


def _type(t: mi.Type) -> str:
    """A short, TOML-flavoured name of a msgspec type, with its bounds."""
    if isinstance(t, mi.UnionType):
        parts = [p for p in t.types if not isinstance(p, mi.NoneType)]
        text = " or ".join(_type(p) for p in parts)
        return text if len(parts) == len(t.types) else f"{text} (optional)"
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f'`"{v}"`' if isinstance(v, str) else f"`{v}`" for v in t.values)
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.IntType | mi.FloatType):
        name = "integer" if isinstance(t, mi.IntType) else "number"
        bounds = []
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(t, attr)
            if value is not None:
                bounds.append(f"{sign} {value:g}")
        return f"{name} ({', '.join(bounds)})" if bounds else name
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType):
        return f"array of {_type(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"table of {_type(t.value_type)}"
    if isinstance(t, mi.StructType):
        return "table"
    return type(t).__name__.removesuffix("Type").lower()


def _default(field: mi.Field) -> str:
    if field.required:
        return "required"
    if field.default_factory is not mi.NODEFAULT:
        value: Any = field.default_factory()
    else:
        value = field.default
    if isinstance(value, msgspec.Struct):
        return "(its defaults)"
    if value is None:
        return "none"
    built = _without_none(msgspec.to_builtins(value))
    if isinstance(built, list | tuple | dict) and not built:
        return "empty"
    return f"`{msgspec.json.encode(built).decode()}`"


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def _structs_in(t: mi.Type) -> list[mi.StructType]:
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.UnionType):
        return [s for p in t.types for s in _structs_in(p)]
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType):
        return _structs_in(t.item_type)
    if isinstance(t, mi.DictType):
        return _structs_in(t.value_type)
    return []


def _table_path(prefix: str, field: mi.Field) -> str:
    """The TOML spelling of a nested table: ``[server]``, ``[[tasks]]``, ``[tasks.tiers.NAME]``."""
    path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
    t = field.type
    if isinstance(t, mi.UnionType):
        t = next(p for p in t.types if not isinstance(p, mi.NoneType))
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return f"[[{path}]]"
    if isinstance(t, mi.DictType):
        return f"[{path}.NAME]"
    return f"[{path}]"


def walk(schema: type) -> list[tuple[str, str, mi.StructType]]:
    """(table path, struct name, struct) of the schema and every table nested in it."""
    info = mi.type_info(schema)
    assert isinstance(info, mi.StructType)
    found: list[tuple[str, str, mi.StructType]] = [("", info.cls.__name__, info)]
    index = 0
    while index < len(found):
        path, _, struct = found[index]
        index += 1
        for field in struct.fields:
            for nested in _structs_in(field.type):
                table = _table_path(path.strip("[]"), field)
                found.append((table, nested.cls.__name__, nested))
    return found


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/build_config.py from the msgspec schemas; do not edit. -->",
        "",
        "Every key of the proxy config and of the task file, with its type, default and",
        "meaning. Both are TOML; unknown keys are refused and named. Regenerate with",
        "`python docs/build_config.py` (a test fails when this page is out of date).",
    ]
    for title, schema, _ in SECTIONS:
        lines += ["", f"## {title}"]
        for table, name, struct in walk(schema):
            heading = table if table else "top level"
            lines += ["", f"### `{heading}`" if table else f"### {heading}", ""]
            doc = (struct.cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            if doc:
                lines += [" ".join(doc.replace("``", "`").split()), ""]
            lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
            for field in struct.fields:
                meaning = MEANINGS.get((name, field.name))
                if meaning is None:
                    raise KeyError(f"no meaning written for {name}.{field.name}")
                lines.append(
                    f"| `{field.encode_name}` | {_type(field.type)} | {_default(field)} "
                    f"| {meaning} |"
                )
    return "\n".join(lines) + "\n"


def documented_fields() -> set[tuple[str, str]]:
    """Every (struct, field) the schemas have: what MEANINGS must cover exactly."""
    return {
        (name, field.name)
        for _, schema, _ in SECTIONS
        for _, name, struct in walk(schema)
        for field in struct.fields
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if config.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python docs/build_config.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
