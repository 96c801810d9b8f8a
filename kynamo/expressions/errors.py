"""The one exception every expression failure raises."""

from __future__ import annotations


class ExpressionError(Exception):
    """A DynamoDB ValidationException; ``message`` is worded as DynamoDB words it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
