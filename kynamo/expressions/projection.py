"""ProjectionExpression: pick attributes and nested paths, keeping their structure.

DynamoDB returns ``a.b`` as ``{"a": {"M": {"b": ...}}}`` and ``l[1], l[3]`` as a
list holding just those elements in index order; we do the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ast import Path
from .parser import BaseParser
from .typed import get_path


@dataclass(slots=True, frozen=True)
class Projection:
    expression: str
    paths: tuple[Path, ...]
    names_used: frozenset[str]

    @property
    def top_level_names(self) -> set[str]:
        return {str(p.elements[0]) for p in self.paths}


class ProjectionParser(BaseParser):
    def parse(self) -> list[Path]:
        paths = [self.parse_path()]
        while self.at_op(","):
            self.advance()
            paths.append(self.parse_path())
        self.expect_eof()
        self.check_overlaps(paths)
        self.finish()
        return paths


def parse_projection(expr: str, names: dict | None = None) -> Projection:
    """Parse a ProjectionExpression; raises ExpressionError worded as DynamoDB."""
    parser = ProjectionParser(expr, names, None, "ProjectionExpression")
    paths = parser.parse()
    return Projection(expr, tuple(paths), frozenset(parser.names_used))


class _Node:
    """Intermediate tree while merging paths: map children by name, list children by index."""

    __slots__ = ("children", "is_list")

    def __init__(self, is_list: bool) -> None:
        self.is_list = is_list
        self.children: dict[Any, Any] = {}

    def build(self) -> dict:
        if self.is_list:
            return {"L": [_finish(self.children[i]) for i in sorted(self.children)]}
        return {"M": {k: _finish(v) for k, v in self.children.items()}}


def _finish(node: Any) -> dict:
    return node.build() if isinstance(node, _Node) else node


def project(item: dict | None, proj: Projection) -> dict:
    """The attributes of ``item`` named by ``proj``; absent paths are left out."""
    if not item:
        return {}
    out: dict[str, Any] = {}
    for path in proj.paths:
        elements = path.elements
        value = get_path(item, elements)
        if value is None:
            continue
        if len(elements) == 1:
            out[elements[0]] = value  # type: ignore[index]
            continue
        node = out.get(elements[0])  # type: ignore[call-overload]
        if not isinstance(node, _Node):
            node = out[elements[0]] = _Node(isinstance(elements[1], int))  # type: ignore[index]
        for position in range(1, len(elements) - 1):
            key = elements[position]
            child = node.children.get(key)
            if not isinstance(child, _Node):
                child = node.children[key] = _Node(isinstance(elements[position + 1], int))
            node = child
        node.children[elements[-1]] = value
    return {name: _finish(value) for name, value in out.items()}
