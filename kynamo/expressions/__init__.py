"""DynamoDB expressions: conditions, filters, updates, projections, key conditions."""

from .condition import Condition, evaluate_condition, parse_condition
from .errors import ExpressionError

__all__ = ["Condition", "ExpressionError", "evaluate_condition", "parse_condition"]
