"""Analytics queries and reports.

GET /api/media/{id}/analytics?period=&metrics=   the design's Streaming Analytics
GET /api/media/{id}/reports?type=&format=&period= performance|engagement as json|csv|pdf
GET /api/analytics/processing?period=&organization= the design's Processing Analytics

Media are found as for the media routes (`visible_media`: another organization's item is a
404); `live_…` ids are live streams, found in the live repository. Analytics show who watched
what, so they are for admin and instructor keys; student keys get 403.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from ..analytics import keys
from ..analytics.processing import processing_analytics
from ..analytics.queries import (
    GROUPS,
    AnalyticsReader,
    Period,
    parse_metrics,
    parse_period,
)
from ..analytics.reports import FORMATS, TYPES, report_csv, report_json, report_pdf
from .context import ANALYTICS, LIBRARY, principal
from .errors import ApiError
from .live import LIVE_REPO
from .media import visible_media

DEFAULT_PERIOD = "last7d"


def _require_analytics(request: web.Request) -> None:
    if principal(request).role not in ("admin", "instructor"):
        raise ApiError(403, "forbidden", "analytics are for admin and instructor API keys")


def _reader(request: web.Request) -> AnalyticsReader:
    reader = request.config_dict.get(ANALYTICS)
    if reader is None:
        raise ApiError(503, "analytics_disabled", "analytics are off ([analytics] enabled)")
    return reader


def _period(request: web.Request, default: str | None = DEFAULT_PERIOD) -> Period | None:
    text = request.rel_url.query.get("period", default)
    if text is None:
        return None
    try:
        return parse_period(text, keys.today())
    except ValueError as e:
        raise ApiError(422, "invalid_query", str(e)) from None


def _choice(request: web.Request, name: str, allowed: Any, default: str) -> str:
    value = request.rel_url.query.get(name, default)
    if value not in allowed:
        raise ApiError(422, "invalid_query", f"{name} must be one of {', '.join(allowed)}")
    return value


async def _subject(request: web.Request) -> tuple[str, str, float | None]:
    """(id, title, duration) of the media item or live stream in the URL, if visible."""
    _require_analytics(request)
    media_id = request.match_info["media_id"]
    if keys.is_live(media_id):
        stream = await request.config_dict[LIVE_REPO].get(media_id)
        if stream is None or not principal(request).sees(stream.organization_id):
            raise ApiError(404, "media_not_found", f"no media {media_id!r}")
        return stream.id, stream.title, None
    media = await visible_media(request)
    return media.id, media.title, media.duration


async def _collect(reader: AnalyticsReader, media_id: str, period: Period,
                   duration: float | None, groups: tuple[str, ...]) -> Any:
    try:
        return await reader.collect(media_id, period, duration=duration, groups=groups)
    except (RedisError, OSError) as e:
        raise ApiError(503, "analytics_unavailable",
                       f"the analytics store does not answer ({type(e).__name__})") from None


async def media_analytics(request: web.Request) -> web.Response:
    media_id, _, duration = await _subject(request)
    period = _period(request)
    assert period is not None
    try:
        groups = parse_metrics(request.rel_url.query.get("metrics"))
    except ValueError as e:
        raise ApiError(422, "invalid_query", str(e)) from None
    body, _ = await _collect(_reader(request), media_id, period, duration, groups)
    return web.json_response(body)


async def media_report(request: web.Request) -> web.Response:
    media_id, title, duration = await _subject(request)
    kind = _choice(request, "type", tuple(TYPES), "performance")
    fmt = _choice(request, "format", FORMATS, "json")
    period = _period(request)
    assert period is not None
    groups = TYPES[kind]
    if fmt == "pdf":  # every PDF has the three charts: views, qualities, heatmap
        groups = tuple(g for g in GROUPS if g in (*groups, "quality", "engagement"))
    body, days = await _collect(_reader(request), media_id, period, duration, groups)
    if fmt == "json":
        return web.json_response(report_json(kind, title, body))
    name = f"{media_id}-{kind}-{period.first.isoformat()}_{period.last.isoformat()}.{fmt}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "csv":
        return web.Response(text=report_csv(kind, body, days), content_type="text/csv",
                            charset="utf-8", headers=disposition)
    pdf = await asyncio.to_thread(report_pdf, kind, title, body, days)
    return web.Response(body=pdf, content_type="application/pdf", headers=disposition)


async def processing(request: web.Request) -> web.Response:
    """Admin keys see every organization (or `?organization=`); others their own only."""
    _require_analytics(request)
    who = principal(request)
    organization = who.organization_id or request.rel_url.query.get("organization")
    period = _period(request, default=None)
    since = until = None
    if period is not None:
        since = datetime(period.first.year, period.first.month, period.first.day,
                         tzinfo=UTC).timestamp()
        until = since + ((period.last - period.first) + timedelta(days=1)).total_seconds()
    body = await processing_analytics(request.config_dict[LIBRARY],
                                      organization_id=organization, since=since, until=until)
    body["organization"] = organization
    body["period"] = period.to_json() if period else None
    body["generatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return web.json_response(body)


def add_routes(api: web.Application) -> None:
    r = api.router
    media_id = "{media_id:[A-Za-z0-9_-]{1,64}}"
    r.add_get(f"/media/{media_id}/analytics", media_analytics)
    r.add_get(f"/media/{media_id}/reports", media_report)
    r.add_get("/analytics/processing", processing)
