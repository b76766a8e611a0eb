"""The API key middleware: every /api request carries `Authorization: Bearer <key>`.

The processor webhook authenticates with its HMAC signature instead (checked in its handler),
because external processors sign their callbacks rather than hold an API key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .context import API_KEYS, PRINCIPAL
from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIGNED_ROUTES = {"processor_webhook"}


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if request.method == "OPTIONS" or getattr(route, "name", None) in SIGNED_ROUTES:
        return await handler(request)
    principal = request.config_dict[API_KEYS].authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ApiError(401, "unauthorized", "send a valid API key as Authorization: Bearer <key>")
    request[PRINCIPAL] = principal
    return await handler(request)
