"""Signed URLs: our prefix HMAC scheme, and CloudFront's RSA URLs and cookies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from multidict import MultiDict, MultiDictProxy
from yarl import URL

from mediaorigin.auth import cloudfront, signed_urls
from mediaorigin.auth.cloudfront import CloudFrontError
from mediaorigin.auth.signed_urls import SignatureError, sign_url, verify_signed

NOW = 1_700_000_000
EXP = NOW + 3600
SECRETS = {"k1": b"first secret, 32 bytes long!!!!!", "k2": b"second secret, also long enough!"}
MASTER = "/vod/abc/master.m3u8"


def request(url: str) -> tuple[str, MultiDictProxy[str]]:
    """What aiohttp hands a handler: the raw path and the decoded query (a multidict)."""
    parsed = URL(url)
    return parsed.raw_path, parsed.query


def master_url(ip: str | None = None) -> str:
    return sign_url(MASTER, "/vod/abc/", SECRETS["k1"], "k1", EXP, ip=ip)


def refused(
    code: str, path: str, query: Mapping[str, str], now: float = NOW, client_ip: str | None = None
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_signed(path, query, SECRETS, now, client_ip)
    assert caught.value.code == code
    assert caught.value.status == 403


# --- HMAC prefix signatures -------------------------------------------------------------------


def test_round_trip() -> None:
    path, query = request(master_url())
    grant = verify_signed(path, query, SECRETS, NOW)
    assert grant == signed_urls.SignedGrant(prefix="/vod/abc/", expires=EXP, kid="k1", ip=None)


@pytest.mark.parametrize(
    "child",
    ["/vod/abc/v0/seg-1.m4s", "/vod/abc/v0/init.mp4", "/vod/abc/a1/index.m3u8", "/vod/abc/"],
)
def test_child_urls_under_the_prefix_verify_with_the_masters_query(child: str) -> None:
    _, query = request(master_url())
    assert verify_signed(child, query, SECRETS, NOW).prefix == "/vod/abc/"


def test_signature_is_the_documented_canonical_string() -> None:
    assert "f\"{pfx}\\n{exp}\\n{ip or ''}\\n{kid}\"" in (signed_urls.__doc__ or "")
    _, query = request(master_url(ip="198.51.100.7"))
    canonical = f"/vod/abc/\n{EXP}\n198.51.100.7\nk1".encode()
    digest = hmac.new(SECRETS["k1"], canonical, hashlib.sha256).digest()
    assert query["sig"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(query["sig"]) == 43


def test_other_query_params_are_kept_and_stale_signing_params_replaced() -> None:
    url = sign_url(MASTER + "?lang=fr&t=1", "/vod/abc/", SECRETS["k1"], "k1", EXP)
    assert url.startswith(MASTER + "?lang=fr&t=1&exp=")
    again = sign_url(url, "/vod/abc/", SECRETS["k2"], "k2", EXP + 60)
    path, query = request(again)
    assert query.getall("sig") and len(query.getall("sig")) == 1
    assert (query["lang"], query["t"]) == ("fr", "1")
    assert verify_signed(path, query, SECRETS, NOW).kid == "k2"


def test_prefix_equal_to_the_whole_path() -> None:
    url = sign_url(MASTER, MASTER, SECRETS["k1"], "k1", EXP)
    path, query = request(url)
    assert verify_signed(path, query, SECRETS, NOW).prefix == MASTER
    refused("prefix_mismatch", "/vod/abc/master.m3u8x", query)
    refused("prefix_mismatch", "/vod/abc/master.m3u8/x", query)


def _with(query: Mapping[str, str], **changes: str | None) -> MultiDict[str]:
    changed = MultiDict(query)
    for name, value in changes.items():
        changed.popall(name, None)
        if value is not None:
            changed[name] = value
    return changed


@pytest.mark.parametrize(
    ("code", "changes", "now", "path"),
    [
        ("signature_missing", {"sig": None}, NOW, MASTER),
        ("signature_missing", {"exp": None, "pfx": None, "kid": None, "sig": None}, NOW, MASTER),
        ("signature_malformed", {"kid": None}, NOW, MASTER),
        ("signature_malformed", {"exp": None}, NOW, MASTER),
        ("signature_malformed", {"pfx": None}, NOW, MASTER),
        ("signature_malformed", {"exp": "soon"}, NOW, MASTER),
        ("signature_malformed", {"exp": "-1"}, NOW, MASTER),
        ("signature_malformed", {"sig": "short"}, NOW, MASTER),
        ("signature_malformed", {"sig": "!" * 43}, NOW, MASTER),
        ("signature_malformed", {"ip": "not-an-address"}, NOW, MASTER),
        ("unknown_kid", {"kid": "k9"}, NOW, MASTER),
        ("bad_signature", {"sig": "A" * 43}, NOW, MASTER),
        ("signature_expired", {}, EXP, MASTER),
        ("signature_expired", {}, EXP + 86400, MASTER),
        ("prefix_mismatch", {}, NOW, "/vod/xyz/master.m3u8"),
    ],
)
def test_error_codes(code: str, changes: dict[str, str | None], now: int, path: str) -> None:
    _, query = request(master_url())
    refused(code, path, _with(query, **changes), now=now)


def test_ip_mismatch() -> None:
    path, query = request(master_url(ip="198.51.100.7"))
    assert verify_signed(path, query, SECRETS, NOW, "198.51.100.7").ip == "198.51.100.7"
    refused("ip_mismatch", path, query, client_ip="198.51.100.8")
    refused("ip_mismatch", path, query, client_ip=None)
    refused("ip_mismatch", path, query, client_ip="garbage")


def test_repeated_signing_parameters_are_malformed() -> None:
    path, query = request(master_url())
    doubled = MultiDict(query)
    doubled.add("sig", "A" * 43)
    refused("signature_malformed", path, doubled)


def _one_char_changed(sig: str) -> str:
    middle = len(sig) // 2
    return sig[:middle] + ("B" if sig[middle] != "B" else "C") + sig[middle + 1 :]


@pytest.mark.parametrize(
    ("name", "tamper", "code"),
    [
        ("exp", lambda v: str(int(v) + 1), "bad_signature"),
        ("pfx", lambda v: "/vod/", "bad_signature"),
        ("pfx", lambda v: "/vod/abd/", "bad_signature"),
        ("ip", lambda v: "198.51.100.8", "bad_signature"),
        ("ip", lambda v: None, "bad_signature"),
        ("sig", _one_char_changed, "bad_signature"),
        ("kid", lambda v: "k2", "bad_signature"),
        ("kid", lambda v: "k3", "unknown_kid"),
    ],
)
def test_tampering_each_parameter_is_rejected(
    name: str, tamper: Callable[[str], str | None], code: str
) -> None:
    path, query = request(master_url(ip="198.51.100.7"))
    changed = _with(query, **{name: tamper(query[name])})
    refused(code, path, changed, client_ip="198.51.100.8" if name == "ip" else "198.51.100.7")


@pytest.mark.parametrize(
    "path",
    [
        "/vod/abc/../xyz/master.m3u8",
        "/vod/abc/%2e%2e/xyz/master.m3u8",
        "/vod/abc/%2E%2E/xyz/master.m3u8",
        "/vod/abc/.%2e/xyz/master.m3u8",
        "/vod/abc//../xyz/master.m3u8",
        "/vod/abc//xyz/master.m3u8",
        "/vod/abc/%2f../xyz/master.m3u8",
        "/vod/abc/%5c../xyz/master.m3u8",
        "/vod/abc/..\\xyz\\master.m3u8",
        "/vod/abc/%252e%252e/xyz/master.m3u8",
        "/vod/abc/./master.m3u8",
        "/vod/abc/..",
        "/vod/abc/v0/..",
    ],
)
def test_traversal_tricks_are_rejected(path: str) -> None:
    _, query = request(master_url())
    refused("prefix_mismatch", path, query)


def _hand_signed(pfx: str, kid: str = "k1") -> MultiDict[str]:
    """A third-party signer that skipped our prefix rules: the HMAC is valid, the prefix not."""
    sig = signed_urls.signature(SECRETS[kid], pfx, str(EXP), None, kid)
    return MultiDict(exp=str(EXP), pfx=pfx, kid=kid, sig=sig)


@pytest.mark.parametrize(
    ("pfx", "path"),
    [
        ("/vod/ab", "/vod/abc/master.m3u8"),
        ("/vod/abc", "/vod/abcdef/master.m3u8"),
        ("/vod/abc/../", "/vod/abc/../xyz/master.m3u8"),
        ("/vod/../", "/vod/xyz/master.m3u8"),
        ("/vod/%2e%2e/", "/vod/%2e%2e/xyz/master.m3u8"),
        ("/vod//", "/vod//abc/master.m3u8"),
        ("/vod\\abc/", "/vod\\abc/master.m3u8"),
        ("vod/abc/", "vod/abc/master.m3u8"),
    ],
)
def test_prefix_tricks_are_rejected(pfx: str, path: str) -> None:
    refused("prefix_mismatch", path, _hand_signed(pfx))
    with pytest.raises(ValueError):
        sign_url(path, pfx, SECRETS["k1"], "k1", EXP)


def test_signer_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        sign_url(MASTER, "/vod/xyz/", SECRETS["k1"], "k1", EXP)  # prefix does not cover path
    with pytest.raises(ValueError):
        sign_url(MASTER, "/vod/abc/", b"", "k1", EXP)
    with pytest.raises(ValueError):
        sign_url(MASTER, "/vod/abc/", SECRETS["k1"], "k 1", EXP)
    with pytest.raises(ValueError):
        sign_url(MASTER, "/vod/abc/", SECRETS["k1"], "k1", EXP, ip="10.0.0.300")


@pytest.mark.parametrize(
    ("signed_ip", "written", "client", "ok"),
    [
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1", "2001:db8::1", True),
        ("2001:db8::1", "2001:db8::1", "2001:0DB8:0000::0001", True),
        ("2001:db8::1", "2001:db8::1", "2001:db8::2", False),
        ("203.0.113.7", "203.0.113.7", "::ffff:203.0.113.7", True),
        ("::ffff:203.0.113.7", "203.0.113.7", "203.0.113.7", True),
        ("203.0.113.7", "203.0.113.7", "2001:db8::cb00:7107", False),
    ],
)
def test_ipv6_binding_is_normalized(signed_ip: str, written: str, client: str, ok: bool) -> None:
    url = master_url(ip=signed_ip)
    path, query = request(url)
    assert query["ip"] == written
    if ok:
        assert verify_signed(path, query, SECRETS, NOW, client).ip == written
    else:
        refused("ip_mismatch", path, query, client_ip=client)


# --- CloudFront --------------------------------------------------------------------------------

CF_NOW = 1_357_030_000
CF_EXP = 1_357_034_400  # the guide's example: 2013-01-01T10:00:00Z
KEY_ID = "K2JCJMDEHXQW5F"
DIST = "https://d111111abcdef8.cloudfront.net"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(key: rsa.RSAPrivateKey) -> dict[str, rsa.RSAPublicKey]:
    return {KEY_ID: key.public_key()}


def cf_base64(data: bytes) -> str:
    """Written out independently of the module: MIME base64, then + → -, = → _, / → ~."""
    return base64.b64encode(data).decode().replace("+", "-").replace("=", "_").replace("/", "~")


def cf_refused(code: str, call: Callable[..., object], *args: object) -> None:
    with pytest.raises(CloudFrontError) as caught:
        call(*args)
    assert caught.value.code == code


def test_canned_policy_is_the_documented_statement_without_whitespace() -> None:
    documented = """
    {
       "Statement":[
          {
             "Resource":"http://d111111abcdef8.cloudfront.net/horizon.jpg?size=large&license=yes",
             "Condition":{
                "DateLessThan":{
                   "AWS:EpochTime":1357034400
                }
             }
          }
       ]
    }
    """
    url = "http://d111111abcdef8.cloudfront.net/horizon.jpg?size=large&license=yes"
    policy = cloudfront.canned_policy(url, 1357034400)
    assert policy == re.sub(r"\s", "", documented)
    assert policy == (
        '{"Statement":[{"Resource":"http://d111111abcdef8.cloudfront.net/horizon.jpg'
        '?size=large&license=yes","Condition":{"DateLessThan":{"AWS:EpochTime":1357034400}}}]}'
    )


def test_custom_policy_form() -> None:
    policy = cloudfront.custom_policy(f"{DIST}/training/*", CF_EXP, 1357030000, "192.0.2.10")
    assert policy == (
        '{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/training/*",'
        '"Condition":{"DateLessThan":{"AWS:EpochTime":1357034400},'
        '"DateGreaterThan":{"AWS:EpochTime":1357030000},'
        '"IpAddress":{"AWS:SourceIp":"192.0.2.10/32"}}}]}'
    )
    with pytest.raises(ValueError):
        cloudfront.custom_policy(f"{DIST}/*", CF_EXP, ip_cidr="2001:db8::/32")
    with pytest.raises(ValueError):
        cloudfront.custom_policy(f"{DIST}/*", CF_EXP, ip_cidr="192.0.2.10/24")  # host bits
    with pytest.raises(ValueError):
        cloudfront.custom_policy(f"{DIST}/*", 2**31)  # past the guide's 32-bit limit


def test_cloudfront_base64_alphabet() -> None:
    data = b"\xfb\xff\xbf\xfe"  # standard base64 "+/+//g==": every replaced character
    assert base64.b64encode(data) == b"+/+//g=="
    assert cloudfront.b64encode(data) == "-~-~~g__" == cf_base64(data)
    assert cloudfront.b64decode("-~-~~g__") == data


def test_canned_url_round_trip_and_independent_signature(
    key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]
) -> None:
    url = f"{DIST}/image.jpg?color=red&size=medium"
    signed = cloudfront.sign_url(url, KEY_ID, key, expires=CF_EXP)
    prefix = f"{url}&Expires={CF_EXP}&Signature="
    assert signed.startswith(prefix) and signed.endswith(f"&Key-Pair-Id={KEY_ID}")
    policy = cloudfront.canned_policy(url, CF_EXP).encode()
    expected = cf_base64(key.sign(policy, PKCS1v15(), hashes.SHA1()))
    assert signed[len(prefix) :].split("&")[0] == expected
    grant = cloudfront.verify_url(signed, keys, CF_NOW)
    assert (grant.canned, grant.resource, grant.expires) == (True, url, CF_EXP)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH")
def test_signature_matches_openssl(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(pem)
    policy = cloudfront.custom_policy(f"{DIST}/vod/abc/*", CF_EXP, ip_cidr="192.0.2.0/24")
    (tmp_path / "policy.json").write_bytes(policy.encode())
    command = ["openssl", "dgst", "-sha1", "-sign", "key.pem", "policy.json"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, check=True, timeout=30)
    assert cloudfront.sign_policy(policy, key) == cf_base64(result.stdout)


def test_custom_url_grants_a_whole_presentation(
    key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]
) -> None:
    policy = cloudfront.custom_policy(f"{DIST}/vod/abc/*", CF_EXP, CF_NOW - 60, "192.0.2.0/24")
    signed = cloudfront.sign_url(f"{DIST}/vod/abc/master.m3u8", KEY_ID, key, policy=policy)
    query = signed.partition("?")[2]
    assert [p.partition("=")[0] for p in query.split("&")] == [
        "Policy",
        "Signature",
        "Key-Pair-Id",
    ]
    assert f"Policy={cf_base64(policy.encode())}&" in signed
    grant = cloudfront.verify_url(signed, keys, CF_NOW, "192.0.2.44")
    assert (grant.canned, grant.starts, grant.ip_cidr) == (False, CF_NOW - 60, "192.0.2.0/24")
    child = f"{DIST}/vod/abc/v0/seg-1.m4s?{query}"
    assert cloudfront.verify_url(child, keys, CF_NOW, "192.0.2.44").resource == f"{DIST}/vod/abc/*"
    cf_refused(
        "resource_mismatch",
        cloudfront.verify_url,
        f"{DIST}/vod/abcdef/master.m3u8?{query}",
        keys,
        CF_NOW,
        "192.0.2.44",
    )


def test_times_and_ip_range(key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]) -> None:
    start = CF_NOW - 60
    policy = cloudfront.custom_policy(f"{DIST}/*", CF_EXP, start, "192.0.2.0/24")
    signed = cloudfront.sign_url(f"{DIST}/a.mp4", KEY_ID, key, policy=policy)
    ok = "192.0.2.1"
    assert cloudfront.verify_url(signed, keys, start + 1, ok)
    assert cloudfront.verify_url(signed, keys, CF_EXP - 1, "::ffff:192.0.2.9")
    cf_refused("not_yet_valid", cloudfront.verify_url, signed, keys, start, ok)
    cf_refused("not_yet_valid", cloudfront.verify_url, signed, keys, start - 3600, ok)
    cf_refused("expired", cloudfront.verify_url, signed, keys, CF_EXP, ok)
    cf_refused("expired", cloudfront.verify_url, signed, keys, CF_EXP + 1, ok)
    for client in ("192.0.3.1", "2001:db8::1", None, "garbage"):
        cf_refused("ip_mismatch", cloudfront.verify_url, signed, keys, CF_NOW, client)
    canned = cloudfront.sign_url(f"{DIST}/a.mp4", KEY_ID, key, expires=CF_EXP)
    assert cloudfront.verify_url(canned, keys, CF_EXP - 1, None)
    cf_refused("expired", cloudfront.verify_url, canned, keys, CF_EXP)


def test_signed_cookies_canned_and_custom(
    key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]
) -> None:
    url = f"{DIST}/vod/abc/master.m3u8"
    canned = cloudfront.signed_cookies(url, KEY_ID, key, CF_EXP)
    assert set(canned) == {"CloudFront-Expires", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
    expected = key.sign(cloudfront.canned_policy(url, CF_EXP).encode(), PKCS1v15(), hashes.SHA1())
    assert canned["CloudFront-Signature"] == cf_base64(expected)
    assert cloudfront.verify_cookies(url, canned, keys, CF_NOW).canned
    other = f"{DIST}/vod/abc/v0/seg-1.m4s"
    cf_refused("bad_signature", cloudfront.verify_cookies, other, canned, keys, CF_NOW)

    custom = cloudfront.signed_cookies(
        f"{DIST}/vod/abc/*", KEY_ID, key, CF_EXP, starts=CF_NOW - 5, ip_cidr="192.0.2.0/24"
    )
    assert set(custom) == {"CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
    assert cloudfront.verify_cookies(other, custom, keys, CF_NOW, "192.0.2.7").ip_cidr
    outside = f"{DIST}/vod/xyz/master.m3u8"
    cf_refused(
        "resource_mismatch", cloudfront.verify_cookies, outside, custom, keys, CF_NOW, "192.0.2.7"
    )
    cf_refused("ip_mismatch", cloudfront.verify_cookies, other, custom, keys, CF_NOW, "10.0.0.1")
    wildcard_only = cloudfront.signed_cookies(f"{DIST}/vod/abc/*", KEY_ID, key, CF_EXP)
    assert "CloudFront-Policy" in wildcard_only  # a `*` needs a custom policy
    cf_refused("missing", cloudfront.verify_cookies, url, {}, keys, CF_NOW)


def test_sha256_hash_algorithm(key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]) -> None:
    url = f"{DIST}/a.mp4"
    signed = cloudfront.sign_url(url, KEY_ID, key, expires=CF_EXP, hash_algorithm="SHA256")
    assert signed.endswith("&Hash-Algorithm=SHA256")
    assert cloudfront.verify_url(signed, keys, CF_NOW)
    cf_refused(
        "bad_signature",
        cloudfront.verify_url,
        signed[: -len("&Hash-Algorithm=SHA256")],
        keys,
        CF_NOW,
    )
    cookies = cloudfront.signed_cookies(url, KEY_ID, key, CF_EXP, hash_algorithm="SHA256")
    assert cookies["CloudFront-Hash-Algorithm"] == "SHA256"
    assert cloudfront.verify_cookies(url, cookies, keys, CF_NOW)


@pytest.mark.parametrize(
    ("pattern", "url", "matches"),
    [
        # the guide's example
        (f"{DIST}/*game_download.zip*", f"{DIST}/game_download.zip", True),
        (f"{DIST}/*game_download.zip*", f"{DIST}/example_game_download.zip?license=yes", True),
        (f"{DIST}/*game_download.zip*", f"{DIST}/test_game_download.zip?license=temp", True),
        (f"{DIST}/*game_download.zip*", f"{DIST}/game_download.tar", False),
        ("*", "", True),
        ("*", "https://anything/at/all?x=1", True),
        ("http://*", "http://d111111abcdef8.cloudfront.net/training/orientation.pdf", True),
        ("http://*", "https://d111111abcdef8.cloudfront.net/training/orientation.pdf", False),
        ("http*://host/x", "https://host/x", True),
        ("http*://host/x", "http://host/x", True),
        (f"{DIST}/vod/abc/*", f"{DIST}/vod/abc/", True),
        (f"{DIST}/vod/abc/*", f"{DIST}/vod/abc/v0/seg-1.m4s", True),
        (f"{DIST}/vod/abc/*", f"{DIST}/vod/abcdef/seg-1.m4s", False),
        (f"{DIST}/vod/abc/*", f"{DIST}/vod/ab", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "abbc", False),
        ("seg-?.m4s", "seg-1.m4s", True),
        ("seg-?.m4s", "seg-10.m4s", False),
        ("seg-*.m4s", "seg-10.m4s", True),
        ("seg-*.m4s", "seg-10.m4s.tmp", False),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXcYb", False),
        ("a*b*c", "abc", True),
        ("**", "x", True),
        ("*?", "", False),
        ("Host/X", "host/x", False),  # case-sensitive
        ("a*a*a*a*a*a*a*b", "a" * 200, False),  # no exponential backtracking
    ],
)
def test_wildcard_resource_matching(pattern: str, url: str, matches: bool) -> None:
    assert cloudfront.resource_matches(pattern, url) is matches


def test_cloudfront_error_codes(key: rsa.RSAPrivateKey, keys: dict[str, rsa.RSAPublicKey]) -> None:
    url = f"{DIST}/a.mp4"
    canned = cloudfront.sign_url(url, KEY_ID, key, expires=CF_EXP)
    verify = cloudfront.verify_url
    cf_refused("missing", verify, url, keys, CF_NOW)
    cf_refused("missing", verify, canned.replace(f"&Key-Pair-Id={KEY_ID}", ""), keys, CF_NOW)
    cf_refused("missing", verify, canned.replace(f"Expires={CF_EXP}&", ""), keys, CF_NOW)
    cf_refused("malformed", verify, canned + "&Policy=e30_", keys, CF_NOW)
    cf_refused("malformed", verify, canned + "&Expires=1", keys, CF_NOW)
    cf_refused(
        "malformed", verify, canned.replace(f"Expires={CF_EXP}", "Expires=soon"), keys, CF_NOW
    )
    cf_refused(
        "malformed", verify, re.sub("Signature=[^&]*", "Signature=!!!", canned), keys, CF_NOW
    )
    cf_refused("malformed", verify, canned + "&Hash-Algorithm=MD5", keys, CF_NOW)
    cf_refused("unknown_key", verify, canned.replace(KEY_ID, "KUNKNOWN"), keys, CF_NOW)
    cf_refused("bad_signature", verify, canned.replace(f"{CF_EXP}", f"{CF_EXP + 1}"), keys, CF_NOW)
    cf_refused("bad_signature", verify, canned.replace("/a.mp4", "/b.mp4"), keys, CF_NOW)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = cloudfront.sign_url(url, KEY_ID, other_key, expires=CF_EXP)
    cf_refused("bad_signature", verify, forged, keys, CF_NOW)
    # a validly signed policy CloudFront would not accept
    for bad_policy in ("not json", '{"Statement":[]}', '{"Statement":[{"Condition":{}}]}'):
        signature = cloudfront.sign_policy(bad_policy, key)
        policy = cf_base64(bad_policy.encode())
        bad = f"{url}?Policy={policy}&Signature={signature}&Key-Pair-Id={KEY_ID}"
        cf_refused("malformed", verify, bad, keys, CF_NOW)


def test_cloudfront_signer_refuses_bad_input(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError):
        cloudfront.sign_url(f"{DIST}/a.mp4", KEY_ID, key)
    with pytest.raises(ValueError):
        cloudfront.sign_url(f"{DIST}/a.mp4", KEY_ID, key, expires=CF_EXP, policy="{}")
    with pytest.raises(ValueError):
        cloudfront.sign_url(f"{DIST}/a.mp4?Expires=1", KEY_ID, key, expires=CF_EXP)
