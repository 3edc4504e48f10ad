"""./hotline bench [--quick] [--only SECTION ...]: run the benchmarks, print and save the table."""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from bench import capacity, cluster, live, login, offline, report_kpi, webphone
from bench import tickets as ticket_queries
from bench.report import Report

SECTIONS = {
    "storage": offline.storage,
    "speech": offline.speech,
    "sizing": offline.sizing,
    "ring-to-pop": live.ring_to_pop,
    "capacity": capacity.capacity,
    "tickets": ticket_queries.tickets,
    "login": login.login,
    "report": report_kpi.report,
    "webphone": webphone.webphone,
    "cluster": cluster.cluster,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotline bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for development")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    report = Report()
    mode = "quick" if args.quick else "full"
    for name, run in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        began = time.monotonic()
        try:
            run(report, args.quick)
        except Exception as exc:  # noqa: BLE001 - say so in the table; keep what was measured
            traceback.print_exc()
            report.add(name, "section did not finish", f"error: {type(exc).__name__}: {exc}"[:200])
        finally:
            report.write(mode)  # after every section: a later failure never loses measured rows
        print(f"   ({time.monotonic() - began:.0f} s)", flush=True)
    path = report.write(mode)
    print()
    print(path.read_text())
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
