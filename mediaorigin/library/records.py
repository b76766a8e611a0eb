"""The Media and MediaJob records of the design, as dataclasses with their JSON shape.

Rows become records in `repository.py`; records become the API's JSON here. Field names in
JSON follow the design (camelCase, nested groups); times are ISO 8601 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MEDIA_TYPES = ("video", "audio", "image", "document", "interactive")
MEDIA_STATUSES = ("processing", "ready", "failed", "archived")
JOB_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
ASSET_KINDS = ("rendition", "image", "document", "thumbnail", "poster", "preview", "sprite",
               "sprite_vtt", "caption")


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class Asset:
    kind: str
    name: str
    format: str
    storage_key: str
    size: int
    generation: int
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None
    time: float | None = None
    position: int = 0

    @property
    def url_path(self) -> str:
        """`g{n}/[run/]{name}`: where the asset route serves it under /vod/{id}/assets/."""
        return self.storage_key.split("/", 2)[2]


@dataclass(frozen=True)
class Generation:
    generation: int
    status: str
    source_key: str
    source_name: str
    source_size: int
    probe: dict[str, Any]
    created_at: float

    def to_json(self, current: int | None) -> dict[str, Any]:
        return {"generation": self.generation, "status": self.status,
                "current": self.generation == current, "sourceName": self.source_name,
                "size": self.source_size, "format": self.probe.get("format"),
                "duration": self.probe.get("duration"), "createdAt": iso(self.created_at)}


@dataclass(frozen=True)
class HistoryEntry:
    action: str
    at: float
    details: dict[str, Any]
    job_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "timestamp": iso(self.at), "details": self.details,
                "jobId": self.job_id}


@dataclass(frozen=True)
class Job:
    id: str
    media_id: str
    generation: int
    type: str
    priority: int
    status: str
    config: dict[str, Any]
    stage: str
    percentage: float
    details: dict[str, Any]
    error: dict[str, Any] | None
    attempts: int
    created_at: float
    started_at: float | None
    completed_at: float | None
    heartbeat_at: float | None = None  # liveness of a running job (not part of the record)
    worker: str | None = None  # the run holding the job (not part of the record)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "mediaId": self.media_id, "generation": self.generation,
            "type": self.type, "priority": self.priority, "status": self.status,
            "config": self.config,
            "progress": {"stage": self.stage, "percentage": round(self.percentage, 1),
                         "details": self.details},
            "error": self.error, "attempts": self.attempts,
            "timeline": {"created": iso(self.created_at), "started": iso(self.started_at),
                         "completed": iso(self.completed_at)},
        }


@dataclass(frozen=True)
class Media:
    id: str
    title: str
    description: str
    type: str
    status: str
    language: str | None
    organization_id: str | None
    tags: tuple[str, ...]
    duration: float | None
    generation: int | None  # the generation players get
    meta: dict[str, Any]  # format, dimensions, size, bitrate, codec, copyright...
    settings: dict[str, Any]
    drm: dict[str, Any]
    analytics: dict[str, Any]
    permissions: list[dict[str, Any]]
    created_at: float
    updated_at: float
    assets: tuple[Asset, ...] = ()  # of the current generation
    generations: tuple[Generation, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    latest_job: Job | None = None
    access: dict[str, Any] | None = None  # playback access rules of this item

    def assets_of(self, kind: str) -> list[Asset]:
        return sorted((a for a in self.assets if a.kind == kind), key=lambda a: a.position)

    def to_json(self, base_url: str = "") -> dict[str, Any]:
        """The design's Media record. `base_url` prefixes playback and asset URLs."""
        vod = f"{base_url}/vod/{self.id}"
        playable = self.generation is not None and bool(
            self.assets_of("rendition") or self.assets_of("image"))
        job = self.latest_job
        meta = dict(self.meta)
        meta.update({"duration": self.duration, "language": self.language,
                     "tags": list(self.tags)})
        meta.setdefault("copyright", {"owner": None, "year": None, "license": None})
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "type": self.type,
            "status": self.status,
            "metadata": meta,
            "processing": {
                "status": job.status if job else None,
                "stage": job.stage if job else None,
                "progress": round(job.percentage, 1) if job else None,
                "error": job.error["message"] if job and job.error else None,
                "jobId": job.id if job else None,
                "history": [h.to_json() for h in self.history],
                "settings": self.settings,
            },
            "storage": {
                "provider": "local",
                "location": f"media/{self.id}",
                "versions": [
                    {"quality": a.name, "format": a.format, "url": f"{vod}/assets/{a.url_path}",
                     "size": a.size, "width": a.width, "height": a.height,
                     "bitrate": a.bitrate}
                    for a in (*self.assets_of("rendition"), *self.assets_of("image"))],
                "thumbnails": [{"time": a.time, "url": f"{vod}/assets/{a.url_path}",
                                "width": a.width, "height": a.height}
                               for a in self.assets_of("thumbnail")],
                "poster": next((f"{vod}/assets/{a.url_path}"
                                for a in self.assets_of("poster")), None),
                "preview": next((f"{vod}/assets/{a.url_path}"
                                 for a in self.assets_of("preview")), None),
                "sprite": next((f"{vod}/assets/{a.url_path}"
                                for a in self.assets_of("sprite_vtt")), None),
                "document": next(({"url": f"{vod}/assets/{a.url_path}", "size": a.size}
                                  for a in self.assets_of("document")), None),
                "captions": [{"language": a.name, "url": f"{vod}/assets/{a.url_path}"}
                             for a in self.assets_of("caption")],
                "generations": [g.to_json(self.generation) for g in self.generations],
            },
            "streaming": {
                "provider": "mediaorigin",
                "protocol": "hls" if playable and self.type in ("video", "audio") else None,
                "urls": {
                    "hls": f"{vod}/master.m3u8" if playable and self.type in (
                        "video", "audio") else None,
                    "dash": f"{vod}/manifest.mpd" if playable and self.type in (
                        "video", "audio") else None,
                    "smooth": None,  # Smooth Streaming is not offered
                },
                "drm": self.drm or {"enabled": False, "provider": None, "settings": None},
            },
            "analytics": self.analytics,
            "organization": {"id": self.organization_id, "permissions": self.permissions},
            "access": self.access,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Caption:
    language: str  # BCP 47 (en, de, pt-BR)
    storage_key: str


@dataclass(frozen=True)
class PlayableItem:
    """What the origin needs to package a media item: its files and captions."""

    id: str
    title: str
    files: tuple[str, ...]  # storage keys; several files are renditions of one ladder
    captions: tuple[Caption, ...] = field(default_factory=tuple)
    access: dict[str, Any] | None = None  # this item's playback access rules (JSON form)
    organization_id: str | None = None


EMPTY_ANALYTICS: dict[str, Any] = {"views": 0, "uniqueViewers": 0, "totalPlaytime": 0,
                                   "averageViewDuration": 0, "qualityDistribution": {},
                                   "bandwidth": 0}
