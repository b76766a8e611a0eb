"""ApiError: a refusal with an HTTP status and a stable code, rendered as the JSON error body."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
