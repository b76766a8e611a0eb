"""One authorization for every playback request (manifests, segments, assets, keys, licenses).

Credentials: a playback token (`?token=` JWT) or a CDN signed URL (`?sig=` over a path
prefix); with `[auth] playback = "open"` none is needed, but one that is sent is still checked.
Then the access rules (global config, the media item's own), the token's own country list,
and a per-client rate limit. The client address is the TCP peer, or X-Forwarded-For only when
the peer is a configured trusted proxy.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config import Config
from ..errors import ClientError
from .apikeys import bootstrap_secret
from .client_ip import IPAddress, client_ip, parse_networks
from .geo import GeoIP
from .ratelimit import RateLimiter
from .rules import AccessRules, RequestInfo, evaluate, rules_from_dict
from .signed_urls import verify_signed
from .tokens import (
    MIN_HS256_SECRET,
    Keyring,
    PlaybackClaims,
    SigningKey,
    parse_hs256_secret,
    parse_kid_secret,
)

RATE_BURST = 10  # a player fetches a playlist and a few segments at once
MERGED_RULES_KEPT = 10_000
CLIENTS_KEPT = 10_000  # (peer, X-Forwarded-For) pairs remembered


class AccessDenied(ClientError):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(status, code, message)


@dataclass(frozen=True)
class Grant:
    """Who is playing: from the token (user, session) or anonymous."""

    via: str  # "token", "signed_url" or "open"
    user: str | None = None
    session: str | None = None
    claims: PlaybackClaims | None = None
    country: str | None = None  # the client's, when a geo database is configured


class PlaybackGuard:
    def __init__(self, mode: str, keyring: Keyring, url_secrets: dict[str, bytes],
                 trusted_proxies: list[Any], geo: GeoIP | None, rules: AccessRules,
                 limiter: RateLimiter | None,
                 organization_rules: dict[str, AccessRules] | None = None) -> None:
        self.organization_rules = organization_rules or {}
        # media id -> ((its access JSON, its organization), the merged rules): parsing and
        # merging happen once per change of a media item's rules, not on every segment.
        self._merged: dict[str, tuple[tuple[Any, str | None], AccessRules]] = {}
        # (peer, X-Forwarded-For) -> the client's address and its text: every request of a
        # connection asks again, and parsing and printing addresses was ~5% of a live crowd.
        self._clients: dict[tuple[str, str | None], tuple[IPAddress, str]] = {}
        self.mode = mode
        self.keyring = keyring
        self.url_secrets = url_secrets
        self.trusted_proxies = trusted_proxies
        self.geo = geo
        self.rules = rules
        self.limiter = limiter

    @classmethod
    def from_config(cls, config: Config) -> PlaybackGuard:
        a = config.auth
        secrets_ = [s for s in a.token_secrets.split(",") if s.strip()]
        pems = []
        for spec in filter(None, (s.strip() for s in a.token_keys.split(","))):
            kid, _, path = spec.partition(":")
            pems.append((kid, config.path(path).read_bytes()))
        if not secrets_ and not pems:
            secret = bootstrap_secret("", config.path(a.token_secret_file),
                                      lambda: "k1:" + base64.b64encode(
                                          secrets.token_bytes(32)).decode())
            secrets_ = [secret]
        keys: list[SigningKey] = [parse_hs256_secret(s) for s in secrets_]
        keys += [SigningKey.from_pem(kid, pem) for kid, pem in pems]
        keyring = Keyring(keys, a.token_current_kid or None, issuer=a.token_issuer)
        url_secrets = dict(_kid_secret(spec) for spec in a.signed_url_secrets.split(",")
                           if spec.strip())
        geo = GeoIP(config.path(a.geoip_database)) if a.geoip_database else None
        rules = rules_from_dict(json.loads(a.rules)) if a.rules.strip() else AccessRules()
        limiter = RateLimiter(a.rate_limit, max(1, int(a.rate_limit * RATE_BURST))) \
            if a.rate_limit > 0 else None
        org_rules = {org: rules_from_dict(r) for org, r in
                     json.loads(a.organization_rules).items()} \
            if a.organization_rules.strip() else {}
        return cls(a.playback, keyring, url_secrets, parse_networks(a.trusted_proxies), geo,
                   rules, limiter, org_rules)

    def close(self) -> None:
        if self.geo is not None:
            self.geo.close()

    def client(self, request: web.Request) -> tuple[IPAddress, str]:
        """The client's address (see client_ip.py), and as text."""
        forwarded = None
        if "X-Forwarded-For" in request.headers:
            forwarded = ", ".join(request.headers.getall("X-Forwarded-For")) or None
        key = (request.remote or "0.0.0.0", forwarded)
        known = self._clients.get(key)
        if known is None:
            if len(self._clients) >= CLIENTS_KEPT:
                self._clients.clear()
            ip = client_ip(key[0], forwarded, self.trusted_proxies)
            known = self._clients[key] = (ip, str(ip))
        return known

    def _credentials(self, request: web.Request, media_id: str, ip: str, now: float,
                     token: str | None = None) -> Grant:
        q = request.rel_url.query
        if token is None:
            token = q.get("token")
        try:
            if token is not None:
                claims = self.keyring.verify(token, media_id, ip, now)
                return Grant("token", claims.user, claims.session, claims)
            if "sig" in q:
                verify_signed(request.raw_path.split("?", 1)[0], q, self.url_secrets, now, ip)
                return Grant("signed_url")
        except ClientError:
            if self.mode == "token":
                raise
            return Grant("open")  # open playback: a bad credential just grants nothing more
        if self.mode == "token":
            raise AccessDenied("token_missing", "this media needs a playback token")
        return Grant("open")

    def precheck(self, request: web.Request) -> None:
        """In token mode a request without any credential is refused at once."""
        q = request.rel_url.query
        if self.mode == "token" and "token" not in q and "sig" not in q:
            raise AccessDenied("token_missing", "this media needs a playback token")

    def authorize(self, request: web.Request, media_id: str,
                  media_access: dict[str, Any] | None,
                  organization_id: str | None = None, token: str | None = None) -> Grant:
        """Credentials and rules for one playback request; AccessDenied otherwise. `token`:
        one sent otherwise than as `?token=` (the beacon route takes a Bearer header)."""
        now = time.time()
        ip, ip_text = self.client(request)
        if self.limiter is not None and not self.limiter.allow(ip_text, now):
            raise AccessDenied("rate_limited", "too many requests; slow down", 429)
        grant = self._credentials(request, media_id, ip_text, now, token)
        rules = self._rules_for(media_id, media_access, organization_id)
        country = self.geo.country(ip) if self.geo is not None else None
        denial = evaluate(rules, RequestInfo(ip, country, request.headers.get("Referer"),
                                             request.headers.get("Origin"), now))
        if denial is not None:
            raise AccessDenied(denial.code, denial.message)
        if grant.claims is not None and grant.claims.countries is not None and \
                country not in grant.claims.countries:
            raise AccessDenied("country_not_allowed", "not playable from this country")
        if country is None:
            return grant
        return Grant(grant.via, grant.user, grant.session, grant.claims, country)


    def _rules_for(self, media_id: str, media_access: dict[str, Any] | None,
                   organization_id: str | None) -> AccessRules:
        """Global, then the organization's, then the media item's rules, merged."""
        hit = self._merged.get(media_id)
        if hit is not None and hit[0] == (media_access, organization_id):
            return hit[1]
        layers = [self.rules]
        if organization_id in self.organization_rules:
            layers.append(self.organization_rules[organization_id])
        if media_access:
            layers.append(rules_from_dict(media_access))
        rules = AccessRules.merge(*layers) if len(layers) > 1 else self.rules
        if len(self._merged) >= MERGED_RULES_KEPT:
            self._merged.clear()
        self._merged[media_id] = ((media_access, organization_id), rules)
        return rules


def _kid_secret(spec: str) -> tuple[str, bytes]:
    """`kid:base64secret` of auth.signed_url_secrets, at least 32 bytes like token secrets."""
    kid, secret = parse_kid_secret(spec, "signed URL secret")
    if len(secret) < MIN_HS256_SECRET:
        raise ValueError(f"signed URL secrets need at least {MIN_HS256_SECRET} bytes")
    return kid, secret
