"""The `/api` sub-application: API keys, the media routes and tus uploads."""

from __future__ import annotations

from aiohttp import web

from ..auth.apikeys import ApiKeys, bootstrap_admin_key
from ..config import Config
from ..library.service import processing_defaults
from . import analytics, audit, beacons, context, live, media, playback, resumable
from .auth import require_api_key
from .tus import TusRoutes, TusStore


def create_api(config: Config) -> web.Application:
    auth = config.auth
    admin_key = bootstrap_admin_key(auth.admin_key, config.path(auth.admin_key_file))
    api = web.Application(middlewares=[require_api_key, audit.audit_changes])
    api[context.API_KEYS] = ApiKeys(admin_key, auth.api_keys)
    api[context.PROCESSING_DEFAULTS] = processing_defaults(config)
    api[context.WEBHOOK_SECRETS] = [config.webhooks.secret.encode()] if config.webhooks.secret \
        else []
    uploads = config.path(config.library.uploads_dir)
    max_upload = config.library.max_upload_mb * 1024 * 1024
    api[media.UPLOADS_DIR] = uploads
    api[media.MAX_UPLOAD] = max_upload
    api[media.PUBLIC_URL] = config.library.public_url.rstrip("/")
    media.add_routes(api)
    api.router.add_get("/audit", audit.list_audit)
    playback.add_routes(api)
    live.add_routes(api)
    beacons.add_routes(api)  # player beacons: playback auth, no API key
    analytics.add_routes(api)  # analytics queries and reports (API keys)
    api[beacons.MAX_BEACON_EVENTS] = config.analytics.max_beacon_events
    api[live.RTMP_URL] = config.ingest.rtmp_public_url
    api[live.DEFAULT_RECORD] = config.live.record
    api[live.DEFAULT_DVR] = config.live.dvr_window
    api[playback.GUARD_TTL] = auth.token_ttl
    api[playback.CLOUDFRONT] = playback.cloudfront_signer(config)
    store = TusStore(uploads / "tus", max_upload, config.library.upload_expiry_hours * 3600)
    TusRoutes("/uploads", store, resumable.on_complete,
              owner_of=lambda request: context.principal(request).key_id).add_routes(api)
    return api
