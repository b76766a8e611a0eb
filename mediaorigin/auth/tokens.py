"""Playback tokens: short-lived JWTs (RFC 7519, JWS compact form) that open one media item or
live stream for one viewer.

Header `{"alg", "kid", "typ": "JWT"}`. Claims:

    aud  "mediaorigin-playback"; required (a string, or a list that contains it)
    med  the media or live stream id the token opens; required (a private claim). "*" opens
         any media and is refused, on issue and on verify, unless the keyring allows it
    exp  expiry, integer unix seconds; required      nbf  not before     iat  issued at
    iss  issuer; required and compared when the keyring is configured with one
    sub  user id     sid  session id
    ip   client address the token is bound to; compared as addresses, so `::1` equals
         `0:0:0:0:0:0:0:1` and `::ffff:192.0.2.1` equals `192.0.2.1`
    cty  allowed ISO 3166 country codes; carried for the caller's geo check, not checked here

`Keyring.verify` is pure and synchronous: the caller passes `now`. It parses the token itself
(strict base64url: no padding, canonical spelling only, so one content has one spelling) and
hands only the signature check to PyJWT's algorithm objects, with keys prepared once. The
header's alg must be one the keyring holds *and* the alg of the key its kid names, so `none`
and HS256-keyed-with-a-public-key confusion never reach a signature check. Key URLs in the
header (`jku`, `jwk`, `x5u`, `x5c`) are ignored: keys come from configuration only.

Checks run in this order: structure (token_malformed), alg (alg_not_allowed), kid (unknown_kid;
a header without kid is token_malformed), the key's own alg, signature, then aud, iss, exp
(refused when now >= exp + leeway), nbf (refused when now < nbf - leeway), med, ip.

Every refusal is a TokenError (HTTP 403) with one of CODES; messages never carry the token or
key material.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import get_default_algorithms

from mediaorigin.errors import ClientError

AUDIENCE = "mediaorigin-playback"
ALGORITHMS = ("HS256", "ES256", "EdDSA")
DEFAULT_LEEWAY = 30  # seconds of clock skew forgiven on exp and nbf
MIN_HS256_SECRET = 32  # bytes, the SHA-256 output size (RFC 7518 §3.2)
MAX_TOKEN_LENGTH = 4096
AUTHENTIC_KEPT = 4096  # tokens whose signature was checked, kept per Keyring (<= 16 MB)

_MESSAGES = {
    "token_missing": "a playback token is required",
    "token_malformed": "the playback token is malformed",
    "alg_not_allowed": "the token's algorithm is not allowed",
    "unknown_kid": "the token's key id is unknown",
    "bad_signature": "the token's signature is invalid",
    "token_expired": "the token has expired",
    "token_not_yet_valid": "the token is not valid yet",
    "wrong_media": "the token does not open this media",
    "wrong_audience": "the token is not a playback token",
    "wrong_issuer": "the token's issuer is not trusted",
    "ip_mismatch": "the token is bound to another client address",
    "missing_claim": "the token lacks a required claim",
}
CODES = tuple(_MESSAGES)

_KID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_PYJWT = get_default_algorithms()
_ALGORITHM_OBJECTS = {alg: _PYJWT[alg] for alg in ALGORITHMS}

PrivateKey = bytes | ec.EllipticCurvePrivateKey | Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey


class TokenError(ClientError):
    """A refused playback token; `code` is one of CODES, the status always 403."""

    def __init__(self, code: str, detail: str = "") -> None:
        message = _MESSAGES[code] + (f" ({detail})" if detail else "")
        super().__init__(403, code, message)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlaybackClaims:
    media: str
    user: str | None = None
    session: str | None = None
    expires: int
    not_before: int | None = None
    issued_at: int | None = None  # set to `now` on issue when None
    client_ip: str | None = None  # normalized address text
    countries: tuple[str, ...] | None = None  # upper-case ISO 3166 alpha-2
    key_id: str | None = None  # the kid that signed the token; ignored on issue


class SigningKey:
    """One named key: an HS256 secret, or an ES256 (P-256) / EdDSA (Ed25519) private key."""

    __slots__ = ("kid", "alg", "_private", "_verifier", "_algorithm")

    def __init__(self, kid: str, alg: str, private: PrivateKey) -> None:
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise ValueError("key ids are 1-64 characters of A-Z a-z 0-9 . _ ~ -")
        if alg == "HS256":
            if not isinstance(private, bytes):
                raise ValueError(f"HS256 key {kid!r} needs a bytes secret")
            if len(private) < MIN_HS256_SECRET:
                raise ValueError(f"HS256 secret {kid!r} is {len(private)} bytes; "
                                 f"at least {MIN_HS256_SECRET} are required")
            verifier: bytes | PublicKey = private
        elif alg == "ES256":
            if not (isinstance(private, ec.EllipticCurvePrivateKey)
                    and isinstance(private.curve, ec.SECP256R1)):
                raise ValueError(f"ES256 key {kid!r} must be a P-256 private key")
            verifier = private.public_key()
        elif alg == "EdDSA":
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"EdDSA key {kid!r} must be an Ed25519 private key")
            verifier = private.public_key()
        else:
            raise ValueError(f"key {kid!r}: alg must be one of {', '.join(ALGORITHMS)}")
        self.kid = kid
        self.alg = alg
        self._private = private
        self._verifier = verifier  # prepared once; verify() never parses key material
        self._algorithm = _ALGORITHM_OBJECTS[alg]

    @classmethod
    def hs256(cls, kid: str, secret: bytes) -> SigningKey:
        return cls(kid, "HS256", secret)

    @classmethod
    def from_pem(cls, kid: str, pem: str | bytes) -> SigningKey:
        """An unencrypted PEM private key; the alg follows from the key type."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: encrypted
            raise ValueError(f"key {kid!r} is not an unencrypted PEM private key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cls(kid, "ES256", key)
        if isinstance(key, Ed25519PrivateKey):
            return cls(kid, "EdDSA", key)
        raise ValueError(f"key {kid!r}: only P-256 (ES256) and Ed25519 (EdDSA) keys are supported")

    @property
    def public_key(self) -> PublicKey | None:
        """The verification key for JWKS; None for HS256 (a secret is never published)."""
        return None if isinstance(self._verifier, bytes) else self._verifier

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of an ES256/EdDSA key (for the CLI that generates keys)."""
        if isinstance(self._private, bytes):
            raise ValueError("HS256 secrets have no PEM form")
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self._algorithm.sign(message, self._private)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self._algorithm.verify(message, self._verifier, signature)

    def __repr__(self) -> str:  # never the key material
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


def generate_es256(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def generate_eddsa(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", Ed25519PrivateKey.generate())


def parse_kid_secret(spec: str, what: str = "HS256 secret") -> tuple[str, bytes]:
    """`kid:secret`, the secret in base64 (standard or URL-safe, padding optional): how
    every shared secret of the config is written (token secrets, signed URL secrets)."""
    kid, sep, text = spec.strip().partition(":")
    if not sep or not kid:
        raise ValueError(f"{what}s are configured as kid:base64secret")
    text = text.strip().translate(str.maketrans("-_", "+/")).rstrip("=")
    try:
        secret = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} {kid!r} is not base64") from None
    return kid, secret


def parse_hs256_secret(spec: str) -> SigningKey:
    return SigningKey.hs256(*parse_kid_secret(spec))


class Keyring:
    """The keys playback tokens are signed and verified with.

    New tokens are signed with the current key (`current_kid`, or the last key given). Every
    other key is retired but kept: its tokens verify until it is removed (`without`). A Keyring
    never changes; rotation builds a new one, so a config reload swaps it atomically.
    """

    def __init__(self, keys: Iterable[SigningKey], current_kid: str | None = None, *,
                 issuer: str | None = None, leeway: int = DEFAULT_LEEWAY,
                 allow_any_media: bool = False) -> None:
        self._keys: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise ValueError(f"key id {key.kid!r} is configured twice")
            self._keys[key.kid] = key
        if not self._keys:
            raise ValueError("a keyring needs at least one key")
        if current_kid is None:
            current_kid = next(reversed(self._keys))
        if current_kid not in self._keys:
            raise ValueError(f"current key {current_kid!r} is not among the keys")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self._current = self._keys[current_kid]
        self._algs = frozenset(key.alg for key in self._keys.values())
        self.issuer = issuer
        self.leeway = leeway
        self.allow_any_media = allow_any_media
        # token -> (kid, claims) once its signature checked out. A player sends the same
        # token with every playlist and segment, and the signature, base64 and JSON are most
        # of a check (~25 us a request on a busy origin); what depends on the request (media,
        # address, time) is checked every time. Only authentic tokens get in, the Keyring
        # never changes (rotation builds a new one), and a lookup compares strings only on a
        # SipHash match (per-process random key): nothing to time or to poison.
        self._authentic: dict[str, tuple[str, dict[str, Any]]] = {}

    @classmethod
    def from_config(cls, hs256_secrets: Iterable[str] = (),
                    private_key_pems: Iterable[tuple[str, str | bytes]] = (),
                    current_kid: str | None = None, *, issuer: str | None = None,
                    leeway: int = DEFAULT_LEEWAY, allow_any_media: bool = False) -> Keyring:
        """Keys from configuration strings; `current_kid` is required when there are several."""
        keys = [parse_hs256_secret(spec) for spec in hs256_secrets]
        keys += [SigningKey.from_pem(kid, pem) for kid, pem in private_key_pems]
        if current_kid is None and len(keys) > 1:
            raise ValueError("current_kid is required when several keys are configured")
        return cls(keys, current_kid, issuer=issuer, leeway=leeway,
                   allow_any_media=allow_any_media)

    @property
    def current(self) -> SigningKey:
        return self._current

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys.values())

    def _replace(self, keys: Iterable[SigningKey], current_kid: str) -> Keyring:
        return Keyring(keys, current_kid, issuer=self.issuer, leeway=self.leeway,
                       allow_any_media=self.allow_any_media)

    def rotate(self, key: SigningKey) -> Keyring:
        """A keyring signing with `key`; the previous keys stay for verification."""
        return self._replace([*self._keys.values(), key], key.kid)

    def with_current(self, kid: str) -> Keyring:
        return self._replace(self._keys.values(), kid)

    def without(self, kid: str) -> Keyring:
        """A keyring that no longer knows `kid`: its tokens stop verifying (unknown_kid)."""
        if kid == self._current.kid:
            raise ValueError("the current key cannot be removed; rotate first")
        if kid not in self._keys:
            raise ValueError(f"key {kid!r} is not in the keyring")
        return self._replace([k for k in self._keys.values() if k.kid != kid], self._current.kid)

    def issue(self, claims: PlaybackClaims | None = None, *, now: float,
              media: str | None = None, ttl: float | None = None, expires: int | None = None,
              user: str | None = None, session: str | None = None,
              not_before: int | None = None, client_ip: str | None = None,
              countries: Iterable[str] | None = None) -> str:
        """A token signed with the current key: from `claims`, or from keywords with exactly one
        of `ttl` (seconds from now) and `expires`."""
        if claims is None:
            if media is None:
                raise TypeError("issue() needs claims or media=")
            if (ttl is None) == (expires is None):
                raise TypeError("issue() needs exactly one of ttl= and expires=")
            claims = PlaybackClaims(
                media=media, user=user, session=session,
                expires=expires if expires is not None else int(now + _ttl(ttl)),
                not_before=not_before, client_ip=client_ip,
                countries=None if countries is None else tuple(countries))
        elif any(v is not None for v in (media, ttl, expires, user, session, not_before,
                                          client_ip, countries)):
            raise TypeError("issue() takes claims or keyword claims, not both")
        key = self._current
        return jwt.encode(self._payload(claims, now), key._private, algorithm=key.alg,
                          headers={"kid": key.kid})

    def _payload(self, claims: PlaybackClaims, now: float) -> dict[str, Any]:
        if not isinstance(claims.media, str) or not claims.media:
            raise ValueError("media must be a non-empty string")
        if claims.media == "*" and not self.allow_any_media:
            raise ValueError("tokens for any media ('*') are not enabled")
        payload: dict[str, Any] = {
            "aud": AUDIENCE, "med": claims.media, "exp": _int(claims.expires, "expires"),
            "iat": int(now) if claims.issued_at is None else _int(claims.issued_at, "issued_at"),
        }
        if self.issuer is not None:
            payload["iss"] = self.issuer
        for name, value in (("sub", claims.user), ("sid", claims.session)):
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
                payload[name] = value
        if claims.not_before is not None:
            payload["nbf"] = _int(claims.not_before, "not_before")
        if claims.client_ip is not None:
            ip = _normalize_ip(claims.client_ip)
            if ip is None:
                raise ValueError("client_ip is not an IP address")
            payload["ip"] = ip
        if claims.countries is not None:
            countries = _countries(list(claims.countries))
            if countries is None:
                raise ValueError("countries are non-empty ISO 3166 alpha-2 codes")
            payload["cty"] = list(countries)
        return payload

    def verify(self, token: str | None, media_id: str, client_ip: str | None,
               now: float) -> PlaybackClaims:
        """The claims of a token that opens `media_id` for `client_ip` at `now`, or TokenError."""
        if not token:
            raise TokenError("token_missing")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise TokenError("token_malformed")
        known = self._authentic.get(token)
        if known is None:
            if len(self._authentic) >= AUTHENTIC_KEPT:
                self._authentic.clear()
            known = self._authentic[token] = self._signed_claims(token)
        kid, claims = known
        return self._check_claims(claims, kid, media_id, client_ip, now)

    def _signed_claims(self, token: str) -> tuple[str, dict[str, Any]]:
        """(kid, claims) of a token whose header and signature check out, or TokenError."""
        h64, p64, s64 = token.split(".")
        header = _json_object(_b64decode(h64), "header")
        payload_bytes = _b64decode(p64)
        signature = _b64decode(s64)

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algs:
            raise TokenError("alg_not_allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("token_malformed", "header has no kid")
        key = self._keys.get(kid)
        if key is None:
            raise TokenError("unknown_kid")
        if key.alg != alg:  # an HS256 header naming an EC key (or the reverse): key confusion
            raise TokenError("alg_not_allowed")
        if "crit" in header:  # extensions we do not understand must be refused (RFC 7515 §4.1.11)
            raise TokenError("token_malformed", "header has crit")
        if not key.verify(token[: len(h64) + 1 + len(p64)].encode(), signature):
            raise TokenError("bad_signature")
        return kid, _json_object(payload_bytes, "payload")

    def _check_claims(self, claims: dict[str, Any], kid: str, media_id: str,
                      client_ip: str | None, now: float) -> PlaybackClaims:
        aud = claims.get("aud")
        if aud is None:
            raise TokenError("missing_claim", "aud")
        if aud != AUDIENCE and not (isinstance(aud, list) and AUDIENCE in aud):
            raise TokenError("wrong_audience")
        if self.issuer is not None:
            iss = claims.get("iss")
            if iss is None:
                raise TokenError("missing_claim", "iss")
            if iss != self.issuer:
                raise TokenError("wrong_issuer")
        exp = _int_claim(claims, "exp")
        if exp is None:
            raise TokenError("missing_claim", "exp")
        if now >= exp + self.leeway:
            raise TokenError("token_expired")
        nbf = _int_claim(claims, "nbf")
        if nbf is not None and now < nbf - self.leeway:
            raise TokenError("token_not_yet_valid")
        iat = _int_claim(claims, "iat")
        media = _str_claim(claims, "med")
        if media is None:
            raise TokenError("missing_claim", "med")
        if media == "*":
            if not self.allow_any_media:
                raise TokenError("wrong_media", "tokens for any media are not enabled")
        elif media != media_id:
            raise TokenError("wrong_media")
        bound = _str_claim(claims, "ip")
        if bound is not None:
            bound = _normalize_ip(bound)
            if bound is None:
                raise TokenError("token_malformed", "claim 'ip'")
            if client_ip is None or _normalize_ip(client_ip) != bound:
                raise TokenError("ip_mismatch")
        countries = claims.get("cty")
        if countries is not None:
            countries = _countries(countries)
            if countries is None:
                raise TokenError("token_malformed", "claim 'cty'")
        return PlaybackClaims(media=media, user=_str_claim(claims, "sub"),
                              session=_str_claim(claims, "sid"), expires=exp, not_before=nbf,
                              issued_at=iat, client_ip=bound, countries=countries, key_id=kid)


def _b64decode(segment: str) -> bytes:
    """Strict base64url: alphabet only, no padding, and the one canonical spelling."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise TokenError("token_malformed") from None
    # The decoder skips foreign characters and ignores unused low bits; re-encoding catches both.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode():
        raise TokenError("token_malformed")
    return raw


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise TokenError("token_malformed", part) from None
    if not isinstance(value, dict):
        raise TokenError("token_malformed", part)
    return value


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is not None and (type(value) is not int):  # not bool, not float
        raise TokenError("token_malformed", f"claim {name!r}")
    return value


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise TokenError("token_malformed", f"claim {name!r}")
    return value


def _int(value: object, name: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer (unix seconds)")
    return value


def _ttl(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e10:
        raise ValueError("ttl must be a positive number of seconds")
    return value


def _countries(value: object) -> tuple[str, ...] | None:
    """Upper-cased ISO 3166 alpha-2 codes, or None when `value` is not a non-empty list of them."""
    if not isinstance(value, list) or not value:
        return None
    codes = []
    for code in value:
        if not (isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha()):
            return None
        codes.append(code.upper())
    return tuple(codes)


@functools.lru_cache(maxsize=4096)
def _normalize_ip(text: str) -> str | None:
    """One spelling per address (IPv4-mapped IPv6 as IPv4), or None when `text` is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)
