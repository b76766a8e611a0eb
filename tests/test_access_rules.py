"""Playback access rules: client IP behind proxies, GeoIP, rule evaluation and merging,
referer locks and the token-bucket rate limiter. All sans-IO: time is passed in."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mediaorigin.auth.client_ip import client_ip, parse_ip, parse_networks
from mediaorigin.auth.geo import GeoIP
from mediaorigin.auth.ratelimit import RateLimiter
from mediaorigin.auth.rules import (
    AccessRules,
    RequestInfo,
    domain_matches,
    evaluate,
    merge,
    rules_from_dict,
)

# --- GeoIP ---------------------------------------------------------------------------------


def _country(code: str) -> dict[str, object]:
    return {"iso_code": code, "names": {"en": code}}


@pytest.fixture(scope="module")
def mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"country": _country("GB"), "registered_country": _country("GB")},
    )
    writer.insert_network(
        IPSet(["2001:db8::/32"]),
        {"country": _country("DE"), "registered_country": _country("DE")},
    )
    writer.insert_network(
        IPSet(["175.16.199.0/24"]),
        {"country": _country("CN"), "registered_country": _country("CN")},
    )
    # Anycast/satellite style: only the registration country is known.
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"registered_country": _country("JP")})
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"continent": {"code": "EU"}})
    path = tmp_path_factory.mktemp("geo") / "country.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def geo(mmdb: Path) -> Iterator[GeoIP]:
    with GeoIP(mmdb) as g:
        yield g


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("81.2.69.160", "GB"),
        ("81.2.69.0", "GB"),
        ("81.2.70.1", None),
        ("175.16.199.255", "CN"),
        ("2001:db8::1", "DE"),
        ("2001:db8:ffff:ffff::1", "DE"),
        ("2001:db9::1", None),
        ("::ffff:81.2.69.160", "GB"),  # IPv4-mapped looks up the IPv4 entry
        ("198.51.100.7", "JP"),  # registered_country fallback
        ("203.0.113.1", None),  # a record without any country
        ("8.8.8.8", None),
    ],
)
def test_geoip_country(geo: GeoIP, ip: str, country: str | None) -> None:
    assert geo.country(ip) == country
    assert geo.country(ip_address(ip)) == country


def test_geoip_caches_per_ip(geo: GeoIP) -> None:
    for _ in range(3):
        assert geo.country("81.2.69.1") == "GB"
    assert geo.country(IPv4Address("81.2.69.1")) == "GB"
    info = geo.cache_info()
    assert (info.hits, info.misses) == (3, 1)


def test_geoip_ipv4_only_database_answers_none_for_ipv6(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=4)
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": _country("GB")})
    writer.to_db_file(str(tmp_path / "v4.mmdb"))
    with GeoIP(tmp_path / "v4.mmdb") as g:
        assert g.country("81.2.69.9") == "GB"
        assert g.country("2001:db8::1") is None


def test_geoip_missing_or_bad_database(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GeoIP database not found"):
        GeoIP(tmp_path / "nope.mmdb")
    (tmp_path / "junk.mmdb").write_bytes(b"not a database" * 100)
    with pytest.raises(ValueError, match="not a MaxMind database"):
        GeoIP(tmp_path / "junk.mmdb")


# --- client IP -----------------------------------------------------------------------------

TRUSTED = parse_networks("10.0.0.0/8, 192.168.0.0/16 ::1/128, 2001:db8:ffff::/48")


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # untrusted peer: X-Forwarded-For is the client's own claim
        ("203.0.113.7", "198.51.100.4", "203.0.113.7"),
        ("203.0.113.7", None, "203.0.113.7"),
        # trusted peer without a header, or with an empty one
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.4", "198.51.100.4"),
        # several trusted proxies in the chain
        ("10.0.0.1", "198.51.100.4, 192.168.1.1, 10.0.0.2", "198.51.100.4"),
        ("::1", "198.51.100.4,10.0.0.2", "198.51.100.4"),
        # spoofed entries left of the first untrusted hop are ignored
        ("10.0.0.1", "6.6.6.6, 10.9.9.9, 198.51.100.4, 10.0.0.2", "198.51.100.4"),
        ("10.0.0.1", "garbage, 198.51.100.4", "198.51.100.4"),
        # all hops trusted: the leftmost is an internal client
        ("10.0.0.1", "10.1.1.1, 10.0.0.2", "10.1.1.1"),
        # malformed entries stop the walk at the trusted hop that passed them on
        ("10.0.0.1", "198.51.100.4, garbage", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.4, bogus, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "198.51.100.4,", "10.0.0.1"),
        ("10.0.0.1", "unknown", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.4:99999", "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::1", "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::1]x", "10.0.0.1"),
        # ports and brackets
        ("10.0.0.1", "198.51.100.4:5678", "198.51.100.4"),
        ("10.0.0.1", "[2001:db8::1]:443, 10.0.0.2:80", "2001:db8::1"),
        ("10.0.0.1", "[2001:db8::1]", "2001:db8::1"),
        # IPv6 hops and clients
        ("2001:db8:ffff::5", "2001:db8:1::1, 2001:db8:ffff::6", "2001:db8:1::1"),
        # IPv4-mapped IPv6 becomes IPv4, for the client and for the trust check
        ("10.0.0.1", "::ffff:198.51.100.4", "198.51.100.4"),
        ("::ffff:10.0.0.1", "198.51.100.4", "198.51.100.4"),
        ("::ffff:203.0.113.7", "198.51.100.4", "203.0.113.7"),
        ("10.0.0.1", "198.51.100.4, ::ffff:10.0.0.2", "198.51.100.4"),
    ],
)
def test_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert client_ip(peer, xff, TRUSTED) == ip_address(expected)


def test_client_ip_without_trusted_proxies_is_the_peer() -> None:
    assert client_ip("10.0.0.1", "198.51.100.4", []) == ip_address("10.0.0.1")


def test_client_ip_rejects_a_garbage_peer() -> None:
    with pytest.raises(ValueError, match="peer address"):
        client_ip("not-an-ip", None, TRUSTED)


def test_parse_ip_maps_and_strips() -> None:
    assert parse_ip(" 1.2.3.4:80 ") == IPv4Address("1.2.3.4")
    assert parse_ip("::ffff:1.2.3.4") == IPv4Address("1.2.3.4")
    assert parse_ip("1.2.3.4:") is None
    assert parse_ip("01.2.3.4") is None


def test_parse_networks() -> None:
    assert parse_networks("10.0.0.0/8, ::1/128") == [
        ip_network("10.0.0.0/8"),
        ip_network("::1/128"),
    ]
    assert parse_networks(" 10.1.2.3/8 , 192.0.2.1 ,, ") == [
        ip_network("10.0.0.0/8"),
        ip_network("192.0.2.1/32"),
    ]
    assert parse_networks("") == []
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks("10.0.0.0/8, 10.0.0.0/33")


# --- evaluate ------------------------------------------------------------------------------

T0 = 1_750_000_000.0


def req(
    ip: str = "81.2.69.1",
    country: str | None = "GB",
    referer: str | None = None,
    origin: str | None = None,
    now: float = T0,
) -> RequestInfo:
    return RequestInfo(ip_address(ip), country, referer, origin, now)


def code(rules: AccessRules, request: RequestInfo) -> str | None:
    denial = evaluate(rules, request)
    return None if denial is None else denial.code


@pytest.mark.parametrize(
    ("rules", "request_", "expected"),
    [
        (AccessRules(), req(), None),
        (AccessRules(), req(country=None), None),
        # networks
        (AccessRules(deny_networks=(ip_network("81.2.0.0/16"),)), req(), "ip_denied"),
        (AccessRules(deny_networks=(ip_network("81.3.0.0/16"),)), req(), None),
        (AccessRules(allow_networks=(ip_network("10.0.0.0/8"),)), req(), "ip_not_allowed"),
        (AccessRules(allow_networks=(ip_network("10.0.0.0/8"),)), req("10.2.3.4"), None),
        (AccessRules(allow_networks=(ip_network("::/0"),)), req(), "ip_not_allowed"),
        (AccessRules(allow_networks=()), req(), "ip_not_allowed"),
        (
            AccessRules(deny_networks=(ip_network("81.2.0.0/16"),)),
            req("::ffff:81.2.0.1"),
            "ip_denied",
        ),
        # countries
        (AccessRules(deny_countries=frozenset({"GB"})), req(), "country_denied"),
        (AccessRules(deny_countries=frozenset({"gb"})), req(country="gb"), "country_denied"),
        (AccessRules(deny_countries=frozenset({"GB"})), req(country=None), None),
        (AccessRules(allow_countries=frozenset({"DE"})), req(), "country_not_allowed"),
        (AccessRules(allow_countries=frozenset({"DE", "GB"})), req(), None),
        (AccessRules(allow_countries=frozenset({"GB"})), req(country=None), "country_unknown"),
        (AccessRules(allow_countries=frozenset()), req(), "country_not_allowed"),
        # referer lock
        (AccessRules(referer_domains=frozenset({"lms.example.edu"})), req(), "referer_not_allowed"),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"}), allow_no_referer=True),
            req(),
            None,
        ),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"})),
            req(referer="https://lms.example.edu/course/7"),
            None,
        ),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"})),
            req(origin="https://LMS.example.edu:8443"),
            None,
        ),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"})),
            req(origin="https://evil.com", referer="https://lms.example.edu/"),
            "referer_not_allowed",
        ),
        (  # Origin "null" says nothing: the Referer decides
            AccessRules(referer_domains=frozenset({"lms.example.edu"})),
            req(origin="null", referer="https://lms.example.edu/"),
            None,
        ),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"}), allow_no_referer=True),
            req(origin="null"),
            None,
        ),
        (  # present but unparseable is not "absent"
            AccessRules(referer_domains=frozenset({"lms.example.edu"}), allow_no_referer=True),
            req(referer="lms.example.edu"),
            "referer_not_allowed",
        ),
        (
            AccessRules(referer_domains=frozenset({"lms.example.edu"})),
            req(referer="https://lms.example.edu@evil.com/"),
            "referer_not_allowed",
        ),
        # time window [from, until)
        (AccessRules(available_from=T0), req(now=T0), None),
        (AccessRules(available_from=T0), req(now=T0 - 0.001), "not_yet_available"),
        (AccessRules(available_until=T0), req(now=T0), "no_longer_available"),
        (AccessRules(available_until=T0), req(now=T0 - 0.001), None),
        # order: network before country before referer before time
        (
            AccessRules(
                deny_networks=(ip_network("81.2.69.0/24"),),
                deny_countries=frozenset({"GB"}),
                available_from=T0 + 1,
            ),
            req(),
            "ip_denied",
        ),
        (
            AccessRules(
                allow_countries=frozenset({"DE"}),
                referer_domains=frozenset({"x.edu"}),
                available_from=T0 + 1,
            ),
            req(),
            "country_not_allowed",
        ),
        (
            AccessRules(referer_domains=frozenset({"x.edu"}), available_until=T0),
            req(),
            "referer_not_allowed",
        ),
    ],
)
def test_evaluate(rules: AccessRules, request_: RequestInfo, expected: str | None) -> None:
    assert code(rules, request_) == expected


def test_denial_messages_name_the_reason() -> None:
    denial = evaluate(AccessRules(allow_countries=frozenset({"DE"})), req(country="CN"))
    assert denial is not None
    assert "CN" in denial.message
    denial = evaluate(AccessRules(available_from=0.0 + 86400), req(now=0.0))
    assert denial is not None
    assert denial.message == "This media is available from 1970-01-02T00:00:00Z."


# --- merge ---------------------------------------------------------------------------------


def test_merge_global_deny_beats_media_allow() -> None:
    global_ = AccessRules(deny_countries=frozenset({"CN"}))
    media = AccessRules(allow_countries=frozenset({"CN", "GB"}))
    merged = merge(global_, media)
    assert code(merged, req(country="CN")) == "country_denied"
    assert code(merged, req(country="GB")) is None
    assert code(merged, req(country="DE")) == "country_not_allowed"


def test_merge_intersects_allow_lists() -> None:
    org = AccessRules(allow_countries=frozenset({"GB", "DE"}))
    media = AccessRules(allow_countries=frozenset({"DE", "FR"}))
    merged = AccessRules.merge(AccessRules(), org, media)
    assert merged.allow_countries == frozenset({"DE"})
    assert code(merged, req(country="DE")) is None
    assert code(merged, req(country="GB")) == "country_not_allowed"
    assert code(merged, req(country="FR")) == "country_not_allowed"
    # disjoint lists admit nobody (not everybody)
    nobody = merge(org, AccessRules(allow_countries=frozenset({"JP"})))
    assert nobody.allow_countries == frozenset()
    assert code(nobody, req(country="JP")) == "country_not_allowed"


def test_merge_networks() -> None:
    org = AccessRules(
        allow_networks=(ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")),
        deny_networks=(ip_network("10.66.0.0/16"),),
    )
    media = AccessRules(
        allow_networks=(ip_network("10.1.0.0/16"), ip_network("10.66.0.0/16")),
        deny_networks=(ip_network("10.1.2.0/24"),),
    )
    merged = merge(org, media)
    assert merged.allow_networks == (ip_network("10.1.0.0/16"), ip_network("10.66.0.0/16"))
    assert set(merged.deny_networks) == {ip_network("10.66.0.0/16"), ip_network("10.1.2.0/24")}
    assert code(merged, req("10.1.9.9")) is None
    assert code(merged, req("10.1.2.3")) == "ip_denied"
    assert code(merged, req("10.66.0.1")) == "ip_denied"
    assert code(merged, req("10.2.0.1")) == "ip_not_allowed"
    assert code(merged, req("2001:db8::1")) == "ip_not_allowed"
    v6_only = merge(org, AccessRules(allow_networks=(ip_network("2001:db8:1::/48"),)))
    assert v6_only.allow_networks == (ip_network("2001:db8:1::/48"),)
    disjoint = merge(org, AccessRules(allow_networks=(ip_network("192.0.2.0/24"),)))
    assert disjoint.allow_networks == ()
    assert code(disjoint, req("192.0.2.1")) == "ip_not_allowed"


def test_merge_time_window_takes_the_narrowest() -> None:
    course = AccessRules(available_from=T0, available_until=T0 + 100)
    media = AccessRules(available_from=T0 + 10, available_until=T0 + 200)
    merged = merge(course, media)
    assert (merged.available_from, merged.available_until) == (T0 + 10, T0 + 100)
    assert code(merged, req(now=T0 + 9.999)) == "not_yet_available"
    assert code(merged, req(now=T0 + 10)) is None
    assert code(merged, req(now=T0 + 99.999)) is None
    assert code(merged, req(now=T0 + 100)) == "no_longer_available"
    # windows that do not overlap: never playable
    never = merge(AccessRules(available_until=T0), AccessRules(available_from=T0 + 1))
    assert code(never, req(now=T0 - 1)) == "not_yet_available"
    assert code(never, req(now=T0 + 0.5)) == "not_yet_available"
    assert code(never, req(now=T0 + 1)) == "no_longer_available"


def test_merge_referer_locks() -> None:
    org = AccessRules(referer_domains=frozenset({"*.example.edu", "lms.other.org"}))
    media = AccessRules(referer_domains=frozenset({"moodle.example.edu", "*.c.example.edu"}))
    merged = merge(org, media)
    assert merged.referer_domains == frozenset({"moodle.example.edu", "*.c.example.edu"})
    assert code(merged, req(origin="https://x.c.example.edu")) is None
    assert code(merged, req(origin="https://lms.other.org")) == "referer_not_allowed"
    assert code(merged, req(origin="https://a.example.edu")) == "referer_not_allowed"
    # no-referer requests pass only if every layer that locks referers allows them
    open_ = AccessRules(allow_no_referer=False)  # no lock: its flag does not matter
    lenient = AccessRules(referer_domains=frozenset({"*.example.edu"}), allow_no_referer=True)
    strict = AccessRules(referer_domains=frozenset({"*.example.edu"}))
    assert code(merge(open_, lenient), req()) is None
    assert code(merge(lenient, strict), req()) == "referer_not_allowed"
    assert merge(open_).referer_domains is None
    assert merge() == AccessRules()


def test_merge_of_one_layer_is_that_layer() -> None:
    rules = rules_from_dict(
        {
            "countries": {"allow": ["gb", "DE"], "deny": ["CN"]},
            "networks": {"allow": ["10.0.0.0/8", "10.1.0.0/16"], "deny": ["10.9.0.0/16"]},
            "referers": ["*.example.edu"],
            "allowNoReferer": True,
            "availableFrom": T0,
        }
    )
    assert merge(rules) == rules
    assert rules.allow_networks == (ip_network("10.0.0.0/8"),)  # collapsed


# --- referer patterns ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*.example.edu", "a.example.edu", True),
        ("*.example.edu", "a.b.example.edu", True),
        ("*.example.edu", "example.edu", False),
        ("*.example.edu", "example.edu.evil.com", False),
        ("*.example.edu", "evil-example.edu", False),
        ("*.example.edu", "aexample.edu", False),
        ("example.edu", "example.edu", True),
        ("example.edu", "a.example.edu", False),
    ],
)
def test_domain_matches(pattern: str, host: str, matches: bool) -> None:
    assert domain_matches(pattern, host) is matches


@pytest.mark.parametrize(
    ("referer", "allowed"),
    [
        ("https://a.example.edu/course", True),
        ("https://A.Example.EDU./course", True),
        ("http://a.example.edu:8080/", True),
        ("https://example.edu/", True),
        ("https://example.edu.evil.com/", False),
        ("https://evil-example.edu/", False),
        ("https://bücher.example.edu/", True),  # IDN hosts compare as punycode
        ("https://xn--bcher-kva.example.edu/", True),
        ("https://[::1]/", False),
        ("https://[bad/", False),
    ],
)
def test_referer_lock_with_wildcards(referer: str, allowed: bool) -> None:
    rules = AccessRules(referer_domains=frozenset({"*.example.edu", "Example.EDU"}))
    assert (evaluate(rules, req(referer=referer)) is None) is allowed


# --- rules_from_dict -----------------------------------------------------------------------


def test_rules_from_dict() -> None:
    rules = rules_from_dict(
        {
            "countries": {"allow": ["gb", " de "], "deny": []},
            "networks": {"deny": ["192.0.2.0/24", "2001:db8::/32"]},
            "referers": ["*.Example.edu", "lms.example.org"],
            "allowNoReferer": False,
            "availableFrom": "2025-09-01T10:00:00+02:00",
            "availableUntil": 1_900_000_000,
        }
    )
    assert rules == AccessRules(
        allow_countries=frozenset({"GB", "DE"}),
        deny_networks=(ip_network("192.0.2.0/24"), ip_network("2001:db8::/32")),
        referer_domains=frozenset({"*.example.edu", "lms.example.org"}),
        available_from=1_756_713_600.0,
        available_until=1_900_000_000.0,
    )
    assert rules_from_dict({}) == AccessRules()
    empty_lists = {"countries": {"allow": []}, "networks": {"allow": []}, "referers": []}
    assert rules_from_dict(empty_lists) == AccessRules()  # empty list: no restriction
    assert rules_from_dict({"availableFrom": "2025-09-01T08:00:00Z"}).available_from == (
        1_756_713_600.0
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "access rules must be an object"),
        ({"contries": {}}, "unknown key 'contries'"),
        ({"countries": ["GB"]}, "countries: expected"),
        ({"countries": {"allowed": ["GB"]}}, "countries: unknown key 'allowed'"),
        ({"countries": {"allow": "GB"}}, "countries.allow: expected a list"),
        ({"countries": {"deny": ["GBR"]}}, "countries.deny: 'GBR' is not a two-letter"),
        ({"countries": {"allow": [44]}}, "countries.allow: 44 is not a two-letter"),
        ({"networks": {"allow": ["10.0.0.0/33"]}}, "networks.allow: '10.0.0.0/33' is not an IP"),
        ({"referers": ["https://lms.example.edu/"]}, "referers: 'https://lms.example.edu/'"),
        ({"referers": ["*"]}, "referers: '\\*' is not a hostname"),
        ({"referers": ["*.1.2.3.4"]}, "not a hostname"),
        ({"allowNoReferer": "yes"}, "allowNoReferer: expected true or false"),
        ({"availableFrom": "tomorrow"}, "availableFrom: 'tomorrow' is not an ISO 8601"),
        ({"availableFrom": "2025-09-01T08:00:00"}, "has no UTC offset"),
        ({"availableUntil": True}, "availableUntil: expected unix seconds"),
        ({"availableUntil": float("nan")}, "availableUntil: nan is not a finite time"),
        (
            {"availableFrom": 200, "availableUntil": 100},
            "availableFrom must be before availableUntil",
        ),
    ],
)
def test_rules_from_dict_errors(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_dict(data)  # type: ignore[arg-type]


# --- rate limiter --------------------------------------------------------------------------


def test_rate_limiter_burst_then_rate() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=5)
    assert [limiter.allow("ip", 0.0) for _ in range(5)] == [True] * 5
    assert limiter.allow("ip", 0.0) is False
    assert limiter.retry_after("ip", 0.0) == 0.5
    assert limiter.retry_after("ip", 0.25) == 0.25
    assert limiter.allow("ip", 0.25) is False  # refusals take nothing
    assert limiter.retry_after("ip", 0.25) == 0.25
    assert limiter.allow("ip", 0.5) is True
    assert limiter.allow("ip", 0.5) is False
    assert limiter.retry_after("ip", 0.5) == 0.5
    # other keys have their own bucket
    assert limiter.retry_after("other", 0.5) == 0.0
    assert limiter.allow("other", 0.5) is True
    # a long pause refills up to burst, not beyond
    assert [limiter.allow("ip", 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_rate_limiter_steady_rate_counts_exactly() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=1)
    allowed = sum(limiter.allow("k", i * 0.01) for i in range(1001))  # 10 s at 100 tries/s
    assert allowed == 101  # t=0, then one per 0.1 s


def test_rate_limiter_clock_stepping_back_refills_nothing() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1)
    assert limiter.allow("k", 10.0) is True
    assert limiter.allow("k", 5.0) is False
    assert limiter.allow("k", 10.5) is False
    assert limiter.allow("k", 11.0) is True


def test_rate_limiter_forgets_least_recently_used_keys() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_keys=3)
    for key in "abc":
        assert limiter.allow(key, 0.0)
    assert limiter.allow("a", 0.0) is False  # touches "a": "b" is now the oldest
    assert limiter.allow("d", 0.0) is True
    assert len(limiter) == 3
    assert "b" not in limiter
    assert {"a", "c", "d"} <= {k for k in "abcd" if k in limiter}
    assert limiter.allow("b", 0.0) is True  # forgotten: a full bucket again
    assert "c" not in limiter
    assert limiter.allow("a", 0.0) is False  # remembered: still empty


def test_rate_limiter_validates() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(0, 5)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, 0)
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(1, 1, max_keys=0)
