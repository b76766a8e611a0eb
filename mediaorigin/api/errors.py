"""ApiError: a management API request refused (authentication, validation, limits)."""

from __future__ import annotations

from ..errors import ClientError


class ApiError(ClientError):
    pass
