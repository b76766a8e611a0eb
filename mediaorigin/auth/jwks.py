"""The public JWKS document (RFC 7517) of a keyring, for players' backends that verify tokens.

Every ES256 and EdDSA key is listed, the current one and the retired ones still kept (their
tokens are still valid); HS256 secrets never appear.
"""

from __future__ import annotations

from typing import Any

from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from mediaorigin.auth.tokens import Keyring, SigningKey


def public_jwk(key: SigningKey) -> dict[str, Any] | None:
    """The public JWK of an ES256/EdDSA key; None for HS256."""
    public = key.public_key
    if public is None:
        return None
    if key.alg == "ES256":
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)  # kty EC, crv P-256, x, y
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)  # kty OKP, crv Ed25519, x
    return {**jwk, "kid": key.kid, "alg": key.alg, "use": "sig"}


def jwks(keyring: Keyring) -> dict[str, list[dict[str, Any]]]:
    return {"keys": [jwk for key in keyring.keys if (jwk := public_jwk(key)) is not None]}
