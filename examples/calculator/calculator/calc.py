"""Pure evaluation of one binary arithmetic operation, without eval/exec."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Callable

Number = int | float

OPERATORS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
# What a UI or a keyboard may send for the same four operators.
ALIASES: dict[str, str] = {"×": "*", "x": "*", "÷": "/", "−": "-"}

# A float holds 15 significant decimal digits faithfully; rounding there hides
# binary noise (0.1 + 0.2 -> 0.3) without losing any digit a user typed.
SIGNIFICANT_DIGITS = 15
# Beyond 2**53 not every integer is a float, so don't pretend to be exact.
MAX_EXACT_INT = 2**53


class CalcError(ValueError):
    """Input that cannot be evaluated; the message is safe to show a user."""


def normalize_op(op: object) -> str:
    """The canonical operator (``+ - * /``) for ``op`` or one of its aliases."""
    if isinstance(op, str):
        key = ALIASES.get(op.strip(), op.strip())
        if key in OPERATORS:
            return key
    raise CalcError(f"unknown operator {op!r}: expected one of + - * / × ÷")


def as_number(value: object, name: str = "value") -> float:
    """``value`` as a finite float; bools, strings and NaN/Infinity are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CalcError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise CalcError(f"{name} is too large") from None
    if not math.isfinite(number):
        raise CalcError(f"{name} must be a finite number, got {value!r}")
    return number


def tidy(value: float) -> Number:
    """Round away float noise, and give integral values back as ints (8.0 -> 8)."""
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if rounded.is_integer() and abs(rounded) < MAX_EXACT_INT:
        return int(rounded)
    return rounded


def evaluate(a: object, op: object, b: object) -> Number:
    """``a op b``, tidied; raises CalcError for bad input or an undefined result."""
    func = OPERATORS[normalize_op(op)]
    x, y = as_number(a, "a"), as_number(b, "b")
    try:
        result = func(x, y)
    except ZeroDivisionError:
        raise CalcError("cannot divide by zero") from None
    if not math.isfinite(result):
        raise CalcError("result is too large")
    return tidy(result)
