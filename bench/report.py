"""Results table: printed, and written to bench/results.md with the machine it ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).parent / "results.md"


@dataclass
class Row:
    section: str
    measure: str
    value: str
    comparison: str = ""   # the comparison point measured in the same run
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, section: str, measure: str, value: str, comparison: str = "", note: str = "") -> None:
        self.rows.append(Row(section, measure, value, comparison, note))
        print(f"  [{section}] {measure}: {value}" + (f"  (vs {comparison})" if comparison else ""), flush=True)

    def markdown(self, mode: str) -> str:
        cpu = "unknown"
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        lines = [
            "# Benchmark results", "",
            f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, mode `{mode}`, commit `{commit}`.", "",
            f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}.", "",
            "| section | measure | result | comparison (same run) | note |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {r.section} | {r.measure} | {r.value} | {r.comparison} | {r.note} |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self, mode: str, path: Path = RESULTS) -> Path:
        path.write_text(self.markdown(mode))
        return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
