"""The audit log of management actions: every change made through /api, by whom, to what.

A middleware records each successful request that is not a read (who: the API key's id and
role; what: the route and its method; which media; the status); `GET /api/audit` lists the
latest entries to admins. Entries are only ever appended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .context import LIBRARY, PRINCIPAL, principal
from .errors import ApiError

log = logging.getLogger("mediaorigin.audit")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READS = {"GET", "HEAD", "OPTIONS"}


@web.middleware
async def audit_changes(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    who = request.get(PRINCIPAL)
    if request.method not in READS and who is not None and response.status < 400:
        route = request.match_info.route
        action = f"{request.method} {getattr(route.resource, 'canonical', request.path)}"
        created = response.headers.get("Location", "")
        media_id = (request.match_info.get("media_id") or response.headers.get("Media-Id")
                    or (created.rsplit("/", 1)[-1] if created.startswith("/api/media/")
                        else None))
        try:
            await request.config_dict[LIBRARY].audit(
                who.key_id, who.role, action, media_id, {"status": response.status})
        except Exception:  # the action itself happened: say so in the log, don't fail it
            log.exception("could not write the audit entry for %s", action)
    return response


async def list_audit(request: web.Request) -> web.Response:
    if principal(request).role != "admin":
        raise ApiError(403, "forbidden", "the audit log is for admin keys")
    media_id = request.rel_url.query.get("media")
    entries = await request.config_dict[LIBRARY].audit_entries(media_id)
    return web.json_response({"entries": entries})
