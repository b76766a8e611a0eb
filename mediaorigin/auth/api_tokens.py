"""Bearer JWTs for the management API, beside API keys: signed with the playback token keys
but for another audience (`mediaorigin-api`), so a playback token never opens the API and an
API token never plays. Claims: `sub` (who), `role` (admin, instructor, student), `org`
(organization, optional), `exp`, `iat`, `iss`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from .apikeys import ROLES, Principal
from .tokens import Keyring

AUDIENCE = "mediaorigin-api"
MAX_TTL = 30 * 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or "=" in text:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_api_token(keyring: Keyring, *, subject: str, role: str, organization: str | None,
                    ttl: int, now: float) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
    key = keyring.current
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    claims: dict[str, Any] = {"aud": AUDIENCE, "sub": subject, "role": role,
                              "iat": int(now), "exp": int(now) + ttl}
    if organization:
        claims["org"] = organization
    if keyring.issuer:
        claims["iss"] = keyring.issuer
    signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     _b64(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + _b64(key.sign(signing_input.encode()))


def verify_api_token(token: str, keyring: Keyring, now: float) -> Principal | None:
    """The principal of a valid API token, else None (the caller answers 401)."""
    try:
        head, body, sig = token.split(".")
        header = json.loads(_unb64(head))
        claims = json.loads(_unb64(body))
        signature = _unb64(sig)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    key = next((k for k in keyring.keys if k.kid == header.get("kid")), None)
    if key is None or header.get("alg") != key.alg:
        return None  # unknown key, alg none or a confused algorithm
    if not key.verify(f"{head}.{body}".encode(), signature):
        return None
    exp, role = claims.get("exp"), claims.get("role")
    if claims.get("aud") != AUDIENCE or role not in ROLES or not isinstance(exp, int) \
            or isinstance(exp, bool) or now >= exp + keyring.leeway:
        return None
    if keyring.issuer and claims.get("iss") != keyring.issuer:
        return None
    org = claims.get("org")
    subject = str(claims.get("sub", ""))
    key_id = "jwt-" + hashlib.sha256(subject.encode()).hexdigest()[:4]
    return Principal(key_id, role, org if isinstance(org, str) and org else None)
