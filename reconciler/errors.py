"""Errors as values: what went wrong, where, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem in one spec file, printed as ``file:line:col: field: message``."""

    path: str
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    field: str | None = None
    message: str = ""

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "field": self.field,
            "message": self.message,
            "text": str(self),
        }


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line, exit 1."""

    exit_code = 1


class NotFound(UserError):
    """A sandbox that is not one of this instance's; exit 3."""

    exit_code = 3


class InvalidArgument(UserError):
    """A name or path given on the command line (or to the Python API) that is
    not valid; refused before any engine call, exit 2 (usage)."""

    exit_code = 2
