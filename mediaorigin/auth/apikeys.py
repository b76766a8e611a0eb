"""API keys for `/api`: `Authorization: Bearer <key>` → a Principal with a role.

Keys come from config: the bootstrap admin key and `api_keys` ("key:role[:organization],...").
Keys are compared as SHA-256 digests with `hmac.compare_digest` against every configured key,
so neither timing nor early exit tells a caller how close a guess was. Only a short digest
prefix (`key_id`) ever reaches logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROLES = ("admin", "instructor", "student")
# What each role may do on media it can see; per-media permissions come with playback security.
ACTIONS = {
    "admin": {"read", "write", "delete", "process", "upload"},
    "instructor": {"read", "write", "delete", "process", "upload"},
    "student": {"read"},
}
MIN_KEY_LENGTH = 16


class ApiKeyError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    key_id: str  # first 8 hex digits of the key's SHA-256: safe to log
    role: str
    organization_id: str | None  # None: sees every organization (admin keys)

    def may(self, action: str) -> bool:
        return action in ACTIONS[self.role]

    def sees(self, organization_id: str | None) -> bool:
        return self.organization_id is None or self.organization_id == organization_id


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, admin_key: str, api_keys: str = "") -> None:
        self._entries: list[_Entry] = []
        self._add(admin_key, "admin", None)
        for spec in filter(None, (s.strip() for s in api_keys.split(","))):
            parts = spec.split(":")
            if len(parts) not in (2, 3) or parts[1] not in ROLES:
                raise ApiKeyError("auth.api_keys entries are key:role[:organization] with role "
                                  f"one of {', '.join(ROLES)}")
            self._add(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None)

    def _add(self, key: str, role: str, organization_id: str | None) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ApiKeyError(f"API keys must be at least {MIN_KEY_LENGTH} characters")
        digest = _digest(key)
        self._entries.append(_Entry(digest, Principal(digest.hex()[:8], role, organization_id)))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an `Authorization` header value, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = _digest(key.strip())
        found = None
        for entry in self._entries:  # no early exit: every key is compared
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found


def bootstrap_admin_key(configured: str, key_file: Path) -> str:
    """The configured admin key, or one generated once and kept in `key_file` (mode 0600)."""
    return bootstrap_secret(configured, key_file, lambda: secrets.token_urlsafe(24))


def bootstrap_secret(configured: str, key_file: Path, make: Callable[[], str]) -> str:
    """A configured secret, or one made once and kept in `key_file` (mode 0600); several
    processes starting together all end up with the first one written."""
    if configured:
        return configured
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(tmp, key_file)  # fails if another process got there first: use theirs
    except FileExistsError:
        value = key_file.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value
