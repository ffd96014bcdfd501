"""Conditions on event data fields and contact attributes.

A matcher is compiled once when the plan loads, so matching an event costs a few comparisons.
String comparisons in `equals`, `in` and `glob` ignore case (Unicode casefold) because marketers
type `Kraków` and CRMs send `KRAKÓW`; `regex` is applied as written (`re.search`, so anchor with
`^...$` for a full match).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

OPERATORS: Final = ("equals", "in", "glob", "regex", "gte", "lte", "exists")
_MISSING: Final = object()

Check = Callable[[Any], bool]


def fold(value: Any) -> Any:
    """Case-fold strings, and keep booleans apart from the numbers 0 and 1: values that fold
    alike are equal to `equals` and `in`."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, bool):
        return ("bool", value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # no union per call


def _equals(expected: Any) -> Check:
    folded = fold(expected)
    return lambda value: fold(value) == folded


def _in(options: list[Any]) -> Check:
    folded = [fold(option) for option in options]
    return lambda value: fold(value) in folded


def _glob(pattern: str) -> Check:
    compiled = re.compile(fnmatch.translate(pattern.casefold()))
    return lambda value: isinstance(value, str) and compiled.match(value.casefold()) is not None


def _regex(pattern: str) -> Check:
    compiled = re.compile(pattern)
    return lambda value: isinstance(value, str) and compiled.search(value) is not None


def _gte(bound: float) -> Check:
    return lambda value: _is_number(value) and value >= bound


def _lte(bound: float) -> Check:
    return lambda value: _is_number(value) and value <= bound


_BUILDERS: dict[str, Callable[[Any], Check]] = {
    "equals": _equals,
    "in": _in,
    "glob": _glob,
    "regex": _regex,
    "gte": _gte,
    "lte": _lte,
}


@dataclass(frozen=True, slots=True)
class Matcher:
    """All of a field's operators must hold (they are ANDed)."""

    spec: Mapping[str, Any]
    checks: tuple[Check, ...]
    must_exist: bool | None

    @classmethod
    def compile(cls, spec: Any) -> Matcher:
        """A literal means `equals`; a mapping lists operators. Raises re.error on a bad regex."""
        operators = spec if isinstance(spec, Mapping) else {"equals": spec}
        checks = tuple(
            _BUILDERS[name](argument) for name, argument in operators.items() if name != "exists"
        )
        exists = operators.get("exists")
        return cls(spec=dict(operators), checks=checks, must_exist=exists)

    def matches(self, value: Any) -> bool:
        """`value` is the field's value, or `_MISSING` via `lookup` when it is absent."""
        present = value is not _MISSING and value is not None
        if self.must_exist is not None and present != self.must_exist:
            return False
        if not present:
            return not self.checks
        for check in self.checks:  # a loop: `all()` over a generator costs more than a check
            if not check(value):
                break
        else:
            return True
        return False


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `a.b.c` (split once, when the plan loads) inside nested objects, or a
    private marker when any step is absent.

    Decoded JSON is plain dicts; checking `dict` rather than the `Mapping` ABC is 3x cheaper.
    """
    current: Any = data
    for part in path:
        if not isinstance(current, dict):
            return _MISSING
        current = current.get(part, _MISSING)
        if current is _MISSING:
            return _MISSING
    return current
