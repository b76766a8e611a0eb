"""A finished tus upload becomes a media item, exactly like a multipart upload.

Upload-Metadata keys (tus clients send them base64-encoded): `filename`, `metadata` and
`processing` (JSON texts, as the multipart parts), or the plain fields `title`, `description`,
`type`, `language` and `tags` (comma-separated); `mediaId` makes it a new version of that item.
The response to the last PATCH names the result in `Media-Id` and `Job-Id`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import context
from .errors import ApiError
from .media import visible_media
from .tus_store import TusUpload
from .validation import load_json_object, media_fields, processing_config

PLAIN_FIELDS = ("title", "description", "type", "language")


def _fields(meta: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = load_json_object(meta.get("metadata"), "metadata")
    for key in PLAIN_FIELDS:
        if meta.get(key):
            fields.setdefault(key, meta[key])
    if meta.get("tags"):
        fields.setdefault("tags", [t for t in meta["tags"].split(",") if t.strip()])
    return media_fields(fields, creating=True)


async def on_complete(upload: TusUpload, request: web.Request) -> dict[str, str]:
    who = context.principal(request)
    if not who.may("upload"):
        raise ApiError(403, "forbidden", "this API key may not upload media")
    fields = _fields(upload.metadata)
    processing = processing_config(load_json_object(upload.metadata.get("processing"),
                                                    "processing"),
                                   request.config_dict[context.PROCESSING_DEFAULTS])
    service = request.config_dict[context.SERVICE]
    name = upload.metadata.get("filename") or upload.metadata.get("name") or "upload"
    if upload.metadata.get("mediaId"):
        existing = await visible_media(request, upload.metadata["mediaId"])
        media, job = await service.ingest(upload.path, name, {}, processing,
                                          existing.organization_id, existing.id, move=False)
    else:
        if "organization" in fields and who.organization_id not in (None,
                                                                    fields["organization"]):
            raise ApiError(403, "forbidden", "this API key uploads into its own organization")
        media, job = await service.ingest(upload.path, name, fields, processing,
                                          who.organization_id, move=False)
    return {"Media-Id": media.id, "Job-Id": job.id}
