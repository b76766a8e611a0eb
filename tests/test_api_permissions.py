"""Per-media permissions ([{role, actions}]) on every management action, and the audit log."""

from __future__ import annotations

import json
from pathlib import Path

from library_fixtures import ADMIN_KEY, INSTRUCTOR_KEY, STUDENT_KEY, auth
from origin_server import OriginThread


def test_media_permissions_and_audit_log(library_origin: OriginThread,
                                         av_faststart: Path) -> None:
    origin = library_origin
    media_id = origin.add([av_faststart], "Permissions")
    # Into organization org-a, where the instructor and student keys live.
    assert origin.request("PATCH", f"/api/media/{media_id}", json.dumps(
        {"organization": "org-a"}).encode(), auth()).status == 200

    def status(method: str, path: str, key: str, body: dict | None = None) -> int:
        return origin.request(method, path, json.dumps(body).encode() if body else None,
                              auth(key)).status

    patch = {"description": "changed"}
    assert status("PATCH", f"/api/media/{media_id}", INSTRUCTOR_KEY, patch) == 200
    # Instructors may only read this one now; students may not even read it.
    perms = {"permissions": [{"role": "instructor", "actions": ["read"]},
                             {"role": "student", "actions": []}]}
    assert status("PATCH", f"/api/media/{media_id}", ADMIN_KEY, perms) == 200
    assert status("GET", f"/api/media/{media_id}", INSTRUCTOR_KEY) == 200
    assert status("PATCH", f"/api/media/{media_id}", INSTRUCTOR_KEY, patch) == 403
    assert status("DELETE", f"/api/media/{media_id}", INSTRUCTOR_KEY) == 403
    assert status("POST", f"/api/media/{media_id}/process", INSTRUCTOR_KEY, {}) == 403
    assert status("GET", f"/api/media/{media_id}", STUDENT_KEY) == 403
    assert status("GET", f"/api/media/{media_id}/token", STUDENT_KEY) == 403
    # Admins are never restricted by a media item's permissions.
    assert status("PATCH", f"/api/media/{media_id}", ADMIN_KEY, patch) == 200

    entries = origin.get(f"/api/audit?media={media_id}", auth()).json()["entries"]
    actions = [(e["role"], e["action"], e["details"]["status"]) for e in entries]
    assert actions == [
        ("admin", "PATCH /api/media/{media_id}", 200),
        ("admin", "PATCH /api/media/{media_id}", 200),
        ("instructor", "PATCH /api/media/{media_id}", 200),
        ("admin", "PATCH /api/media/{media_id}", 200),
    ]  # newest first; refused requests change nothing and are not management actions
    assert all(len(e["actor"]) == 8 for e in entries)  # a key id, never the key
    assert ADMIN_KEY not in json.dumps(entries)
    assert origin.get("/api/audit", auth(INSTRUCTOR_KEY)).status == 403
