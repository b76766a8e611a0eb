"""Amazon CloudFront signed URLs and signed cookies: sign them, and verify them at the origin.

Follows the CloudFront Developer Guide ("Create a signed URL using a canned policy" / "... a
custom policy", "Set signed cookies using a canned / custom policy"):

- The policy statement is JSON with all whitespace removed, UTF-8. Canned, exactly:
  `{"Statement":[{"Resource":"<url>","Condition":{"DateLessThan":{"AWS:EpochTime":<exp>}}}]}`
  where <url> is the full URL including the caller's own query string (without the CloudFront
  parameters). A custom policy adds `DateGreaterThan` and `IpAddress` (`AWS:SourceIp`, an
  IPv4 CIDR: the guide says IPv6 is not supported there) and its Resource may hold `*`
  (any run of characters, including none) and `?` (exactly one character) wildcards.
- The signature is RSA PKCS#1 v1.5 over the policy bytes with SHA-1 (the optional
  `Hash-Algorithm=SHA256` / `CloudFront-Hash-Algorithm` selects SHA-256 instead).
- Policy and signature travel in CloudFront's base64: standard MIME base64, then
  `+` → `-`, `=` → `_`, `/` → `~`.
- URL parameters: canned `Expires`, `Signature`, `Key-Pair-Id`; custom `Policy`, `Signature`,
  `Key-Pair-Id`. Cookies: `CloudFront-Expires` or `CloudFront-Policy`, `CloudFront-Signature`,
  `CloudFront-Key-Pair-Id`.

A canned policy is never transmitted: the verifier rebuilds it from the request URL, so a
canned URL used for another resource fails as `bad_signature`, not `resource_mismatch`.
Validity is `starts < now < expires` (DateGreaterThan / DateLessThan taken literally).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from mediaorigin.errors import ClientError

HashAlgorithm = Literal["SHA1", "SHA256"]
URL_PARAMS = ("Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm")
COOKIE_PREFIX = "CloudFront-"
MAX_EPOCH = 2**31 - 1  # the guide: a 32-bit integer, no later than 2038-01-19T03:14:07Z
CODES = {
    "missing": "CloudFront signature parameters are missing",
    "malformed": "CloudFront signature parameters are malformed",
    "unknown_key": "unknown CloudFront key pair id",
    "bad_signature": "CloudFront signature does not match",
    "expired": "CloudFront signature has expired",
    "not_yet_valid": "CloudFront signature is not valid yet",
    "resource_mismatch": "CloudFront policy does not cover this URL",
    "ip_mismatch": "CloudFront policy does not allow this client address",
}

_TO_CLOUDFRONT = str.maketrans("+=/", "-_~")
_FROM_CLOUDFRONT = str.maketrans("-_~", "+=/")
_DIGITS = re.compile(r"[0-9]{1,10}")


class CloudFrontError(ClientError):
    def __init__(self, code: str) -> None:
        super().__init__(403, code, CODES[code])


@dataclass(frozen=True)
class CloudFrontGrant:
    key_pair_id: str
    resource: str | None  # the policy's Resource (None: a custom policy without one)
    expires: int
    starts: int | None
    ip_cidr: str | None
    canned: bool


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").translate(_TO_CLOUDFRONT)


def b64decode(text: str) -> bytes:
    return base64.b64decode(text.translate(_FROM_CLOUDFRONT), validate=True)


def canned_policy(url: str, expires: int) -> str:
    return _dumps({"Statement": [{"Resource": url, "Condition": _dates(expires, None)}]})


def custom_policy(
    resource: str,
    expires: int,
    starts: int | None = None,
    ip_cidr: str | None = None,
) -> str:
    condition = _dates(expires, starts)
    if ip_cidr is not None:
        network = ipaddress.ip_network(ip_cidr)  # host bits set is a caller bug: refuse
        if network.version != 4:
            raise ValueError("CloudFront policies take an IPv4 CIDR (IPv6 is not supported)")
        condition["IpAddress"] = {"AWS:SourceIp": str(network)}  # a lone address gets /32
    return _dumps({"Statement": [{"Resource": resource, "Condition": condition}]})


def sign_policy(
    policy: str, private_key: RSAPrivateKey, hash_algorithm: HashAlgorithm = "SHA1"
) -> str:
    """The `Signature` value: RSA PKCS#1 v1.5 over the policy's UTF-8 bytes, CloudFront base64."""
    return b64encode(private_key.sign(policy.encode(), PKCS1v15(), _hash(hash_algorithm)))


def sign_url(
    url: str,
    key_pair_id: str,
    private_key: RSAPrivateKey,
    expires: int | None = None,
    policy: str | None = None,
    hash_algorithm: HashAlgorithm = "SHA1",
) -> str:
    """Canned (`expires`) or custom (`policy`, from custom_policy) signed URL."""
    if (expires is None) == (policy is None):
        raise ValueError("give exactly one of expires (canned policy) or policy (custom)")
    base = _base_url(url)
    if policy is None:
        assert expires is not None
        signed = canned_policy(base, expires)
        params = [f"Expires={int(expires)}"]
    else:
        signed = policy
        params = [f"Policy={b64encode(policy.encode())}"]
    params += [f"Signature={sign_policy(signed, private_key, hash_algorithm)}"]
    params += [f"Key-Pair-Id={key_pair_id}"]
    if hash_algorithm != "SHA1":
        params.append(f"Hash-Algorithm={hash_algorithm}")
    return f"{base}{'&' if '?' in base else '?'}{'&'.join(params)}"


def signed_cookies(
    resource: str,
    key_pair_id: str,
    private_key: RSAPrivateKey,
    expires: int,
    starts: int | None = None,
    ip_cidr: str | None = None,
    hash_algorithm: HashAlgorithm = "SHA1",
) -> dict[str, str]:
    """Cookie name → value. Canned unless there is a start, an IP range or a `*` in the
    resource (the rule the AWS CLI's `sign-cookies` uses); a canned cookie covers one URL."""
    cookies: dict[str, str] = {}
    if starts is None and ip_cidr is None and "*" not in resource:
        policy = canned_policy(resource, expires)
        cookies["CloudFront-Expires"] = str(int(expires))
    else:
        policy = custom_policy(resource, expires, starts, ip_cidr)
        cookies["CloudFront-Policy"] = b64encode(policy.encode())
    cookies["CloudFront-Signature"] = sign_policy(policy, private_key, hash_algorithm)
    cookies["CloudFront-Key-Pair-Id"] = key_pair_id
    if hash_algorithm != "SHA1":
        cookies["CloudFront-Hash-Algorithm"] = hash_algorithm
    return cookies


def verify_url(
    url: str,
    public_keys: Mapping[str, RSAPublicKey],
    now: float,
    client_ip: str | None = None,
) -> CloudFrontGrant:
    """Check a CloudFront-signed URL as CloudFront would; raise CloudFrontError(code)."""
    base_part, _, query = url.partition("#")[0].partition("?")
    found: dict[str, str] = {}
    kept: list[str] = []
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        name = unquote(name)
        if name not in URL_PARAMS:
            kept.append(item)
        elif name in found:
            raise CloudFrontError("malformed")  # repeated: who knows which one a cache reads
        else:
            found[name] = unquote(value)
    base = base_part + ("?" + "&".join(kept) if kept else "")
    return _verify(base, found, public_keys, now, client_ip)


def verify_cookies(
    url: str,
    cookies: Mapping[str, str],
    public_keys: Mapping[str, RSAPublicKey],
    now: float,
    client_ip: str | None = None,
) -> CloudFrontGrant:
    """Check CloudFront signed cookies for a request to `url`; raise CloudFrontError(code)."""
    found = {
        name: cookies[COOKIE_PREFIX + name]
        for name in URL_PARAMS
        if COOKIE_PREFIX + name in cookies
    }
    return _verify(url.partition("#")[0], found, public_keys, now, client_ip)


def resource_matches(pattern: str, url: str) -> bool:
    """CloudFront Resource wildcards: `*` any run (including none), `?` one character.

    Linear-space glob with single backtrack point (no regex, so no pathological blowup).
    """
    p = u = 0
    star, mark = -1, 0
    while u < len(url):
        if p < len(pattern) and pattern[p] == "*":
            star, mark = p, u
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", url[u]):
            p += 1
            u += 1
        elif star >= 0:
            mark += 1
            p, u = star + 1, mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _verify(
    base: str,
    found: Mapping[str, str],
    public_keys: Mapping[str, RSAPublicKey],
    now: float,
    client_ip: str | None,
) -> CloudFrontGrant:
    signature_text, key_pair_id = found.get("Signature"), found.get("Key-Pair-Id")
    expires_text, policy_text = found.get("Expires"), found.get("Policy")
    if signature_text is None or key_pair_id is None:
        raise CloudFrontError("missing")
    if expires_text is None and policy_text is None:
        raise CloudFrontError("missing")
    if expires_text is not None and policy_text is not None:
        raise CloudFrontError("malformed")
    algorithm = found.get("Hash-Algorithm", "SHA1")
    if algorithm not in ("SHA1", "SHA256"):
        raise CloudFrontError("malformed")
    public_key = public_keys.get(key_pair_id)
    if public_key is None:
        raise CloudFrontError("unknown_key")
    try:
        signature = b64decode(signature_text)
        if expires_text is not None:
            if not _DIGITS.fullmatch(expires_text):
                raise CloudFrontError("malformed")
            policy = canned_policy(base, int(expires_text)).encode()
        else:
            assert policy_text is not None
            policy = b64decode(policy_text)
    except (binascii.Error, ValueError):
        raise CloudFrontError("malformed") from None
    try:
        public_key.verify(signature, policy, PKCS1v15(), _hash(algorithm))
    except InvalidSignature:
        raise CloudFrontError("bad_signature") from None
    grant = _parse_policy(policy, key_pair_id, canned=expires_text is not None)
    if now >= grant.expires:
        raise CloudFrontError("expired")
    if grant.starts is not None and now <= grant.starts:
        raise CloudFrontError("not_yet_valid")
    if grant.resource is not None and not resource_matches(grant.resource, base):
        raise CloudFrontError("resource_mismatch")
    if grant.ip_cidr is not None and not _ip_in(client_ip, grant.ip_cidr):
        raise CloudFrontError("ip_mismatch")
    return grant


def _parse_policy(policy: bytes, key_pair_id: str, canned: bool) -> CloudFrontGrant:
    """Structure of a signed policy; anything CloudFront would not accept is `malformed`."""
    try:
        document = json.loads(policy.decode("utf-8"))
        (statement,) = document["Statement"]
        condition = statement["Condition"]
        resource = statement.get("Resource")
        if set(document) != {"Statement"} or not set(statement) <= {"Resource", "Condition"}:
            raise ValueError("unknown policy field")
        if not set(condition) <= {"DateLessThan", "DateGreaterThan", "IpAddress"}:
            raise ValueError("unknown condition")
        if resource is not None and not isinstance(resource, str):
            raise ValueError("Resource is not a string")
        expires = _epoch(condition["DateLessThan"])
        starts = _epoch(condition["DateGreaterThan"]) if "DateGreaterThan" in condition else None
        ip_cidr = None
        if "IpAddress" in condition:
            ((key, ip_cidr),) = condition["IpAddress"].items()
            if key != "AWS:SourceIp" or not isinstance(ip_cidr, str):
                raise ValueError("bad IpAddress")
            ipaddress.ip_network(ip_cidr, strict=False)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CloudFrontError("malformed") from None
    return CloudFrontGrant(key_pair_id, resource, expires, starts, ip_cidr, canned)


def _epoch(value: Any) -> int:
    if not isinstance(value, dict) or set(value) != {"AWS:EpochTime"}:
        raise ValueError("bad date condition")
    epoch = value["AWS:EpochTime"]
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError("AWS:EpochTime is not an integer")
    return epoch


def _ip_in(client_ip: str | None, cidr: str) -> bool:
    if client_ip is None:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    network = ipaddress.ip_network(cidr, strict=False)
    return address.version == network.version and address in network


def _dates(expires: int, starts: int | None) -> dict[str, Any]:
    condition: dict[str, Any] = {"DateLessThan": {"AWS:EpochTime": _checked_epoch(expires)}}
    if starts is not None:
        condition["DateGreaterThan"] = {"AWS:EpochTime": _checked_epoch(starts)}
    return condition


def _checked_epoch(value: int) -> int:
    if isinstance(value, bool) or not 0 < int(value) <= MAX_EPOCH:
        raise ValueError(f"not a CloudFront epoch time: {value!r}")
    return int(value)


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _base_url(url: str) -> str:
    """The URL CloudFront sees without its own parameters (fragment and stray `?`/`&` gone)."""
    base_part, _, query = url.partition("#")[0].partition("?")
    kept = [item for item in query.split("&") if item]
    if any(unquote(item.partition("=")[0]) in URL_PARAMS for item in kept):
        raise ValueError("the URL already carries CloudFront signing parameters")
    return base_part + ("?" + "&".join(kept) if kept else "")


def _hash(name: str) -> hashes.HashAlgorithm:
    return hashes.SHA256() if name == "SHA256" else hashes.SHA1()
