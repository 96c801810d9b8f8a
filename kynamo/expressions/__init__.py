"""DynamoDB expressions: conditions, filters, updates, projections, key conditions.

Parse once (callers cache), evaluate many times. Every error is an
``ExpressionError`` whose ``message`` is DynamoDB's ValidationException text.
"""

from .condition import Condition, evaluate_condition, parse_condition
from .errors import ExpressionError
from .keycondition import KeyCondition, parse_key_condition
from .projection import Projection, parse_projection, project
from .reserved import RESERVED_WORDS, is_reserved
from .unused import check_unused, used_by
from .update import UpdatePlan, apply_update, parse_update

__all__ = [
    "RESERVED_WORDS",
    "Condition",
    "ExpressionError",
    "KeyCondition",
    "Projection",
    "UpdatePlan",
    "apply_update",
    "check_unused",
    "evaluate_condition",
    "is_reserved",
    "parse_condition",
    "parse_key_condition",
    "parse_projection",
    "parse_update",
    "project",
    "used_by",
]
