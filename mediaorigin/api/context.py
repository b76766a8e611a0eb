"""Typed application state the API handlers reach through `request.config_dict`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..analytics.queries import AnalyticsReader
from ..auth.apikeys import ApiKeys, Principal
from ..library.notify import Notifier
from ..library.repository import Library
from ..library.service import MediaService

API_KEYS = web.AppKey("api_keys", ApiKeys)
LIBRARY = web.AppKey("library", Library)
SERVICE = web.AppKey("media_service", MediaService)
NOTIFIER = web.AppKey("notifier", Notifier)
PROCESSING_DEFAULTS = web.AppKey("processing_defaults", dict)
WEBHOOK_SECRETS = web.AppKey("webhook_secrets", list)
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
ANALYTICS = web.AppKey("analytics_reader", AnalyticsReader)  # absent: analytics off
PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    assert isinstance(found, Principal), "the api_key middleware runs before every handler"
    return found
