"""Errors raised by processing stages; `code` is stable and shown to API clients."""

from __future__ import annotations


class ProcessingError(Exception):
    """A stage refused or failed on this input. `code` is machine-readable (e.g. "not_media")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    """Raised from a progress callback to stop a stage cleanly (the job was cancelled)."""
