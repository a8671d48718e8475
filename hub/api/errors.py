"""The API's one error: a status and a message that says what is wrong and what to do
(answered as `{"error": message}`)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
