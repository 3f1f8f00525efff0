"""The calculator example's pure evaluator (examples/calculator/calculator/calc.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

CALC_PY = Path(__file__).resolve().parents[2] / "examples" / "calculator" / "calculator" / "calc.py"


def _load() -> ModuleType:
    # The example app is not a package: load its module by path.
    spec = importlib.util.spec_from_file_location("calculator_example_calc", CALC_PY)
    assert spec and spec.loader, f"cannot load {CALC_PY}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calc = _load()


@pytest.mark.parametrize(
    ("a", "op", "b", "expected"),
    [
        (5, "+", 3, 8),
        (5, "-", 3, 2),
        (3, "-", 5, -2),
        (10, "*", 6, 60),
        (7, "/", 2, 3.5),
        (-4, "*", 2.5, -10),
        (0, "*", -1, 0),
    ],
)
def test_each_operator(a: float, op: str, b: float, expected: float) -> None:
    assert calc.evaluate(a, op, b) == expected


@pytest.mark.parametrize(("alias", "canonical"), [("×", "*"), ("x", "*"), ("÷", "/"), ("−", "-"), (" + ", "+")])
def test_aliases(alias: str, canonical: str) -> None:
    assert calc.normalize_op(alias) == canonical
    assert calc.evaluate(12, alias, 4) == calc.evaluate(12, canonical, 4)


def test_multiply_and_divide_symbols() -> None:
    assert calc.evaluate(10, "×", 6) == 60
    assert calc.evaluate(9, "÷", 3) == 3


@pytest.mark.parametrize("op", ["%", "**", "", "plus", None, 1, "__import__('os')"])
def test_unknown_operator(op: object) -> None:
    with pytest.raises(calc.CalcError, match="unknown operator"):
        calc.evaluate(1, op, 2)


@pytest.mark.parametrize("a", [0, 1, -2.5])
def test_division_by_zero(a: float) -> None:
    with pytest.raises(calc.CalcError, match="divide by zero"):
        calc.evaluate(a, "/", 0)
    with pytest.raises(calc.CalcError, match="divide by zero"):
        calc.evaluate(a, "÷", 0.0)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, float("nan")])
def test_non_finite_input(bad: float) -> None:
    with pytest.raises(calc.CalcError, match="finite"):
        calc.evaluate(bad, "+", 1)
    with pytest.raises(calc.CalcError, match="finite"):
        calc.evaluate(1, "+", bad)


@pytest.mark.parametrize("bad", ["5", "1+1", None, True, False, [1], {"a": 1}, 1j])
def test_non_number_input(bad: object) -> None:
    with pytest.raises(calc.CalcError, match="must be a number"):
        calc.evaluate(bad, "+", 1)


def test_huge_int_input_and_overflowing_result() -> None:
    with pytest.raises(calc.CalcError, match="too large"):
        calc.evaluate(10**400, "+", 1)
    with pytest.raises(calc.CalcError, match="too large"):
        calc.evaluate(1e308, "*", 10)


@pytest.mark.parametrize(
    ("a", "op", "b", "expected"),
    [
        (0.1, "+", 0.2, 0.3),
        (0.3, "-", 0.1, 0.2),
        (1.1, "*", 1.1, 1.21),
        (0.7, "/", 0.1, 7),
        (1, "/", 3, 0.333333333333333),
        (123456789012345, "+", 1, 123456789012346),
    ],
)
def test_rounding(a: float, op: str, b: float, expected: float) -> None:
    result = calc.evaluate(a, op, b)
    assert result == expected
    assert str(result) == str(expected)


@pytest.mark.parametrize(("a", "op", "b"), [(5, "+", 3), (2.5, "*", 4), (10, "/", 2), (0.5, "+", 0.5), (0, "*", -1)])
def test_integral_results_are_ints(a: float, op: str, b: float) -> None:
    result = calc.evaluate(a, op, b)
    assert type(result) is int


def test_fractional_and_huge_results_stay_floats() -> None:
    assert type(calc.evaluate(7, "/", 2)) is float
    # Past 2**53 a float no longer stands for one exact integer.
    assert type(calc.evaluate(1e20, "*", 1)) is float


def test_tidy_is_idempotent() -> None:
    for value in (0.30000000000000004, 8.0, -0.0, 1 / 3, 1e300, 2.0**53):
        once = calc.tidy(value)
        assert calc.tidy(once) == once
    assert calc.tidy(8.0) == 8 and type(calc.tidy(8.0)) is int


def test_no_eval_or_exec() -> None:
    source = CALC_PY.read_text()
    for name in ("eval(", "exec(", "compile(", "__import__"):
        assert name not in source, f"calc.py must not use {name}"
