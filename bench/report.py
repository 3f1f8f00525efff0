"""The table: printed to the terminal and written as BENCHMARKS.md (plus JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .notes import NOTES, PREAMBLE

# Every row the report has, in order; a case that fails still shows its rows.
ROW_KEYS: tuple[str, ...] = (
    "spec-to-routable",
    "spec-to-routable-pool",
    "drift-repair",
    "cold-apply-small",
    "cold-apply-large",
    "noop-apply",
    "noop-pass-small",
    "noop-pass-medium",
    "noop-pass-large",
    "destroy",
    "scale-apply",
    "scale-reload",
    "scale-rss",
    "idle-cpu",
    "dashboard-table",
)


@dataclass
class Row:
    key: str
    case: str  # shown name, with the size actually run
    what: str
    figure: str
    target: str
    met: bool | None = None  # None: no target, or not measured
    vs_v2: str = ""
    vs_v1: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "–"}[self.met]


def failed_row(key: str, case: str, error: str) -> Row:
    return Row(key, case, "", f"NOT MEASURED: {error}", "", None)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[Row], machine: list[tuple[str, str]], mode: str, seconds: float) -> str:
    out = [PREAMBLE.strip(), "", "## Machine", ""]
    out += ["| | |", "| --- | --- |"]
    out += [f"| {k} | {_cell(v)} |" for k, v in machine]
    out += [f"| bench mode | {mode} (whole suite took {seconds:.0f} s) |", ""]
    out += ["## Results", ""]
    out += ["| case | what is measured | figure | target | verdict | vs Compose v2 | vs Compose v1 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {_cell(r.case)} | {_cell(r.what)} | {_cell(r.figure)} | {_cell(r.target)} | {r.verdict} "
                   f"| {_cell(r.vs_v2) or '–'} | {_cell(r.vs_v1) or '–'} |")
    out += ["", "Ratios are reconciler ÷ Compose, computed run by run from pairs measured back to back "
            "(reconcile, Compose v2, Compose v1, then the next run), shown as median (min–max); "
            "below 1.0 the reconciler is faster.", ""]
    details = [r for r in rows if r.detail]
    if details:
        out += ["## Details", ""]
        out += [f"- **{r.case}**: {r.detail}" for r in details]
        out.append("")
    out += ["## What changed the numbers, and the floors", ""]
    for key in ROW_KEYS:
        if key in NOTES:
            out.append(NOTES[key].strip())
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def terminal(rows: list[Row]) -> str:
    width = max(len(r.case) for r in rows)
    lines = []
    for r in rows:
        ratio = "  ".join(x for x in (f"v2 {r.vs_v2}" if r.vs_v2 else "", f"v1 {r.vs_v1}" if r.vs_v1 else "") if x)
        lines.append(f"{r.case.ljust(width)}  {r.figure}  [target {r.target or '-'}: {r.verdict}]  {ratio}".rstrip())
    return "\n".join(lines)


def write(rows: list[Row], machine: list[tuple[str, str]], mode: str, seconds: float, output: Path,
          json_output: Path | None, owned: list[tuple[str, str]] = (), stuck: list[str] = ()) -> None:
    """The markdown report; with ``json_output`` also every row's raw samples and the
    (label, value) pairs the run created objects under, so a test can check they are gone."""
    output.write_text(markdown(rows, machine, mode, seconds))
    if json_output is not None:
        json_output.write_text(json.dumps(
            {"mode": mode, "seconds": seconds, "machine": dict(machine), "rows": [asdict(r) for r in rows],
             "owned": [list(pair) for pair in owned], "stuck_networks": list(stuck)},
            indent=2, default=str))
