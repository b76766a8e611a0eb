"""`/api/media`: list, read, edit, delete, upload, process, status and progress events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..library.records import Job, Media
from ..library.repository import CursorError, MediaQuery
from ..library.webhooks import SignatureError, verify
from ..origin.http import read_body
from .context import (
    ANALYTICS,
    LIBRARY,
    NOTIFIER,
    PROCESSING_DEFAULTS,
    SERVICE,
    SHUTTING_DOWN,
    WEBHOOK_SECRETS,
    principal,
)
from .errors import ApiError
from .multipart import receive_upload
from .validation import (
    LANGUAGE,
    load_json_object,
    media_fields,
    processing_config,
    status_filter,
    type_filter,
)

UPLOADS_DIR = web.AppKey("uploads_dir", Path)
MAX_UPLOAD = web.AppKey("max_upload", int)
PUBLIC_URL = web.AppKey("public_url", str)
SSE_KEEPALIVE = 15.0
SSE_SETTLE = 5.0  # seconds `done` waits for the media status to follow its job's end
MAX_CAPTIONS = 8 * 1024 * 1024


def _require(request: web.Request, action: str) -> None:
    if not principal(request).may(action):
        raise ApiError(403, "forbidden", f"this API key may not {action} media")


async def visible_media(request: web.Request, media_id: str | None = None,
                        action: str = "read") -> Media:
    """The media item named in the URL, if this key's organization may see it (else 404)
    and its `organization.permissions` let this key's role do `action` (else 403).

    Permissions name actions per role ([{role, actions}]); a role the list does not mention
    keeps its defaults, admins are never restricted."""
    media_id = media_id or request.match_info["media_id"]
    media = await request.config_dict[LIBRARY].get_media(media_id)
    who = principal(request)
    if media is None or not who.sees(media.organization_id):
        raise ApiError(404, "media_not_found", f"no media {media_id!r}")
    granted = [p["actions"] for p in media.permissions if p.get("role") == who.role]
    if who.role != "admin" and granted and not any(action in a for a in granted):
        raise ApiError(403, "forbidden", f"this media's permissions do not let "
                       f"{who.role}s {action} it")
    return media


def record(request: web.Request, media: Media) -> dict[str, Any]:
    return media.to_json(request.config_dict[PUBLIC_URL])


def status_of(media_id: str, media_status: str, job: Job | None) -> dict[str, Any]:
    """GET .../status: processing|ready|failed with the latest job's stage and progress."""
    status = "ready" if media_status == "archived" else media_status
    return {
        "id": media_id, "status": status, "mediaStatus": media_status,
        "jobId": job.id if job else None, "jobStatus": job.status if job else None,
        "stage": job.stage if job else None,
        "percentage": round(job.percentage, 1) if job else None,
        "error": job.error if job else None,
    }


async def list_media(request: web.Request) -> web.Response:
    _require(request, "read")
    q = request.rel_url.query
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit must be a number") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_query", "limit must be between 1 and 100")
    org = principal(request).organization_id or q.get("organization")
    query = MediaQuery(type=type_filter(q.get("type")), status=status_filter(q.get("status")),
                       tag=q.get("tag", "").lower() or None, language=q.get("language"),
                       organization_id=org, q=q.get("q"),
                       sort=q.get("sort", "-createdAt"), limit=limit, cursor=q.get("cursor"))
    try:
        items, cursor = await request.config_dict[LIBRARY].list_media(query)
    except CursorError as e:
        raise ApiError(400, "invalid_query", str(e)) from None
    return web.json_response({"items": [record(request, m) for m in items],
                              "nextCursor": cursor})


async def get_media(request: web.Request) -> web.Response:
    _require(request, "read")
    media = await visible_media(request)
    body = record(request, media)
    reader = request.config_dict.get(ANALYTICS)  # live totals, one Redis round trip
    totals = await reader.record_block(media.id) if reader is not None else None
    if totals is not None:
        body["analytics"] = totals
    return web.json_response(body)


async def patch_media(request: web.Request) -> web.Response:
    _require(request, "write")
    media = await visible_media(request, action="write")
    fields = media_fields(load_json_object(await request.read(), "body"), creating=False)
    values: dict[str, Any] = {k: fields[k] for k in ("title", "description", "type",
                                                     "language", "permissions", "access")
                              if k in fields}
    if "copyright" in fields:
        values["meta"] = {**media.meta, "copyright": fields["copyright"]}
    if "type" in fields:
        values["meta"] = {**values.get("meta", media.meta), "typeGiven": True}
    if "organization" in fields:
        if principal(request).organization_id is not None:
            raise ApiError(403, "forbidden", "only keys without an organization may move media")
        values["organization_id"] = fields["organization"]
    if "status" in fields:
        if fields["status"] == "ready" and media.generation is None:
            raise ApiError(409, "not_playable", "media without a processed version is not ready")
        if media.status not in ("ready", "archived"):
            raise ApiError(409, "media_busy", f"media is {media.status}")
        values["status"] = fields["status"]
    await request.config_dict[LIBRARY].update_media(media.id, values, fields.get("tags"))
    if "access" in fields or "organization" in fields:  # rules apply at once
        request.config_dict[NOTIFIER].published(media.id)
    return web.json_response(record(request, await visible_media(request)))


async def delete_media(request: web.Request) -> web.Response:
    _require(request, "delete")
    media = await visible_media(request, action="delete")
    await request.config_dict[SERVICE].delete(media.id)
    return web.Response(status=204)


async def _receive(request: web.Request) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    upload = await receive_upload(request, request.config_dict[UPLOADS_DIR],
                                  request.config_dict[MAX_UPLOAD])
    try:
        fields = media_fields(upload.metadata, creating=True)
        processing = processing_config(upload.processing,
                                       request.config_dict[PROCESSING_DEFAULTS])
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    return upload, fields, processing


async def upload_media(request: web.Request) -> web.Response:
    """POST /api/media/upload: a new media item from a multipart upload."""
    _require(request, "upload")
    who = principal(request)
    upload, fields, processing = await _receive(request)
    if "organization" in fields and who.organization_id not in (None, fields["organization"]):
        upload.path.unlink(missing_ok=True)
        raise ApiError(403, "forbidden", "this API key uploads into its own organization only")
    media, job = await request.config_dict[SERVICE].ingest(
        upload.path, upload.file_name, fields, processing, who.organization_id)
    body = {**record(request, media), "jobId": job.id}
    return web.json_response(body, status=201, headers={"Location": f"/api/media/{media.id}"})


async def replace_media(request: web.Request) -> web.Response:
    """POST /api/media/{id}/upload: a new version; the current one plays until it is ready."""
    _require(request, "upload")
    media = await visible_media(request, action="upload")
    upload, fields, processing = await _receive(request)
    if fields:
        await request.config_dict[LIBRARY].update_media(
            media.id, {k: v for k, v in fields.items() if k in ("title", "description")},
            fields.get("tags"))
    media, job = await request.config_dict[SERVICE].ingest(
        upload.path, upload.file_name, {}, processing, media.organization_id, media.id)
    return web.json_response({**record(request, media), "jobId": job.id}, status=201)


async def process_media(request: web.Request) -> web.Response:
    _require(request, "process")
    media = await visible_media(request, action="process")
    config = processing_config(load_json_object(await request.read(), "body"),
                               request.config_dict[PROCESSING_DEFAULTS])
    job = await request.config_dict[SERVICE].process(media.id, config)
    return web.json_response({"jobId": job.id, "job": job.to_json()}, status=202)


async def add_captions(request: web.Request) -> web.Response:
    """PUT /api/media/{id}/captions/{language}: a WebVTT document as the body."""
    _require(request, "write")
    media = await visible_media(request, action="write")
    language = request.match_info["language"]
    if not LANGUAGE.match(language):
        raise ApiError(422, "invalid_field", "language: must be a BCP 47 tag like en or pt-BR")
    body = await read_body(request, MAX_CAPTIONS)
    if body is None:
        raise ApiError(413, "too_large", f"captions are limited to {MAX_CAPTIONS} bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_captions", "captions must be UTF-8 WebVTT") from None
    media = await request.config_dict[SERVICE].add_captions(media.id, language, text)
    return web.json_response(record(request, media))


async def media_status(request: web.Request) -> web.Response:
    _require(request, "read")
    media = await visible_media(request)
    return web.json_response(status_of(media.id, media.status, media.latest_job))


async def purge_version(request: web.Request) -> web.Response:
    _require(request, "delete")
    media = await visible_media(request, action="delete")
    await request.config_dict[SERVICE].purge(media.id, int(request.match_info["generation"]))
    return web.Response(status=204)


async def media_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `progress` whenever the status changes, `done` at the end."""
    _require(request, "read")
    media = await visible_media(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    library, notifier = request.config_dict[LIBRARY], request.config_dict[NOTIFIER]
    stopping = request.config_dict[SHUTTING_DOWN]
    last: dict[str, Any] | None = None
    sent_at = time.monotonic()
    settle_by: float | None = None
    n = 0
    while not stopping.is_set():
        current = await library.media_state(media.id)
        if current is None:
            await resp.write(b"event: deleted\ndata: {}\n\n")
            break
        media_status, job = current
        state = status_of(media.id, media_status, job)
        if state != last:
            n += 1
            await resp.write(f"id: {n}\nevent: progress\ndata: {json.dumps(state)}\n\n".encode())
            last, sent_at = state, time.monotonic()
        if job is not None and job.finished and media_status == "processing":
            # The job's end and the media status it leads to (ready/failed) are separate
            # writes: wait for the status, so that `done` never reports "processing".
            settle_by = settle_by or time.monotonic() + SSE_SETTLE
            if time.monotonic() < settle_by:
                await notifier.wait(media.id, 0.1)
                continue
        if job is None or job.finished:
            await resp.write(f"event: done\ndata: {json.dumps(state)}\n\n".encode())
            break
        if time.monotonic() - sent_at > SSE_KEEPALIVE:
            await resp.write(b": keepalive\n\n")
            sent_at = time.monotonic()
        await notifier.wait(media.id, 1.0)
    await resp.write_eof()
    return resp


async def visible_job(request: web.Request, action: str) -> Job:
    """The job named in the URL, if this key may `action` its media (else 404/403)."""
    _require(request, action)
    job = await request.config_dict[LIBRARY].get_job(request.match_info["job_id"])
    if job is None:
        raise ApiError(404, "job_not_found", "no such job")
    await visible_media(request, job.media_id, action)
    return job


async def get_job(request: web.Request) -> web.Response:
    return web.json_response((await visible_job(request, "read")).to_json())


async def cancel_job(request: web.Request) -> web.Response:
    job = await visible_job(request, "process")
    return web.json_response((await request.config_dict[SERVICE].cancel(job.id)).to_json())


async def retry_job(request: web.Request) -> web.Response:
    job = await visible_job(request, "process")
    return web.json_response((await request.config_dict[SERVICE].retry(job.id)).to_json(),
                             status=202)


async def processor_webhook(request: web.Request) -> web.Response:
    """POST /api/media/webhook: an external processor reports on a job (HMAC-signed)."""
    secrets = request.config_dict[WEBHOOK_SECRETS]
    body = await read_body(request, 256 * 1024)
    if body is None:
        raise ApiError(413, "too_large", "webhook bodies are limited to 256 KiB")
    if not secrets:
        raise ApiError(401, "unauthorized", "no webhook secret is configured")
    try:
        verify(secrets, body, request.headers.get("Mediaorigin-Signature"), time.time())
    except SignatureError as e:
        raise ApiError(401, e.code, e.message) from None
    update = load_json_object(body, "body")
    job = await request.config_dict[SERVICE].external_update(update)
    return web.json_response(job.to_json())


def add_routes(api: web.Application) -> None:
    r = api.router
    media_id = "{media_id:[A-Za-z0-9_-]{1,64}}"
    r.add_post("/media/upload", upload_media)
    r.add_post("/media/webhook", processor_webhook, name="processor_webhook")
    r.add_get("/media", list_media)
    r.add_get(f"/media/{media_id}", get_media)
    r.add_patch(f"/media/{media_id}", patch_media)
    r.add_delete(f"/media/{media_id}", delete_media)
    r.add_post(f"/media/{media_id}/upload", replace_media)
    r.add_post(f"/media/{media_id}/process", process_media)
    r.add_get(f"/media/{media_id}/status", media_status)
    r.add_put(f"/media/{media_id}/captions/{{language:[A-Za-z0-9-]{{1,35}}}}", add_captions)
    r.add_get(f"/media/{media_id}/events", media_events)
    r.add_delete(f"/media/{media_id}/versions/{{generation:[0-9]{{1,6}}}}", purge_version)
    job_id = "{job_id:[A-Za-z0-9_-]{1,64}}"
    r.add_get(f"/jobs/{job_id}", get_job)
    r.add_post(f"/jobs/{job_id}/cancel", cancel_job)
    r.add_post(f"/jobs/{job_id}/retry", retry_job)
