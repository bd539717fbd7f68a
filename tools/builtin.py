"""Tools agents may call. Each is a LangChain tool: plain, deterministic, safe on hostile input."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from langchain_core.tools import tool

from polycascade.catalog import Catalog

__all__ = ["ALL_TOOLS", "calculator", "model_info"]

_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}  # fmt: skip


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return float(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_evaluate(node.operand)))
    raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / // % ** and parentheses, e.g. '17 * (3 + 4)'."""
    try:
        value = _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return f"{value:g}"


@tool
def model_info(model: str) -> str:
    """Look up a model in polycascade's catalog: its vendor, where the vendor is based, and its price."""
    spec = Catalog.load().get(model)
    if spec is None:
        return f"unknown model {model!r}"
    price_in, price_out = spec.price_per_mtok()
    return (
        f"{spec.id}: vendor {spec.vendor} ({spec.jurisdiction}), hosted by {spec.host} ({spec.host_jurisdiction}), "
        f"${price_in} in / ${price_out} out per 1M tokens"
    )


ALL_TOOLS = [calculator, model_info]
