"""``iapo serve``: the OpenAI-compatible proxy."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible proxy",
        description="Serve /v1/chat/completions, applying each task's policy per budget tier. "
        "Settings come from a TOML config file (--config, else $IAPO_CONFIG); IAPO_HOST, "
        "IAPO_PORT, IAPO_STORE and IAPO_REQUEST_LOG override it.",
    )
    parser.add_argument("--config", metavar="FILE", help="proxy config file (TOML)")
    parser.add_argument("--host", help="listen address (overrides the config)")
    parser.add_argument("--port", type=int, help="listen port (overrides the config)")
    parser.add_argument(
        "--check", action="store_true", help="validate the config and exit without serving"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import errno

    import msgspec

    from proxy.config import load_config
    from proxy.server import listen_socket, serve

    config = load_config(args.config)
    server = config.server
    if args.host is not None:
        server = msgspec.structs.replace(server, host=args.host)
    if args.port is not None:
        server = msgspec.structs.replace(server, port=args.port)
    config = msgspec.structs.replace(config, server=server)
    if args.check:
        import asyncio

        labels = asyncio.run(_check(config))
        print(f"config OK: {len(config.upstreams)} upstream(s), {len(config.tasks)} task(s)")
        for task, label in labels.items():
            print(f"  task {task}: policy {label}")
        return 0
    try:
        sock = listen_socket(server.host, server.port)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
        print(
            f"iapo serve: error: listening on {server.host}:{server.port} {reason}; "
            f"pick another port with --port or IAPO_PORT, or stop what holds it",
            file=sys.stderr,
        )
        return 1
    print(f"iapo serve: listening on http://{server.host}:{server.port}")
    serve(config, sock)
    return 0


async def _check(config: Any) -> dict[str, str]:
    """Load every task's policy as serving would (ConfigError names what is wrong)."""
    from policies import SqlitePolicyStore
    from proxy.auth import KeyChecker
    from proxy.metrics import ProxyMetrics
    from proxy.tasks import TaskRegistry

    KeyChecker(config.auth)
    for spec in config.upstreams:
        spec.api_key()
    store = None
    if config.store.path is not None:
        store = await SqlitePolicyStore.open(config.store.path)
    try:
        registry = TaskRegistry(config, ProxyMetrics(), store)
        await registry.load()
        return {name: served.label for name, served in registry.tasks.items()}
    finally:
        if store is not None:
            await store.close()
