"""Proxy API keys: ``Authorization: Bearer <key>``, compared in constant time.

Keys come from an environment variable (comma-separated) or as SHA-256 digests in
the config file; either way only digests are kept in memory and compared, with
``hmac.compare_digest`` against every known digest so timing reveals nothing.
A key is never logged. The upstream's key is a different secret the client never sees.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from policies import AuthenticationFailed, ConfigError
from proxy.config import AuthConfig

__all__ = ["KeyChecker", "hash_key"]


def hash_key(key: str) -> bytes:
    """The SHA-256 digest of a key (``iapo`` stores and compares only these)."""
    return hashlib.sha256(key.encode()).digest()


class KeyChecker:
    """Checks the ``Authorization`` header against the configured keys."""

    def __init__(self, auth: AuthConfig, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self.disabled = auth.disabled
        digests = [bytes.fromhex(d) for d in auth.key_sha256]
        if auth.keys_env is not None:
            raw = environ.get(auth.keys_env, "")
            keys = [k.strip() for k in raw.split(",") if k.strip()]
            if not keys and not digests and not auth.disabled:
                raise ConfigError(
                    f"auth.keys_env names {auth.keys_env}, which is unset or empty; export "
                    f"comma-separated proxy keys in it, or set auth.disabled = true"
                )
            digests.extend(hash_key(k) for k in keys)
        self._digests = tuple(digests)

    def check(self, authorization: str | None) -> None:
        """Raise AuthenticationFailed unless the header carries a known key."""
        if self.disabled:
            return
        if authorization is None:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <proxy key>'", code="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("malformed Authorization header: use 'Bearer <proxy key>'")
        presented = hash_key(key.strip())
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise AuthenticationFailed("invalid API key for this proxy")
