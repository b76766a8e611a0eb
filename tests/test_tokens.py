"""Playback tokens (mediaorigin.auth.tokens, .jwks): round trips per algorithm, one crafted token
per refusal code, clock-skew edges, IP binding, key rotation, the JWKS document, and a
mutation fuzz that must never see an altered token accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from collections import Counter
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaorigin.auth.jwks import jwks
from mediaorigin.auth.tokens import (
    AUDIENCE,
    CODES,
    Keyring,
    PlaybackClaims,
    SigningKey,
    TokenError,
    generate_eddsa,
    generate_es256,
)

NOW = 1_750_000_000
SECRET = hashlib.sha256(b"test secret for hs1").digest()  # 32 bytes
HS = SigningKey.hs256("hs1", SECRET)
ES = generate_es256("es1")
ED = generate_eddsa("ed1")
KEYS = {"HS256": HS, "ES256": ES, "EdDSA": ED}
ALGS = list(KEYS)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(**changes: Any) -> dict[str, Any]:
    """A valid payload for media m1; a change to None drops the claim."""
    payload = {"aud": AUDIENCE, "med": "m1", "exp": NOW + 600, "iat": NOW} | changes
    return {name: value for name, value in payload.items() if value is not None}


def craft(header: dict[str, Any], payload: Any, key: SigningKey | None = None) -> str:
    """A token built by hand; signed by `key`, or with an empty signature."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64json(header)}.{b64(body)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()) if key else b'')}"


def hs_header(**changes: Any) -> dict[str, Any]:
    return {"alg": "HS256", "kid": "hs1", "typ": "JWT"} | changes


def refused(ring: Keyring, token: Any, code: str, media: str = "m1", ip: str | None = None,
            now: int = NOW) -> TokenError:
    with pytest.raises(TokenError) as info:
        ring.verify(token, media, ip, now)
    error = info.value
    assert (error.code, error.status) == (code, 403)
    text = str(error)
    for part in (token.split(".") if isinstance(token, str) else []):
        assert len(part) < 6 or part not in text
    assert b64(SECRET) not in text and SECRET.hex() not in text
    return error


def issue(ring: Keyring, **kwargs: Any) -> str:
    return ring.issue(now=kwargs.pop("now", NOW), **({"media": "m1", "ttl": 600} | kwargs))


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_round_trip(alg: str) -> None:
    key = KEYS[alg]
    ring = Keyring([key])
    token = ring.issue(now=NOW, media="lecture-7", ttl=600, user="u1", session="s1",
                       not_before=NOW - 5, client_ip="2001:DB8::1", countries=["de", "AT"])
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": key.kid, "typ": "JWT"}
    assert ring.verify(token, "lecture-7", "2001:db8:0:0:0:0:0:1", NOW) == PlaybackClaims(
        media="lecture-7", user="u1", session="s1", expires=NOW + 600, not_before=NOW - 5,
        issued_at=NOW, client_ip="2001:db8::1", countries=("DE", "AT"), key_id=key.kid)


@pytest.mark.parametrize("alg", ALGS)
def test_issue_from_claims_object(alg: str) -> None:
    ring = Keyring([KEYS[alg]])
    wanted = PlaybackClaims(media="live-3", expires=NOW + 60, user="u2", issued_at=NOW - 1)
    claims_back = ring.verify(ring.issue(wanted, now=NOW), "live-3", None, NOW)
    assert claims_back == PlaybackClaims(media="live-3", expires=NOW + 60, user="u2",
                                         issued_at=NOW - 1, key_id=KEYS[alg].kid)


def test_minimal_token_has_only_required_claims() -> None:
    ring = Keyring([HS])
    token = ring.issue(now=NOW, media="m1", expires=NOW + 10)
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE,
                      options={"verify_exp": False}) == claims(exp=NOW + 10)
    assert ring.verify(token, "m1", "192.0.2.7", NOW) == PlaybackClaims(
        media="m1", expires=NOW + 10, issued_at=NOW, key_id="hs1")


def test_ttl_may_be_fractional() -> None:
    ring = Keyring([HS])
    assert ring.verify(issue(ring, ttl=4 * 3600.0), "m1", None, NOW).expires == NOW + 14400
    assert ring.verify(issue(ring, now=NOW + 0.9, ttl=0.5), "m1", None, NOW).expires == NOW + 1


def test_interoperates_with_plain_pyjwt() -> None:
    """A CMS backend may mint tokens with PyJWT and the shared secret; players' backends may
    check ours with the public key."""
    minted = jwt.encode(claims(sub="u9", cty=["FR"]), SECRET, algorithm="HS256",
                        headers={"kid": "hs1"})
    assert Keyring([HS]).verify(minted, "m1", None, NOW).countries == ("FR",)
    ours = issue(Keyring([ES]))
    assert jwt.decode(ours, ES.public_key, algorithms=["ES256"], audience=AUDIENCE,
                      options={"verify_exp": False})["med"] == "m1"


def test_issue_validates_its_input() -> None:
    ring = Keyring([HS])
    with pytest.raises(TypeError):
        ring.issue(now=NOW, media="m1")  # neither ttl nor expires
    with pytest.raises(TypeError):
        ring.issue(now=NOW, media="m1", ttl=5, expires=NOW + 5)
    with pytest.raises(TypeError):
        ring.issue(PlaybackClaims(media="m1", expires=NOW), now=NOW, user="u")
    for bad in ({"media": ""}, {"media": "*"}, {"client_ip": "10.0.0.300"},
                {"countries": ["DEU"]}, {"countries": []}, {"expires": True, "ttl": None},
                {"user": 5}, {"ttl": 0}, {"ttl": -5}, {"ttl": True}, {"ttl": "60"}):
        with pytest.raises(ValueError):
            issue(ring, **bad)


# -- refusals, one crafted token per code ---------------------------------------------------


def test_every_code_is_exercised_below() -> None:
    assert set(CODES) == {
        "token_missing", "token_malformed", "alg_not_allowed", "unknown_kid", "bad_signature",
        "token_expired", "token_not_yet_valid", "wrong_media", "wrong_audience",
        "wrong_issuer", "ip_mismatch", "missing_claim"}


@pytest.mark.parametrize("token", [None, ""])
def test_token_missing(token: str | None) -> None:
    refused(Keyring([HS]), token, "token_missing")


def _valid() -> str:
    return issue(Keyring([HS]))


def _padded_signature() -> str:
    head, _, sig = _valid().rpartition(".")
    assert len(sig) % 4  # 32 bytes: 43 characters, so padding would be "="
    return f"{head}.{sig}{'=' * (-len(sig) % 4)}"


def _non_canonical_signature() -> str:
    """Same signature bytes, spelled with the unused low bits of the last character set."""
    head, _, sig = _valid().rpartition(".")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    other = alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(sig[:-1] + other + "=") == base64.urlsafe_b64decode(sig + "=")
    return f"{head}.{sig[:-1]}{other}"


MALFORMED = {
    "one part": lambda: "not-a-token",
    "two parts": lambda: "e30.e30",
    "four parts": lambda: _valid() + ".e30",
    "bad base64": lambda: "!!!!." + _valid().split(".", 1)[1],
    "length 1 mod 4": lambda: "A." + _valid().split(".", 1)[1],
    "padding": _padded_signature,
    "non-canonical base64": _non_canonical_signature,
    "standard alphabet": lambda: _valid().replace("J", "+", 1),
    "leading space": lambda: " " + _valid(),
    "non-ASCII": lambda: "é" + _valid(),
    "header not JSON": lambda: b64(b"alg HS256") + ".e30.",
    "header not an object": lambda: b64json(["HS256"]) + ".e30.",
    "header not UTF-8": lambda: b64(b'{"alg":"\xff"}') + ".e30.",
    "header nested deeply": lambda: b64(b"[" * 3000) + ".e30.",
    "no kid": lambda: craft({"alg": "HS256"}, claims(), HS),
    "kid not a string": lambda: craft(hs_header(kid=["hs1"]), claims(), HS),
    "crit header": lambda: craft(hs_header(crit=["exp"]), claims(), HS),
    "payload not JSON": lambda: craft(hs_header(), b"med=m1", HS),
    "payload not an object": lambda: craft(hs_header(), [claims()], HS),
    "exp a string": lambda: craft(hs_header(), claims(exp=str(NOW + 600)), HS),
    "exp a float": lambda: craft(hs_header(), claims(exp=NOW + 600.5), HS),
    "exp a bool": lambda: craft(hs_header(), claims(exp=True), HS),
    "nbf a string": lambda: craft(hs_header(), claims(nbf="0"), HS),
    "med a number": lambda: craft(hs_header(), claims(med=1), HS),
    "med empty": lambda: craft(hs_header(), claims(med=""), HS),
    "sub a number": lambda: craft(hs_header(), claims(sub=7), HS),
    "ip not an address": lambda: craft(hs_header(), claims(ip="localhost"), HS),
    "cty a string": lambda: craft(hs_header(), claims(cty="DE"), HS),
    "cty alpha-3": lambda: craft(hs_header(), claims(cty=["DEU"]), HS),
    "cty empty": lambda: craft(hs_header(), claims(cty=[]), HS),
    "too long": lambda: issue(Keyring([HS]), user="u" * 4000),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_token_malformed(make: Any) -> None:
    refused(Keyring([HS]), make(), "token_malformed", ip="192.0.2.1")


def test_token_of_wrong_type_is_malformed() -> None:
    refused(Keyring([HS]), _valid().encode(), "token_malformed")


@pytest.mark.parametrize("header", [
    {"alg": "none", "kid": "hs1"}, {"alg": "none"}, {"alg": "None", "kid": "hs1"},
    {"alg": "NONE", "kid": "es1"}, {"alg": "", "kid": "hs1"}, {"kid": "hs1"},
    {"alg": ["HS256"], "kid": "hs1"}, {"alg": "HS512", "kid": "hs1"},
    {"alg": "RS256", "kid": "es1"}, {"alg": "ES384", "kid": "es1"},
])
def test_alg_none_and_unconfigured_algs_are_refused(header: dict[str, Any]) -> None:
    ring = Keyring([HS, ES])
    refused(ring, craft(header, claims()), "alg_not_allowed")  # empty signature, by hand
    signed = _valid().rpartition(".")[2]  # a real signature does not help either
    refused(ring, craft(header, claims()).rstrip(".") + "." + signed, "alg_not_allowed")


def _public_encodings(key: SigningKey) -> list[bytes]:
    public = key.public_key
    assert public is not None
    encodings = [
        public.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]
    if isinstance(public, ec.EllipticCurvePublicKey):
        encodings.append(public.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint))
    else:
        encodings.append(public.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw))
    return encodings


@pytest.mark.parametrize("target", [ES, ED], ids=["ES256", "EdDSA"])
def test_hs256_keyed_with_a_public_key_never_verifies(target: SigningKey) -> None:
    """The classic key confusion: an attacker HMACs a token with the published public key."""
    for public in _public_encodings(target):
        for kid in (target.kid, "hs1"):
            signing_input = f"{b64json(hs_header(kid=kid))}.{b64json(claims())}"
            mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
            token = f"{signing_input}.{b64(mac)}"
            refused(Keyring([target]), token, "alg_not_allowed")  # HS256 not configured
            mixed = Keyring([HS, ES, ED])
            refused(mixed, token, "alg_not_allowed" if kid == target.kid else "bad_signature")


@pytest.mark.parametrize(("alg", "kid"), [("ES256", "hs1"), ("EdDSA", "es1"), ("ES256", "ed1"),
                                          ("HS256", "es1")])
def test_header_alg_must_be_the_keys_own(alg: str, kid: str) -> None:
    token = craft({"alg": alg, "kid": kid}, claims(), KEYS[alg])
    refused(Keyring([HS, ES, ED]), token, "alg_not_allowed")


def test_unknown_kid() -> None:
    ring = Keyring([HS, ES])
    refused(ring, craft(hs_header(kid="hs2"), claims(), HS), "unknown_kid")
    refused(ring, issue(Keyring([generate_es256("elsewhere")])), "unknown_kid")


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_payload_is_a_bad_signature(alg: str) -> None:
    ring = Keyring([KEYS[alg]])
    header, payload, signature = issue(ring, user="alice").split(".")
    text = base64.urlsafe_b64decode(payload + "==").decode()
    for old, new in (("alice", "alicf"), ('"m1"', '"m2"'), (str(NOW + 600), str(NOW + 900))):
        assert old in text
        tampered = f"{header}.{b64(text.replace(old, new).encode())}.{signature}"
        refused(ring, tampered, "bad_signature")


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_or_foreign_signature_is_bad(alg: str) -> None:
    ring = Keyring([KEYS[alg]])
    head, _, sig = issue(ring).rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[5] ^= 0x01
    refused(ring, f"{head}.{b64(bytes(raw))}", "bad_signature")
    refused(ring, f"{head}.{b64(bytes(raw[:-1]))}", "bad_signature")  # wrong length
    refused(ring, f"{head}.", "bad_signature")  # empty
    impostor = {"HS256": SigningKey.hs256("hs1", bytes(32)), "ES256": generate_es256("es1"),
                "EdDSA": generate_eddsa("ed1")}[alg]
    refused(ring, issue(Keyring([impostor])), "bad_signature")


# -- time, with leeway 30 s -------------------------------------------------------------------


@pytest.mark.parametrize(("exp", "ok"), [
    (NOW + 1, True), (NOW, True), (NOW - 29, True),
    (NOW - 30, False), (NOW - 31, False),  # now - leeway - 1: expired
])
def test_expiry_edges(exp: int, ok: bool) -> None:
    ring = Keyring([HS])
    token = issue(ring, now=NOW - 600, ttl=None, expires=exp)
    if ok:
        assert ring.verify(token, "m1", None, NOW).expires == exp
    else:
        refused(ring, token, "token_expired")


@pytest.mark.parametrize(("nbf", "ok"), [
    (NOW - 1, True), (NOW + 30, True), (NOW + 31, False), (NOW + 3600, False),
])
def test_not_before_edges(nbf: int, ok: bool) -> None:
    ring = Keyring([HS])
    token = issue(ring, not_before=nbf)
    if ok:
        assert ring.verify(token, "m1", None, NOW).not_before == nbf
    else:
        refused(ring, token, "token_not_yet_valid")


def test_zero_leeway_is_exact() -> None:
    ring = Keyring([HS], leeway=0)
    refused(ring, issue(ring, now=NOW - 60, ttl=60), "token_expired")  # exp == now
    assert ring.verify(issue(ring, now=NOW - 59, ttl=60), "m1", None, NOW)
    assert ring.verify(issue(ring, not_before=NOW), "m1", None, NOW)
    refused(ring, issue(ring, not_before=NOW + 1), "token_not_yet_valid")


# -- what the token opens, and for whom -------------------------------------------------------


def test_wrong_media() -> None:
    ring = Keyring([HS])
    token = issue(ring, media="m1")
    for other in ("m2", "m10", "M1", "", "*"):
        refused(ring, token, "wrong_media", media=other)


def test_wildcard_media_needs_the_flag() -> None:
    wildcard = craft(hs_header(), claims(med="*"), HS)
    closed = Keyring([HS])
    for media in ("m1", "*"):
        refused(closed, wildcard, "wrong_media", media=media)
    with pytest.raises(ValueError):
        issue(closed, media="*")
    open_ = Keyring([HS], allow_any_media=True)
    assert open_.verify(wildcard, "m2", None, NOW).media == "*"
    assert open_.verify(issue(open_, media="*"), "live-9", None, NOW).media == "*"
    refused(open_, issue(open_, media="m1"), "wrong_media", media="m2")


def test_audience() -> None:
    ring = Keyring([HS])
    for aud in ("mediaorigin-api", ["other"], 5, "MEDIAORIGIN-PLAYBACK"):
        refused(ring, craft(hs_header(), claims(aud=aud), HS), "wrong_audience")
    both = craft(hs_header(), claims(aud=["lms", AUDIENCE]), HS)
    assert ring.verify(both, "m1", None, NOW).media == "m1"
    refused(ring, craft(hs_header(), claims(aud=None), HS), "missing_claim")


def test_issuer_when_configured() -> None:
    ring = Keyring([HS], issuer="https://lms.example")
    token = issue(ring)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://lms.example"
    assert ring.verify(token, "m1", None, NOW)
    refused(ring, issue(Keyring([HS])), "missing_claim")
    refused(ring, craft(hs_header(), claims(iss="https://evil.example"), HS), "wrong_issuer")
    assert Keyring([HS]).verify(token, "m1", None, NOW)  # no issuer configured: not checked


@pytest.mark.parametrize("missing", ["exp", "med", "aud"])
def test_missing_claim(missing: str) -> None:
    error = refused(Keyring([HS]), craft(hs_header(), claims(**{missing: None}), HS),
                    "missing_claim")
    assert missing in str(error)


@pytest.mark.parametrize(("bound", "client", "normalized"), [
    ("::1", "0:0:0:0:0:0:0:1", "::1"),
    ("0:0:0:0:0:0:0:1", "::1", "::1"),
    ("2001:DB8::1", "2001:db8:0:0::1", "2001:db8::1"),
    ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
    ("192.0.2.1", "::ffff:192.0.2.1", "192.0.2.1"),  # a dual-stack socket's view of IPv4
    ("::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1"),
    ("192.0.2.1", "192.0.2.2", None),
    ("::1", "::2", None),
    ("::1", "127.0.0.1", None),
    ("192.0.2.1", None, None),
    ("192.0.2.1", "not-an-address", None),
    ("192.0.2.1", "", None),
])
def test_ip_binding(bound: str, client: str | None, normalized: str | None) -> None:
    """Issued (normalized on issue) and hand-crafted (normalized on verify) bindings alike."""
    ring = Keyring([HS])
    for token in (issue(ring, client_ip=bound), craft(hs_header(), claims(ip=bound), HS)):
        if normalized:
            assert ring.verify(token, "m1", client, NOW).client_ip == normalized
        else:
            refused(ring, token, "ip_mismatch", ip=client)


def test_unbound_token_opens_for_any_address() -> None:
    ring = Keyring([HS])
    token = issue(ring)
    for client in ("192.0.2.1", "::1", None, "garbage"):
        assert ring.verify(token, "m1", client, NOW).client_ip is None


# -- keys and rotation ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_rotation_keeps_retired_keys_until_removed(alg: str) -> None:
    make = {"HS256": lambda kid: SigningKey.hs256(kid, hashlib.sha256(kid.encode()).digest()),
            "ES256": generate_es256, "EdDSA": generate_eddsa}[alg]
    k1, k2 = make("k1"), make("k2")
    ring1 = Keyring([k1])
    old = issue(ring1)
    ring2 = ring1.rotate(k2)
    assert ring2.current is k2 and ring1.current is k1
    new = issue(ring2)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert ring2.verify(old, "m1", None, NOW).key_id == "k1"
    assert ring2.verify(new, "m1", None, NOW).key_id == "k2"
    ring3 = ring2.without("k1")
    refused(ring3, old, "unknown_kid")
    assert ring3.verify(new, "m1", None, NOW).key_id == "k2"
    refused(ring1, new, "unknown_kid")
    with pytest.raises(ValueError):
        ring2.without("k2")  # the current key
    assert ring2.with_current("k1").current is k1


def test_a_token_checked_once_is_still_checked_against_each_request(monkeypatch: Any) -> None:
    """The keyring remembers tokens whose signature checked out (players resend the same
    token with every request); media, address and time are checked on every request, and
    only the exact token string is remembered."""
    ring = Keyring([HS])
    token = issue(ring, client_ip="192.0.2.7", user="alice", countries=["DE"])
    first = ring.verify(token, "m1", "192.0.2.7", NOW)
    signatures = Counter[str]()
    real_verify = SigningKey.verify

    def counted(key: SigningKey, message: bytes, signature: bytes) -> bool:
        signatures[key.kid] += 1
        return real_verify(key, message, signature)

    monkeypatch.setattr(SigningKey, "verify", counted)
    assert ring.verify(token, "m1", "192.0.2.7", NOW + 10) == first
    assert signatures["hs1"] == 0  # remembered: no second signature check
    refused(ring, token, "wrong_media", media="m2", ip="192.0.2.7")
    refused(ring, token, "ip_mismatch", ip="192.0.2.8")
    refused(ring, token, "token_expired", ip="192.0.2.7", now=NOW + 600 + 30)
    head, payload, sig = token.split(".")
    for forged in (f"{head}.{payload}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
                   f"{head}.{b64json(claims(med='m2', ip='192.0.2.7'))}.{sig}"):
        refused(ring, forged, "bad_signature", ip="192.0.2.7")
    assert signatures["hs1"] == 2  # each forgery was checked in full
    # A keyring is never changed: a rotation that drops the key forgets what it signed.
    other = SigningKey.hs256("hs2", hashlib.sha256(b"hs2").digest())
    refused(ring.rotate(other).without("hs1"), token, "unknown_kid", ip="192.0.2.7")


def test_keyring_settings_survive_rotation() -> None:
    ring = Keyring([HS], issuer="lms", leeway=5, allow_any_media=True).rotate(ES)
    assert (ring.issuer, ring.leeway, ring.allow_any_media) == ("lms", 5, True)


def test_from_config() -> None:
    es_pem, ed_pem = ES.private_pem(), ED.private_pem().decode()
    ring = Keyring.from_config([f"hs1:{base64.b64encode(SECRET).decode()}",
                                f"hs2:{b64(bytes(range(40)))}"],  # URL-safe, unpadded
                               [("es1", es_pem), ("ed1", ed_pem)], "es1")
    assert [(k.kid, k.alg) for k in ring.keys] == [
        ("hs1", "HS256"), ("hs2", "HS256"), ("es1", "ES256"), ("ed1", "EdDSA")]
    assert jwt.get_unverified_header(issue(ring))["kid"] == "es1"
    for key in (HS, ES, ED):  # the same key material: tokens from the originals verify
        assert ring.verify(issue(Keyring([key])), "m1", None, NOW).key_id == key.kid
    single = Keyring.from_config([f"only:{b64(SECRET)}"])
    assert single.current.kid == "only"


def _rsa_pem() -> bytes:
    return rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


@pytest.mark.parametrize(("hs", "pems", "current"), [
    ([f"k1:{b64(bytes(31))}"], [], None),  # 31 bytes
    (["k1:not base64!"], [], None),
    ([b64(SECRET)], [], None),  # no kid
    ([f"bad kid:{b64(SECRET)}"], [], None),
    ([f"k1:{b64(SECRET)}", f"k1:{b64(SECRET)}"], [], "k1"),  # twice
    ([f"k1:{b64(SECRET)}"], [], "k2"),  # unknown current
    ([f"k1:{b64(SECRET)}", f"k2:{b64(SECRET)}"], [], None),  # ambiguous current
    ([], [], None),  # no keys
    ([], [("r1", _rsa_pem())], None),
    ([], [("e1", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")], None),
    ([], [("e1", ES.public_key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))], None),
    ([], [("e1", serialization.load_pem_private_key(ES.private_pem(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))], None),  # encrypted
    ([], [("p384", ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))], None),
])
def test_from_config_refuses(hs: list[str], pems: list[tuple[str, bytes]],
                             current: str | None) -> None:
    with pytest.raises(ValueError) as info:
        Keyring.from_config(hs, pems, current)
    assert b64(SECRET) not in str(info.value) and "BEGIN" not in str(info.value)


def test_key_material_stays_out_of_repr() -> None:
    for key in (HS, ES, ED):
        assert repr(key) == f"SigningKey(kid={key.kid!r}, alg={key.alg!r})"
    assert SECRET.hex() not in repr(Keyring([HS]).keys)


# -- JWKS -------------------------------------------------------------------------------------


def test_jwks_lists_public_keys_that_verify_our_tokens() -> None:
    retired = generate_es256("es0")
    ring = Keyring([retired, HS, ES, ED], "es1")
    document = json.loads(json.dumps(jwks(ring)))  # plain JSON
    assert [k["kid"] for k in document["keys"]] == ["es0", "es1", "ed1"]  # never hs1
    assert b64(SECRET) not in json.dumps(document)
    by_kid = {k["kid"]: k for k in document["keys"]}
    assert {k: v for k, v in by_kid["es1"].items() if k not in "xy"} == {
        "kty": "EC", "crv": "P-256", "kid": "es1", "alg": "ES256", "use": "sig"}
    assert len(base64.urlsafe_b64decode(by_kid["es1"]["x"] + "=")) == 32
    assert len(base64.urlsafe_b64decode(by_kid["es1"]["y"] + "=")) == 32
    assert {k: v for k, v in by_kid["ed1"].items() if k != "x"} == {
        "kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA", "use": "sig"}
    for key in (retired, ES, ED):
        jwk = jwt.PyJWK(by_kid[key.kid])
        token = issue(Keyring([key]), user="u1")
        payload = jwt.decode(token, jwk, algorithms=[key.alg], audience=AUDIENCE,
                             options={"verify_exp": False})
        assert (payload["med"], payload["sub"]) == ("m1", "u1")
        stranger = issue(Keyring([{"ES256": generate_es256, "EdDSA": generate_eddsa}[key.alg](
            key.kid)]))
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(stranger, jwk, algorithms=[key.alg], audience=AUDIENCE,
                       options={"verify_exp": False})


def test_jwks_of_a_secret_only_keyring_is_empty() -> None:
    assert jwks(Keyring([HS])) == {"keys": []}


# -- mutation fuzz ----------------------------------------------------------------------------

FUZZ_RING = Keyring([HS, ES, ED])
FUZZ_TOKENS = {alg: issue(Keyring([KEYS[alg]]), user="u1", session="s1", client_ip="192.0.2.1",
                          countries=["DE"], not_before=NOW - 10) for alg in ALGS}
FUZZ_CLAIMS = {alg: FUZZ_RING.verify(t, "m1", "192.0.2.1", NOW) for alg, t in FUZZ_TOKENS.items()}
FUZZ_CHARS = string.ascii_letters + string.digits + "-_=.+/ \n\t\x00é€"

position = st.integers(0, 400)
MUTATION = st.one_of(
    st.tuples(st.just("insert"), position, st.sampled_from(FUZZ_CHARS)),
    st.tuples(st.just("delete"), position),
    st.tuples(st.just("replace"), position, st.sampled_from(FUZZ_CHARS)),
    st.tuples(st.just("swap"), st.permutations([0, 1, 2])),
    st.tuples(st.just("duplicate"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("realg"),
              st.sampled_from(["none", "None", "", "HS256", "HS384", "HS512", "ES256", "ES384",
                               "EdDSA", "RS256", "PS256"]),
              st.sampled_from([None, "hs1", "es1", "ed1", "k9", ""])),
    st.tuples(st.just("pad"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("low bits"), st.integers(0, 2)),
    st.tuples(st.just("standard alphabet"), st.integers(0, 2)),
)


def mutate(token: str, mutation: tuple[Any, ...]) -> str:
    kind, *args = mutation
    segments = token.split(".")
    if kind in ("insert", "delete", "replace"):
        at = args[0] % (len(token) + 1)
        if kind == "insert":
            return token[:at] + args[1] + token[at:]
        return token[:at] + (args[1] if kind == "replace" else "") + token[at + 1:]
    if kind == "swap":
        return ".".join(segments[i] for i in args[0]) if len(segments) == 3 else token
    if kind == "duplicate":
        segment = segments[args[0] % len(segments)]
        return ".".join([*segments[: args[1]], segment, *segments[args[1]:]])
    if kind == "realg":  # re-encode the header with another alg (and kid)
        try:
            header = json.loads(base64.urlsafe_b64decode(segments[0] + "=="))
            header["alg"] = args[0]
            if args[1] is not None:
                header["kid"] = args[1]
        except Exception:  # an earlier mutation broke the header: leave it
            return token
        return ".".join([b64json(header), *segments[1:]])
    i = args[0] % len(segments)
    segment = segments[i]
    if kind == "pad":
        segment += "=" * args[1]
    elif kind == "low bits" and segment:
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        if segment[-1] in alphabet:
            segment = segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]
    elif kind == "standard alphabet":
        segment = segment.replace("-", "+").replace("_", "/")
    segments[i] = segment
    return ".".join(segments)


def test_mutated_tokens_are_refused_or_unchanged() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=500, deadline=None, database=None)
    @given(alg=st.sampled_from(ALGS), mutations=st.lists(MUTATION, min_size=1, max_size=4))
    def check(alg: str, mutations: list[tuple[Any, ...]]) -> None:
        token = FUZZ_TOKENS[alg]
        for mutation in mutations:
            token = mutate(token, mutation)
        try:  # anything but a TokenError escapes and fails the test
            result = FUZZ_RING.verify(token, "m1", "192.0.2.1", NOW)
        except TokenError as error:
            seen[error.code] += 1
            return
        seen["accepted"] += 1
        if token != FUZZ_TOKENS[alg]:
            seen["altered accepted"] += 1
        if result != FUZZ_CLAIMS[alg]:
            seen["different claims"] += 1
        assert result == FUZZ_CLAIMS[alg]

    check()
    assert seen["different claims"] == 0
    assert seen["altered accepted"] == 0  # strict base64url: no second spelling of a token
    # the fuzz reaches past the parser: refusals at several stages
    assert {"token_malformed", "alg_not_allowed", "bad_signature"} <= set(seen), seen
