"""Errors a caller can fix: each becomes an HTTP status with a JSON `{"error": message}`."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
