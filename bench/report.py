"""Results table: printed, and written to bench/results.md with the machine it ran on."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.metrics import percentile  # noqa: F401 - the benchmarks' percentile

RESULTS = Path(__file__).parent / "results.md"
RESULTS_DATA = Path(__file__).parent / "results.json"  # every section's latest rows, so partial runs merge


@dataclass
class Row:
    section: str
    measure: str
    value: str
    comparison: str = ""   # the comparison point measured in the same run
    note: str = ""
    run: str = ""          # when and at which commit, in which mode


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, section: str, measure: str, value: str, comparison: str = "", note: str = "") -> None:
        self.rows.append(Row(section, measure, value, comparison, note))
        print(f"  [{section}] {measure}: {value}" + (f"  (vs {comparison})" if comparison else ""), flush=True)

    def merged(self, mode: str, path: Path = RESULTS_DATA) -> list[Row]:
        """This run's rows, plus the latest rows of sections this run did not measure."""
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {mode}, {commit}"
        for row in self.rows:
            row.run = row.run or stamp
        fresh = {row.section for row in self.rows}
        kept = []
        if path.exists():
            kept = [Row(**r) for r in json.loads(path.read_text()) if r["section"] not in fresh]
        return kept + self.rows

    def markdown(self, rows: list[Row]) -> str:
        cpu = "unknown"
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        lines = [
            "# Benchmark results", "",
            f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}.",
            "Run with `./hotline bench` (`--quick` for development, `--only SECTION`); each row says when,",
            "in which mode and at which commit it was measured.", "",
            "| section | measure | result | comparison (same run) | note | run |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {r.section} | {r.measure} | {r.value} | {r.comparison} | {r.note} | {r.run} |" for r in rows]
        return "\n".join(lines) + "\n"

    def write(self, mode: str) -> Path:
        rows = self.merged(mode)
        RESULTS_DATA.write_text(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=1))
        RESULTS.write_text(self.markdown(rows))
        return RESULTS
