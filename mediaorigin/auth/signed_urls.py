r"""CDN-friendly signed URLs: one HMAC over a path prefix authorizes a whole presentation.

A signature covers a path *prefix* and an expiry, so `/vod/{id}/` grants the master playlist
and every child playlist, init segment and media segment beneath it: the packager copies the
master's signing parameters onto each child URL. A CDN edge (a Fastly or Cloudflare worker,
nginx `secure_link`-style logic) can check the same signature without calling the origin.

Query parameters
----------------
`exp`  expiry, unix seconds, ASCII digits; the URL is valid while `now < exp`.
`pfx`  the signed path prefix, URL-encoded in the query. It is compared with the *raw*
       (still percent-encoded) request path, must start with "/", and must end with "/"
       unless it is the whole path.
`ip`   optional client address binding (IPv4 or IPv6). Signers write the normalized text
       form (IPv4 dotted quad; IPv6 RFC 5952: lowercase, compressed); verifiers compare
       addresses, not strings, and treat an IPv4-mapped IPv6 client (`::ffff:a.b.c.d`) as
       the IPv4 address.
`kid`  key id: which secret signed, so secrets can be rotated.
`sig`  base64url without padding (43 characters) of HMAC-SHA256(secret, canonical string).

Canonical string (UTF-8), four fields joined by a line feed, no trailing newline:

    f"{pfx}\n{exp}\n{ip or ''}\n{kid}"

where every field is the decoded query value exactly as transmitted (an absent `ip` is the
empty string). For example pfx="/vod/abc/", exp="1700000000", no ip, kid="k1" signs the
24 bytes "/vod/abc/" LF "1700000000" LF LF "k1".

Verification (what an edge must do too)
---------------------------------------
1. all of `exp`, `pfx`, `kid`, `sig` present, each once; `exp` digits; `sig` 43 base64url
   characters; `ip`, if present, a valid address;
2. the secret for `kid` is known; recompute `sig` and compare in constant time;
3. `now < exp`;
4. the raw request path has no `//`, no `.` or `..` segment, no backslash, no percent-encoded
   dot, slash or backslash (`%2e`, `%2f`, `%5c`, any case) and no `%25` (double encoding);
   `pfx` passes the same checks; then `path == pfx`, or `pfx` ends with "/" and
   `path.startswith(pfx)` (so `/vod/ab` never covers `/vod/abc/...`);
5. if `ip` is present, the client address equals it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from mediaorigin.errors import ClientError

PARAMS = ("exp", "pfx", "ip", "kid", "sig")
CODES = {
    "signature_missing": "this URL must be signed",
    "signature_malformed": "the URL signature parameters are malformed",
    "unknown_kid": "the URL was signed with an unknown key",
    "bad_signature": "the URL signature does not match",
    "signature_expired": "the signed URL has expired",
    "prefix_mismatch": "the signed URL does not cover this path",
    "ip_mismatch": "the signed URL is bound to another client address",
}

_EXP = re.compile(r"[0-9]{1,12}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
_KID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# Percent-encoded dot, slash, backslash, percent: decoded later by someone, they change the path.
_ENCODED_TRICK = re.compile(r"%(2e|2f|5c|25)", re.IGNORECASE)


class SignatureError(ClientError):
    def __init__(self, code: str) -> None:
        super().__init__(403, code, CODES[code])


@dataclass(frozen=True)
class SignedGrant:
    prefix: str
    expires: int
    kid: str
    ip: str | None  # normalized address the grant is bound to, or None


def canonical_string(pfx: str, exp: str, ip: str | None, kid: str) -> str:
    return f"{pfx}\n{exp}\n{ip or ''}\n{kid}"


def signature(secret: bytes, pfx: str, exp: str, ip: str | None, kid: str) -> str:
    mac = hmac.new(secret, canonical_string(pfx, exp, ip, kid).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def normalize_ip(text: str) -> str:
    """The text form signers write: IPv4 dotted quad, IPv6 compressed; IPv4-mapped → IPv4."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def safe_path(path: str) -> bool:
    """True for a raw request path that means the same before and after any normalization."""
    if not path.startswith("/") or "\\" in path or "//" in path:
        return False
    if _ENCODED_TRICK.search(path) or any(c in path for c in "?#") or not path.isprintable():
        return False
    return all(segment not in (".", "..") for segment in path.split("/"))


def prefix_covers(pfx: str, path: str) -> bool:
    if not (safe_path(pfx) and safe_path(path)):
        return False
    return path == pfx or (pfx.endswith("/") and path.startswith(pfx))


def sign_url(
    path_and_query_or_path: str,
    prefix: str,
    secret: bytes,
    kid: str,
    expires: int,
    ip: str | None = None,
) -> str:
    """Append `exp`, `pfx`, `ip`, `kid`, `sig` to a raw path (other query parameters are kept;
    stale signing parameters are replaced). `prefix` is in raw path form, like the path."""
    path, _, query = path_and_query_or_path.partition("?")
    if not secret:
        raise ValueError("empty signing secret")
    if not _KID.fullmatch(kid):
        raise ValueError(f"bad key id {kid!r}")
    if not 0 < expires < 10**12:
        raise ValueError(f"expires must be unix seconds, got {expires!r}")
    if not prefix_covers(prefix, path):
        raise ValueError(f"prefix {prefix!r} cannot sign path {path!r}")
    exp = str(int(expires))
    ip_text = normalize_ip(ip) if ip is not None else None
    sig = signature(secret, prefix, exp, ip_text, kid)
    kept = [item for item in query.split("&") if item and _param_name(item) not in PARAMS]
    added = [f"exp={exp}", f"pfx={quote(prefix, safe='')}"]
    if ip_text is not None:
        added.append(f"ip={quote(ip_text, safe='')}")
    added += [f"kid={quote(kid, safe='')}", f"sig={sig}"]
    return f"{path}?{'&'.join(kept + added)}"


def verify_signed(
    path: str,
    query: Mapping[str, str],
    secrets: Mapping[str, bytes],
    now: float,
    client_ip: str | None = None,
) -> SignedGrant:
    """Check a request against its signing parameters; raise SignatureError(code) if refused.

    `path` is the raw request path (aiohttp: `request.raw_path`; a query part is ignored);
    `query` the decoded query (aiohttp: `request.query`; repeated signing parameters are
    refused as malformed, so an edge and the origin cannot read different values).
    """
    path = path.partition("?")[0]
    if "sig" not in query:
        raise SignatureError("signature_missing")
    values = {name: _single(query, name) for name in PARAMS}
    exp, pfx, ip, kid, sig = (values[name] for name in PARAMS)
    if exp is None or pfx is None or kid is None or sig is None:
        raise SignatureError("signature_malformed")
    if not (_EXP.fullmatch(exp) and _SIG.fullmatch(sig)):
        raise SignatureError("signature_malformed")
    bound: str | None = None
    if ip is not None:
        try:
            bound = normalize_ip(ip)
        except ValueError:
            raise SignatureError("signature_malformed") from None
    secret = secrets.get(kid)
    if secret is None:
        raise SignatureError("unknown_kid")
    expected = signature(secret, pfx, exp, ip, kid)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise SignatureError("bad_signature")
    if now >= int(exp):
        raise SignatureError("signature_expired")
    if not prefix_covers(pfx, path):
        raise SignatureError("prefix_mismatch")
    if bound is not None:
        try:
            matches = client_ip is not None and normalize_ip(client_ip) == bound
        except ValueError:
            matches = False
        if not matches:
            raise SignatureError("ip_mismatch")
    return SignedGrant(prefix=pfx, expires=int(exp), kid=kid, ip=bound)


def _single(query: Mapping[str, str], name: str) -> str | None:
    getall = getattr(query, "getall", None)  # multidict (aiohttp) keeps repeated parameters
    if getall is not None and len(getall(name, ())) > 1:
        raise SignatureError("signature_malformed")
    return query.get(name)


def _param_name(item: str) -> str:
    return unquote(item.partition("=")[0])
