"""Playback security through the real HTTP stack: tokens on every manifest, segment and asset
request, signed URLs, access rules from a generated GeoIP database behind a trusted proxy,
rate limits, and the token/stream/JWKS endpoints."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from ffmpeg_tools import framemd5
from library_fixtures import auth, library_config
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from origin_server import OriginThread

from mediaorigin.auth.signed_urls import sign_url
from mediaorigin.auth.tokens import Keyring, parse_hs256_secret

SECRET = base64.b64encode(b"s" * 32).decode()
OTHER_SECRET = base64.b64encode(b"o" * 32).decode()
URL_SECRET = base64.b64encode(b"u" * 32).decode()
GB, DE = "81.2.69.7", "2001:db8::7"  # countries in the generated GeoIP database


@pytest.fixture(scope="module")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("geo") / "country.mmdb"
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    for network, code in (("81.2.69.0/24", "GB"), ("2001:db8::/32", "DE")):
        country = {"iso_code": code, "names": {"en": code}}
        writer.insert_network(IPSet([network]), {"country": country,
                                                 "registered_country": country})
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, geoip: Path,
            av_faststart: Path) -> Iterator[tuple[OriginThread, str, str]]:
    """A token-mode origin behind a trusted proxy (127.0.0.1), with one lecture and a second
    media item."""
    root = tmp_path_factory.mktemp("secured")
    config = library_config(root, auth={
        "playback": "token", "token_secrets": f"k1:{SECRET}",
        "signed_url_secrets": f"u1:{URL_SECRET}", "trusted_proxies": "127.0.0.1/32",
        "geoip_database": str(geoip)})
    origin = OriginThread(config).start()
    first = origin.add([av_faststart], "Secured lecture")
    second = origin.add([av_faststart], "Another lecture")
    yield origin, first, second
    origin.stop()


def keyring() -> Keyring:
    return Keyring([parse_hs256_secret(f"k1:{SECRET}")], issuer="mediaorigin")


def token(media: str, **kw: object) -> str:
    return keyring().issue(now=kw.pop("now", time.time()), media=media,  # type: ignore[arg-type]
                           ttl=kw.pop("ttl", 600), **kw)  # type: ignore[arg-type]


CHILDREN = ("master.m3u8", "v0/media.m3u8", "v0/init.mp4", "v0/seg-1.m4s", "a0/seg-1.m4s",
            "master-ts.m3u8", "v0/seg-1.ts", "manifest.mpd")


def test_every_playback_request_needs_a_valid_token(secured) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, other = secured
    good = token(media_id)
    for child in CHILDREN:
        assert origin.get(f"/vod/{media_id}/{child}").status == 403, child
        reply = origin.get(f"/vod/{media_id}/{child}?token={good}")
        assert reply.status == 200, (child, reply.body[:200])
    # The token rides on every child URL the master lists.
    master = origin.get(f"/vod/{media_id}/master.m3u8?token={good}").body.decode()
    uris = [line for line in master.splitlines() if line and not line.startswith("#")]
    assert uris and all(f"token={good}" in u for u in uris)
    now = int(time.time())
    forged_none = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
                   + b"." + good.split(".")[1].encode() + b".").decode()
    cases = {
        "token_missing": "",
        "token_malformed": "not-a-token",
        "token_expired": token(media_id, now=now - 4000, ttl=60),
        "token_not_yet_valid": token(media_id, not_before=now + 3600),
        "wrong_media": token(other),
        "bad_signature": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "alg_not_allowed": forged_none,
        "unknown_kid": Keyring([parse_hs256_secret(f"k9:{OTHER_SECRET}")],
                               issuer="mediaorigin").issue(
            now=now, media=media_id, ttl=600),
        "ip_mismatch": token(media_id, client_ip="198.51.100.9"),
    }
    for code, value in cases.items():
        for child in ("master.m3u8", "v0/seg-1.m4s"):
            reply = origin.get(f"/vod/{media_id}/{child}?token={value}")
            assert reply.status == 403, (code, child)
            assert reply.json()["error"]["code"] == code, (code, reply.body)


def test_mutated_tokens_are_never_accepted(secured) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, _ = secured
    good = token(media_id)
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    accepted, tried = 0, 0
    for _ in range(300):
        chars = list(good)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.5:
                chars[i] = rng.choice(alphabet)
            elif op < 0.75:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        mutated = "".join(chars)
        if mutated == good:
            continue
        tried += 1
        reply = origin.get(f"/vod/{media_id}/v0/seg-1.m4s?token={mutated}")
        assert reply.status in (403, 400), reply.status
        accepted += reply.status == 200
    assert tried > 250 and accepted == 0


def test_ffmpeg_plays_token_protected_hls(secured, av_faststart: Path) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, _ = secured
    url = origin.url(f"/vod/{media_id}/master.m3u8?token={token(media_id)}")
    assert framemd5(url, "v:0") == framemd5(av_faststart, "v:0")


def test_signed_urls_open_a_whole_presentation(secured) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, other = secured
    secret = base64.b64decode(URL_SECRET)
    signed = sign_url(f"/vod/{media_id}/master.m3u8", f"/vod/{media_id}/", secret, "u1",
                      int(time.time()) + 600)
    query = signed.split("?", 1)[1]
    for child in CHILDREN:
        assert origin.get(f"/vod/{media_id}/{child}?{query}").status == 200, child
    assert origin.get(f"/vod/{other}/master.m3u8?{query}").json()["error"]["code"] == \
        "prefix_mismatch"
    tampered = query.replace("exp=", "exp=1")
    assert origin.get(f"/vod/{media_id}/master.m3u8?{tampered}").status == 403


def test_access_rules_geo_ip_referer_and_window(secured) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, _ = secured
    good = token(media_id)
    path = f"/vod/{media_id}/master.m3u8?token={good}"

    def patch(access: dict | None) -> None:
        reply = origin.request("PATCH", f"/api/media/{media_id}", json.dumps(
            {"access": access}).encode(), auth())
        assert reply.status == 200, reply.body

    def code(headers: dict[str, str]) -> str | int:
        reply = origin.get(path, headers)
        return reply.status if reply.status == 200 else reply.json()["error"]["code"]

    try:
        patch({"countries": {"deny": ["GB"]}})
        assert code({"X-Forwarded-For": GB}) == "country_denied"
        assert code({"X-Forwarded-For": DE}) == 200
        patch({"countries": {"allow": ["DE"]}})
        assert code({"X-Forwarded-For": DE}) == 200
        assert code({"X-Forwarded-For": GB}) == "country_not_allowed"
        assert code({"X-Forwarded-For": "192.0.2.1"}) == "country_unknown"
        # Only the nearest untrusted hop counts: a spoofed leftmost entry changes nothing.
        assert code({"X-Forwarded-For": f"{DE}, {GB}"}) == "country_not_allowed"
        patch({"networks": {"deny": ["203.0.113.0/24"]}})
        assert code({"X-Forwarded-For": "203.0.113.5"}) == "ip_denied"
        patch({"referers": ["*.example.edu"]})
        assert code({"Referer": "https://lms.example.edu/course/1"}) == 200
        assert code({"Referer": "https://example.edu.evil.test/"}) == "referer_not_allowed"
        patch({"availableFrom": int(time.time()) + 3600})
        assert code({}) == "not_yet_available"
        patch({"availableUntil": int(time.time()) - 10})
        assert code({}) == "no_longer_available"
        reply = origin.request("PATCH", f"/api/media/{media_id}", json.dumps(
            {"access": {"countries": {"deny": ["GBR"]}}}).encode(), auth())
        assert reply.status == 422 and reply.json()["error"]["code"] == "invalid_field"
    finally:
        patch(None)
    assert code({}) == 200
    # The token's own country list.
    only_gb = token(media_id, countries=["GB"])
    reply = origin.get(f"/vod/{media_id}/master.m3u8?token={only_gb}",
                       {"X-Forwarded-For": DE})
    assert reply.json()["error"]["code"] == "country_not_allowed"


def test_token_stream_and_jwks_endpoints(secured) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, _ = secured
    reply = origin.get(f"/api/media/{media_id}/token?user=u1&ttl=120", auth())
    assert reply.status == 200, reply.body
    issued = reply.json()
    claims = jwt.decode(issued["token"], base64.b64decode(SECRET), algorithms=["HS256"],
                        audience="mediaorigin-playback")
    assert claims["sub"] == "u1" and claims["med"] == media_id
    assert abs(issued["expiresAt"] - time.time() - 120) < 5
    stream = origin.get(f"/api/media/{media_id}/stream?protocol=dash", auth()).json()
    assert stream["url"].startswith(f"/vod/{media_id}/manifest.mpd?token=")
    assert origin.get(stream["url"]).status == 200
    rung = origin.get(f"/api/media/{media_id}/stream?quality=240p", auth()).json()
    assert "/v0/media.m3u8?token=" in rung["url"] and origin.get(rung["url"]).status == 200
    for query, status in (("protocol=smooth", 422), ("quality=1080p", 422), ("ttl=5", 422),
                          ("drm=playready", 422), ("drm=cenc", 422)):
        assert origin.get(f"/api/media/{media_id}/stream?{query}", auth()).status == status
    assert origin.get(f"/api/media/{media_id}/token").status == 401
    keys = origin.get("/.well-known/jwks.json").json()
    assert keys == {"keys": []}  # HS256 secrets are never published


def test_rate_limit(tmp_path: Path, av_faststart: Path) -> None:
    origin = OriginThread(library_config(tmp_path, auth={"rate_limit": 2.0})).start()
    try:
        media_id = origin.add([av_faststart], "limited")
        statuses = [origin.get(f"/vod/{media_id}/master.m3u8").status for _ in range(30)]
        assert statuses[:20] == [200] * 20 and 429 in statuses
        limited = origin.get(f"/vod/{media_id}/master.m3u8")
        assert limited.json()["error"]["code"] == "rate_limited"
    finally:
        origin.stop()


def test_concurrent_streams_per_user(tmp_path: Path, av_faststart: Path,
                                     redis_server, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """Two sessions per user at most; a third is refused until one leaves; Redis away costs
    no playback."""
    origin = OriginThread(library_config(tmp_path, auth={
        "playback": "token", "token_secrets": f"k1:{SECRET}", "max_streams_per_user": 2},
        redis={"url": redis_url})).start()
    try:
        media_id = origin.add([av_faststart], "limited streams")
        sessions = [token(media_id, user="ada", session=f"s{n}") for n in range(3)]

        def play(t: str) -> int:
            return origin.get(f"/vod/{media_id}/master.m3u8?token={t}").status

        assert [play(t) for t in sessions[:2]] == [200, 200]
        refused = origin.get(f"/vod/{media_id}/v0/seg-1.m4s?token={sessions[2]}")
        assert refused.status == 403 and refused.json()["error"]["code"] == "too_many_streams"
        assert play(sessions[0]) == 200  # a session's own requests keep its slot
        assert play(token(media_id, user="grace", session="g1")) == 200  # per user
        left = origin.request("DELETE", f"/vod/{media_id}/session?token={sessions[0]}")
        assert left.status == 204
        assert play(sessions[2]) == 200
        assert play(sessions[0]) == 403
        redis_server.stop()
        try:
            assert play(sessions[0]) == 200  # no Redis: the limit waits, playback does not
        finally:
            redis_server.start()
    finally:
        origin.stop()


def test_stream_urls_for_cdns(tmp_path: Path, av_faststart: Path) -> None:
    """/stream?cdn=signed gives our prefix-signed URL (it plays, children included);
    cdn=cloudfront a CloudFront URL and cookies that verify against the key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mediaorigin.auth import cloudfront

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "cf.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    origin = OriginThread(library_config(tmp_path, auth={
        "playback": "token", "token_secrets": f"k1:{SECRET}",
        "signed_url_secrets": f"u1:{URL_SECRET}", "cloudfront_domain": "d1.cloudfront.net",
        "cloudfront_key_pair_id": "K2JCJMDEHXQW5F", "cloudfront_private_key": str(pem)})).start()
    try:
        media_id = origin.add([av_faststart], "cdn")
        signed = origin.get(f"/api/media/{media_id}/stream?cdn=signed&token=false",
                            auth()).json()
        assert "sig=" in signed["url"] and "token=" not in signed["url"]
        assert origin.get(signed["url"]).status == 200
        child = signed["url"].replace("master.m3u8", "v0/seg-1.m4s")
        assert origin.get(child).status == 200
        cf = origin.get(f"/api/media/{media_id}/stream?cdn=cloudfront", auth()).json()
        assert cf["url"].startswith(f"https://d1.cloudfront.net/vod/{media_id}/master.m3u8?")
        keys = {"K2JCJMDEHXQW5F": key.public_key()}
        grant = cloudfront.verify_url(cf["url"], keys, time.time())
        assert grant.resource == f"https://d1.cloudfront.net/vod/{media_id}/*"
        child_url = cf["url"].replace("master.m3u8", "v0/seg-3.m4s")
        cloudfront.verify_url(child_url, keys, time.time())  # the carried query opens it
        cloudfront.verify_cookies(child_url, cf["cookies"], keys, time.time())
        assert origin.get(f"/api/media/{media_id}/stream?cdn=akamai", auth()).status == 422
    finally:
        origin.stop()


def test_organization_rules_layer(tmp_path: Path, av_faststart: Path) -> None:
    """auth.organization_rules: one organization's media follow its layer, others not."""
    origin = OriginThread(library_config(tmp_path, auth={
        "trusted_proxies": "127.0.0.1/32",
        "organization_rules": json.dumps({"org-a": {"networks": {"deny": ["203.0.113.0/24"]}}}),
    })).start()
    try:
        ours, theirs = (origin.add([av_faststart], t) for t in ("a", "b"))
        assert origin.request("PATCH", f"/api/media/{ours}", json.dumps(
            {"organization": "org-a"}).encode(), auth()).status == 200
        hop = {"X-Forwarded-For": "203.0.113.9"}
        denied = origin.get(f"/vod/{ours}/master.m3u8", hop)
        assert denied.status == 403 and denied.json()["error"]["code"] == "ip_denied"
        assert origin.get(f"/vod/{theirs}/master.m3u8", hop).status == 200
        assert origin.get(f"/vod/{ours}/master.m3u8").status == 200
    finally:
        origin.stop()
