"""The API key middleware: every /api request carries `Authorization: Bearer <key>`.

The processor webhook authenticates with its HMAC signature instead (checked in its handler),
because external processors sign their callbacks rather than hold an API key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth.api_tokens import verify_api_token
from ..origin.routes import GUARD
from .context import API_KEYS, PRINCIPAL
from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Player beacons carry a playback token instead (checked in their handler like playback).
SIGNED_ROUTES = {"processor_webhook", "analytics_beacons"}


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if request.method == "OPTIONS" or getattr(route, "name", None) in SIGNED_ROUTES:
        return await handler(request)
    header = request.headers.get("Authorization")
    principal = request.config_dict[API_KEYS].authenticate(header)
    if principal is None and header and header.count(".") == 2 and \
            header[:7].lower() == "bearer ":
        principal = verify_api_token(header[7:].strip(), request.config_dict[GUARD].keyring,
                                     time.time())
    if principal is None:
        raise ApiError(401, "unauthorized", "send a valid API key as Authorization: Bearer <key>")
    request[PRINCIPAL] = principal
    return await handler(request)
