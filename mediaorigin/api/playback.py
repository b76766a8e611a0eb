"""Playback credentials from the management API: tokens, ready-to-play URLs, the JWKS.

`GET /api/media/{id}/token` issues a playback token for a viewer; `GET /api/media/{id}/stream`
answers the URL a player should open (the token riding on it), `GET /.well-known/jwks.json`
publishes the public token keys so a CDN or another service can check tokens itself.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ..auth import cloudfront
from ..auth.jwks import jwks
from ..auth.signed_urls import sign_url
from ..config import Config
from ..origin.routes import GUARD, PLAYBACK
from .errors import ApiError
from .media import PUBLIC_URL, _require, visible_media

MAX_TTL = 7 * 24 * 3600
GUARD_TTL = web.AppKey("token_ttl", float)
# (domain, key pair id, RSA private key) when CloudFront signing is configured, else None.
CLOUDFRONT = web.AppKey("cloudfront", object)


def cloudfront_signer(config: Config) -> tuple[str, str, Any] | None:
    a = config.auth
    if not (a.cloudfront_domain and a.cloudfront_key_pair_id and a.cloudfront_private_key):
        return None
    pem = config.path(a.cloudfront_private_key).read_bytes()
    return a.cloudfront_domain, a.cloudfront_key_pair_id, load_pem_private_key(pem, None)
PROTOCOLS = {"hls": "master.m3u8", "hls-ts": "master-ts.m3u8", "dash": "manifest.mpd"}
DRM_MODES = ("none", "aes-128", "sample-aes", "cenc", "cbcs", "clearkey")
DRM_PROTOCOLS = {"aes-128": ("hls", "hls-ts"), "sample-aes": ("hls-ts",), "cenc": ("dash",),
                 "cbcs": ("dash", "hls"),
                 "clearkey": ("dash",)}


def _ttl(request: web.Request) -> int:
    raw = request.rel_url.query.get("ttl")
    default = int(request.config_dict[GUARD_TTL])
    try:
        ttl = int(raw) if raw is not None else default
    except ValueError:
        raise ApiError(422, "invalid_field", "ttl: seconds as a whole number") from None
    if not 10 <= ttl <= MAX_TTL:
        raise ApiError(422, "invalid_field", f"ttl: between 10 and {MAX_TTL} seconds")
    return ttl


def _issue(request: web.Request, media_id: str, ttl: int) -> tuple[str, int]:
    q = request.rel_url.query
    ip = q.get("ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ApiError(422, "invalid_field", "ip: an IPv4 or IPv6 address") from None
    countries = None
    if q.get("countries"):
        countries = [c.strip().upper() for c in q["countries"].split(",") if c.strip()]
        if not all(len(c) == 2 and c.isalpha() for c in countries):
            raise ApiError(422, "invalid_field", "countries: ISO 3166 codes like DE,AT")
    now = time.time()
    keyring = request.config_dict[GUARD].keyring
    token = keyring.issue(now=now, media=media_id, ttl=ttl, user=q.get("user"),
                          session=q.get("session"), client_ip=ip, countries=countries)
    return token, int(now) + ttl


async def issue_token(request: web.Request) -> web.Response:
    _require(request, "read")
    media = await visible_media(request)
    token, expires = _issue(request, media.id, _ttl(request))
    return web.json_response({"mediaId": media.id, "token": token, "expiresAt": expires,
                              "user": request.rel_url.query.get("user")})


async def stream_url(request: web.Request) -> web.Response:
    """The URL to play: protocol hls|hls-ts|dash, quality auto or a rung, with a token."""
    _require(request, "read")
    media = await visible_media(request)
    q = request.rel_url.query
    protocol = q.get("protocol", "hls")
    if protocol not in PROTOCOLS:
        raise ApiError(422, "invalid_field", f"protocol: one of {', '.join(PROTOCOLS)}")
    drm = q.get("drm", "none")
    if drm not in DRM_MODES:
        raise ApiError(422, "invalid_field", f"drm: one of {', '.join(DRM_MODES)}")
    if drm != "none" and protocol not in DRM_PROTOCOLS[drm]:
        raise ApiError(422, "invalid_field",
                       f"drm: {drm} goes with protocol {' or '.join(DRM_PROTOCOLS[drm])}")
    path = f"/vod/{media.id}/{PROTOCOLS[protocol]}"
    quality = q.get("quality", "auto")
    if quality != "auto":
        if protocol == "dash":
            raise ApiError(422, "invalid_field", "quality: DASH players choose the rung")
        prep = await request.config_dict[PLAYBACK].prepare(media.id, None)
        wanted = quality.removesuffix("p")
        match = [r for r in prep.presentation.of_kind("video")
                 if str(r.track.codec.height) == wanted]
        if not match:
            raise ApiError(422, "invalid_field", f"quality: no {quality} rendition")
        name = "media-ts.m3u8" if protocol == "hls-ts" else "media.m3u8"
        path = f"/vod/{media.id}/{match[0].id}/{name}"
    body: dict[str, Any] = {"mediaId": media.id, "protocol": protocol, "quality": quality,
                            "drm": drm}
    query: dict[str, str] = {}
    if drm != "none":
        query["drm"] = drm
    if q.get("token", "true") != "false":
        token, expires = _issue(request, media.id, _ttl(request))
        query["token"] = token
        body.update(token=token, expiresAt=expires)
    base = request.config_dict[PUBLIC_URL]
    cdn = q.get("cdn", "none")
    expires = int(time.time()) + _ttl(request)
    if cdn == "signed":  # our HMAC over the presentation's prefix, checkable at any edge
        secrets = request.config_dict[GUARD].url_secrets
        if not secrets:
            raise ApiError(409, "not_configured", "auth.signed_url_secrets is empty")
        kid = next(reversed(secrets))
        signed = sign_url(path + ("?" + urlencode(query) if query else ""),
                          f"/vod/{media.id}/", secrets[kid], kid, expires)
        query = dict(parse_qsl(signed.split("?", 1)[1]))
        body["expiresAt"] = min(expires, body.get("expiresAt", expires))
    elif cdn == "cloudfront":
        cf = request.config_dict[CLOUDFRONT]
        if cf is None:
            raise ApiError(409, "not_configured", "auth.cloudfront_* are not set")
        domain, key_pair_id, private_key = cf
        base = f"https://{domain}"
        resource = f"{base}/vod/{media.id}/*"  # one policy for every child URL
        policy = cloudfront.custom_policy(resource, expires)
        unsigned = base + path + ("?" + urlencode(query) if query else "")
        signed = cloudfront.sign_url(unsigned, key_pair_id, private_key, policy=policy)
        query = dict(parse_qsl(signed.split("?", 1)[1]))
        body["cookies"] = cloudfront.signed_cookies(resource, key_pair_id, private_key,
                                                    expires)
        body["expiresAt"] = min(expires, body.get("expiresAt", expires))
    elif cdn != "none":
        raise ApiError(422, "invalid_field", "cdn: none, signed or cloudfront")
    suffix = "?" + urlencode(query) if query else ""
    body["url"] = base + path + suffix
    if drm in ("aes-128", "sample-aes"):
        body["keyUrl"] = f"{base}/vod/{media.id}/key{suffix}"
    elif drm in ("cenc", "cbcs", "clearkey"):
        body["licenseUrl"] = f"{base}/vod/{media.id}/license/clearkey{suffix}"
    return web.json_response(body)


async def jwks_document(request: web.Request) -> web.Response:
    return web.json_response(jwks(request.app[GUARD].keyring),
                             headers={"Cache-Control": "public, max-age=300"})



def add_routes(api: web.Application) -> None:
    media_id = "{media_id:[A-Za-z0-9_-]{1,64}}"
    api.router.add_get(f"/media/{media_id}/token", issue_token)
    api.router.add_get(f"/media/{media_id}/stream", stream_url)
