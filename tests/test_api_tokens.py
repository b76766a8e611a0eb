"""Bearer JWTs for the management API: roles and organizations like API keys, never
interchangeable with playback tokens; `mediaorigin token` prints both kinds."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

from library_fixtures import library_config
from origin_server import OriginThread

from mediaorigin.auth.api_tokens import issue_api_token
from mediaorigin.auth.tokens import Keyring, parse_hs256_secret

SECRET = base64.b64encode(b"a" * 32).decode()


def keyring() -> Keyring:
    return Keyring([parse_hs256_secret(f"k1:{SECRET}")], issuer="mediaorigin")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_jwts(tmp_path: Path, av_faststart: Path) -> None:
    origin = OriginThread(library_config(tmp_path, auth={
        "playback": "token", "token_secrets": f"k1:{SECRET}"})).start()
    try:
        media_id = origin.add([av_faststart], "jwt")
        now = time.time()
        admin = issue_api_token(keyring(), subject="ops", role="admin", organization=None,
                                ttl=600, now=now)
        student_b = issue_api_token(keyring(), subject="s", role="student",
                                    organization="org-b", ttl=600, now=now)
        assert origin.get("/api/media", bearer(admin)).json()["items"][0]["id"] == media_id
        assert origin.get("/api/media", bearer(student_b)).json()["items"] == []
        assert origin.request("DELETE", f"/api/media/{media_id}", None,
                              bearer(student_b)).status == 403  # students only read
        expired = issue_api_token(keyring(), subject="ops", role="admin", organization=None,
                                  ttl=1, now=now - 3600)
        playback = keyring().issue(now=now, media=media_id, ttl=600)
        forged = admin.rsplit(".", 1)[0] + ".AAAA"
        other_key = issue_api_token(
            Keyring([parse_hs256_secret("k1:" + base64.b64encode(b"x" * 32).decode())],
                    issuer="mediaorigin"), subject="x", role="admin", organization=None,
            ttl=600, now=now)
        for token in (expired, playback, forged, other_key, "a.b.c"):
            assert origin.get("/api/media", bearer(token)).status == 401, token[:20]
        # And an API token never plays.
        reply = origin.get(f"/vod/{media_id}/master.m3u8?token={admin}")
        assert reply.status == 403 and reply.json()["error"]["code"] == "wrong_audience"
        # The CLI prints both kinds with the server's keys.
        env = {"MEDIAORIGIN_AUTH_TOKEN_SECRETS": f"k1:{SECRET}", "PATH": "/usr/bin:/bin"}
        cli = [sys.executable, "-m", "mediaorigin.cli", "token"]
        api = subprocess.run([*cli, "--role", "admin"], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        assert origin.get("/api/media", bearer(api)).status == 200
        play = subprocess.run([*cli, "--media", media_id, "--user", "ada"], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        assert origin.get(f"/vod/{media_id}/master.m3u8?token={play.stdout.strip()}"
                          ).status == 200
    finally:
        origin.stop()
