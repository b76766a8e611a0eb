"""ClientError: a refusal a client should hear about, with an HTTP status and a stable code.

Every layer raises its own subclass (PlaybackError, ServiceError, ApiError); the app renders
them all as `{"error": {"code", "message"}}` with the status.
"""

from __future__ import annotations


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
