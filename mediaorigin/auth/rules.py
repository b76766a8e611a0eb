"""Who may play a media item from where and when: network, country, referer and time rules.

One `AccessRules` per layer (global config, organization, media item); `AccessRules.merge`
folds the layers into one, and `evaluate` checks a request against it.

Allow lists are optional: None means "no list, no restriction". A present but empty list
admits nobody; `merge` produces one when two layers' allow lists have nothing in common
(an organization limited to GB and a media item limited to DE cannot be played anywhere).
In the JSON form an empty list means "no list", like an omitted one.

Merge semantics (any deny wins, every allow list present must be satisfied):
- deny_countries, deny_networks: union over the layers.
- allow_countries, allow_networks, referer_domains: intersection of the lists present
  (layers without a list are skipped; no list anywhere stays None). Networks intersect
  address-wise (10.0.0.0/8 with 10.1.0.0/16 gives 10.1.0.0/16); referer patterns likewise
  (*.example.edu with a.example.edu gives a.example.edu).
- allow_no_referer: a request without Referer/Origin passes only if every layer that locks
  referers allows it.
- available_from: the latest; available_until: the earliest. The window is half-open,
  [available_from, available_until): playable at `available_from` exactly, no longer at
  `available_until` exactly. A window that closes before it opens is never playable.

`evaluate` checks, in order: denied network, network allow list, denied country, country
allow list, referer lock, time window; the first failure is the Denial. A request whose
country is unknown passes deny lists (nothing proves it denied) but fails allow lists
(`country_unknown`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address, collapse_addresses, ip_address, ip_network
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from mediaorigin.auth.client_ip import IPAddress, IPNetwork

DenialCode = Literal[
    "ip_denied",
    "ip_not_allowed",
    "country_denied",
    "country_not_allowed",
    "country_unknown",
    "referer_not_allowed",
    "not_yet_available",
    "no_longer_available",
]


@dataclass(frozen=True)
class Denial:
    code: DenialCode
    message: str  # safe to show the viewer


@dataclass(frozen=True)
class RequestInfo:
    ip: IPAddress
    country: str | None  # ISO 3166 alpha-2, None when the GeoIP database does not know
    referer: str | None  # the Referer header
    origin: str | None  # the Origin header
    now: float  # unix seconds


@dataclass(frozen=True)
class AccessRules:
    """One layer of rules. Values are validated and normalized on construction (country
    codes upper-cased, networks collapsed, referer patterns lower-cased and IDNA-encoded)."""

    allow_countries: frozenset[str] | None = None
    deny_countries: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] | None = None
    deny_networks: tuple[IPNetwork, ...] = ()
    # Allowed Origin/Referer hosts: "example.edu" exactly, "*.example.edu" any subdomain at
    # any depth but not example.edu itself (list both for both). None: no referer lock.
    referer_domains: frozenset[str] | None = None
    allow_no_referer: bool = False  # with a referer lock: admit requests with neither header
    available_from: float | None = None  # unix seconds, inclusive
    available_until: float | None = None  # unix seconds, exclusive

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.allow_countries is not None:
            put("allow_countries", _countries(self.allow_countries, "allow_countries"))
        put("deny_countries", _countries(self.deny_countries, "deny_countries"))
        if self.allow_networks is not None:
            put("allow_networks", _networks(self.allow_networks, "allow_networks"))
        put("deny_networks", _networks(self.deny_networks, "deny_networks"))
        if self.referer_domains is not None:
            put("referer_domains", _domains(self.referer_domains, "referer_domains"))
        for name in ("available_from", "available_until"):
            value = getattr(self, name)
            if value is not None:
                put(name, _unix(value, name))

    @classmethod
    def merge(cls, *rules: AccessRules) -> AccessRules:
        """Global, organization and media layers as one (see the module docstring)."""
        if not rules:
            return cls()
        locked = [r for r in rules if r.referer_domains is not None]
        froms = [r.available_from for r in rules if r.available_from is not None]
        untils = [r.available_until for r in rules if r.available_until is not None]
        return cls(
            allow_countries=_intersect([r.allow_countries for r in rules], _and),
            deny_countries=frozenset().union(*(r.deny_countries for r in rules)),
            allow_networks=_intersect([r.allow_networks for r in rules], _intersect_networks),
            deny_networks=tuple(n for r in rules for n in r.deny_networks),
            referer_domains=_intersect([r.referer_domains for r in rules], _intersect_domains),
            allow_no_referer=all(r.allow_no_referer for r in (locked or rules)),
            available_from=max(froms, default=None),
            available_until=min(untils, default=None),
        )


merge = AccessRules.merge


def evaluate(rules: AccessRules, req: RequestInfo) -> Denial | None:
    """The first rule the request breaks, or None when it may play."""
    ip = req.ip
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:1.2.3.4 is checked against IPv4 networks
    if rules.deny_networks and any(ip in network for network in rules.deny_networks):
        return Denial("ip_denied", "Playback is blocked from your network.")
    if rules.allow_networks is not None and not any(ip in n for n in rules.allow_networks):
        return Denial("ip_not_allowed", "Playback is limited to approved networks.")

    country = req.country.upper() if req.country else None
    if country is not None and country in rules.deny_countries:
        return Denial("country_denied", f"Playback is not available in your country ({country}).")
    if rules.allow_countries is not None:
        if country is None:
            return Denial(
                "country_unknown",
                "Playback is limited to some countries and your location is unknown.",
            )
        if country not in rules.allow_countries:
            return Denial(
                "country_not_allowed", f"Playback is not available in your country ({country})."
            )

    if rules.referer_domains is not None and not _referer_ok(rules, req):
        return Denial("referer_not_allowed", "This media can only be played on approved sites.")

    if rules.available_from is not None and req.now < rules.available_from:
        when = _iso(rules.available_from)
        return Denial("not_yet_available", f"This media is available from {when}.")
    if rules.available_until is not None and req.now >= rules.available_until:
        when = _iso(rules.available_until)
        return Denial("no_longer_available", f"This media was available until {when}.")
    return None


def domain_matches(pattern: str, host: str) -> bool:
    """`*.example.edu` matches `a.example.edu` and `a.b.example.edu` (not `example.edu`);
    `example.edu` matches only itself. Both arguments normalized (lower case, IDNA)."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _referer_ok(rules: AccessRules, req: RequestInfo) -> bool:
    # Origin first (sent on every CORS request, e.g. hls.js); "null" (sandboxed or
    # privacy-stripped) says nothing, so fall back to Referer (native <video> players).
    origin = req.origin.strip() if req.origin else ""
    source = origin if origin and origin.lower() != "null" else (req.referer or "").strip()
    if not source:
        return rules.allow_no_referer
    host = _url_host(source)  # a header that is present but unparseable is not "absent"
    assert rules.referer_domains is not None
    return host is not None and any(domain_matches(p, host) for p in rules.referer_domains)


def _url_host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
        if not host:
            return None
        return _normalize_host(host)
    except ValueError:
        return None


def _normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ip_address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"not a valid hostname: {host!r}") from None
    return host


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Validation shared by the dataclass and the JSON parser (`where` names the field).

_COUNTRY = re.compile(r"[A-Z]{2}")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _country(value: object, where: str) -> str:
    code = value.strip().upper() if isinstance(value, str) else ""
    if not _COUNTRY.fullmatch(code):
        raise ValueError(f"{where}: {value!r} is not a two-letter ISO 3166 country code")
    return code


def _countries(values: Iterable[object], where: str) -> frozenset[str]:
    if isinstance(values, str):
        raise ValueError(f"{where}: expected a list of country codes, not a string")
    return frozenset(_country(v, where) for v in values)


def _networks(values: Iterable[object], where: str) -> tuple[IPNetwork, ...]:
    if isinstance(values, str):
        raise ValueError(f"{where}: expected a list of networks, not a string")
    networks = []
    for value in values:
        try:
            networks.append(ip_network(value, strict=False))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: {value!r} is not an IP network (e.g. 10.0.0.0/8 or 2001:db8::/32)"
            ) from None
    return _collapse(networks)


def _domain(value: object, where: str) -> str:
    error = ValueError(
        f"{where}: {value!r} is not a hostname pattern "
        "(expected e.g. 'example.edu' or '*.example.edu', without scheme, port or path)"
    )
    if not isinstance(value, str):
        raise error
    text = value.strip()
    wildcard = text.startswith("*.")
    try:
        host = _normalize_host(text[2:] if wildcard else text)
    except ValueError:
        raise error from None
    try:
        ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip and not wildcard:
        return host
    if is_ip or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise error
    return f"*.{host}" if wildcard else host


def _domains(values: Iterable[object], where: str) -> frozenset[str]:
    if isinstance(values, str):
        raise ValueError(f"{where}: expected a list of hostnames, not a string")
    return frozenset(_domain(v, where) for v in values)


def _unix(value: object, where: str) -> float:
    """Unix seconds (int or float) or an ISO 8601 string with a UTC offset."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected unix seconds or an ISO 8601 time, got {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts):
            raise ValueError(f"{where}: {value!r} is not a finite time")
        return ts
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{where}: {value!r} is not an ISO 8601 time (e.g. 2025-09-01T08:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(
                f"{where}: {value!r} has no UTC offset (write e.g. 2025-09-01T08:00:00Z "
                "or 2025-09-01T10:00:00+02:00)"
            )
        return moment.timestamp()
    raise ValueError(f"{where}: expected unix seconds or an ISO 8601 time, got {value!r}")


# Intersections for merge.

T = TypeVar("T")


def _intersect(lists: list[T | None], both: Callable[[T, T], T]) -> T | None:
    present = [x for x in lists if x is not None]
    if not present:
        return None
    result = present[0]
    for other in present[1:]:
        result = both(result, other)
    return result


def _and(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    return a & b


def _collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    networks = list(networks)
    v4 = collapse_addresses(n for n in networks if n.version == 4)  # type: ignore[misc]
    v6 = collapse_addresses(n for n in networks if n.version == 6)  # type: ignore[misc]
    return (*v4, *v6)


def _intersect_networks(
    a: tuple[IPNetwork, ...], b: tuple[IPNetwork, ...]
) -> tuple[IPNetwork, ...]:
    # Two CIDR blocks are either disjoint or one contains the other: keep the smaller.
    out: list[IPNetwork] = []
    for x in a:
        for y in b:
            if x.version != y.version:
                continue
            if x.subnet_of(y):  # type: ignore[arg-type]
                out.append(x)
            elif y.subnet_of(x):  # type: ignore[arg-type]
                out.append(y)
    return _collapse(out)


def _intersect_domains(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    out = set()
    for p in a:
        for q in b:
            if p == q or _covers(p, q):
                out.add(q)
            elif _covers(q, p):
                out.add(p)
    return frozenset(out)


def _covers(wide: str, narrow: str) -> bool:
    """Every host `narrow` matches is matched by the wildcard `wide`."""
    base = narrow[2:] if narrow.startswith("*.") else narrow
    return wide.startswith("*.") and base.endswith(wide[1:])


# The JSON form used in config and the API.

_TOP_KEYS = (
    "countries",
    "networks",
    "referers",
    "allowNoReferer",
    "availableFrom",
    "availableUntil",
)


def rules_from_dict(d: Mapping[str, Any]) -> AccessRules:
    """Parse {"countries": {"allow": [...], "deny": [...]}, "networks": {"allow": [...],
    "deny": [...]}, "referers": [...], "allowNoReferer": bool, "availableFrom": ...,
    "availableUntil": ...}; every key is optional, null is the same as absent, and an empty
    allow list or referer list means "no restriction". Times are unix seconds or ISO 8601
    with a UTC offset. Raises ValueError naming the offending field."""
    if not isinstance(d, Mapping):
        raise ValueError(f"access rules must be an object, got {type(d).__name__}")
    _known_keys(d, _TOP_KEYS, "access rules")
    allow_countries, deny_countries = _allow_deny(d, "countries")
    allow_networks, deny_networks = _allow_deny(d, "networks")
    referers = _list(d.get("referers"), "referers")

    allow_no_referer = d.get("allowNoReferer")
    if allow_no_referer is None:
        allow_no_referer = False
    elif not isinstance(allow_no_referer, bool):
        raise ValueError(f"allowNoReferer: expected true or false, got {allow_no_referer!r}")

    start, end = (d.get(k) for k in ("availableFrom", "availableUntil"))
    available_from = None if start is None else _unix(start, "availableFrom")
    available_until = None if end is None else _unix(end, "availableUntil")
    if available_from is not None and available_until is not None:
        if available_from >= available_until:
            raise ValueError("availableFrom must be before availableUntil")

    return AccessRules(
        allow_countries=_countries(allow_countries, "countries.allow") or None,
        deny_countries=_countries(deny_countries, "countries.deny"),
        allow_networks=_networks(allow_networks, "networks.allow") or None,
        deny_networks=_networks(deny_networks, "networks.deny"),
        referer_domains=_domains(referers, "referers") or None,
        allow_no_referer=allow_no_referer,
        available_from=available_from,
        available_until=available_until,
    )


def _allow_deny(d: Mapping[str, Any], name: str) -> tuple[list[Any], list[Any]]:
    section = d.get(name)
    if section is None:
        return [], []
    if not isinstance(section, Mapping):
        raise ValueError(f'{name}: expected {{"allow": [...], "deny": [...]}}, got {section!r}')
    _known_keys(section, ("allow", "deny"), name)
    return _list(section.get("allow"), f"{name}.allow"), _list(section.get("deny"), f"{name}.deny")


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    return value


def _known_keys(d: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(known)})")
