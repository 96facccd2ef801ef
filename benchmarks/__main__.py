"""The benchmark suite: ``python -m benchmarks run --suite quick|full``.

Every run is labelled with the machine (cores, memory, CPU model) and the commit, and writes
``SUITE-DATE-COMMIT.json`` and a Markdown report with its plots into ``--out`` (default
``benchmarks/results/suite/``).

quick (a few minutes; CI runs it and it fails below the accuracy floors, never on times)
    256 x 256 x 1,000 frames, 60 cells, signal 1.0, a clean and a realistic recording (every artifact of
    real recordings on): accuracy (F1, footprint r, trace r, spike r in 5-frame bins, motion RMSE), frames
    per second per stage and end to end, CPU time, peak memory of the process tree (sampled every 0.5 s),
    and the physical bound beside it: one decode pass of the same files and one read of the stored movie.
full (hours)
    the accuracy matrix at 512 x 512 (signal 0.2-1.8 x 100 / 300 / 500 cells, clean and realistic);
    speed at 256, 512 and 608 px; peak memory for 4,000-36,000 frames (flat in frames: max / min);
    with ``--minian VENV`` Minian 2.0.2 on the same recordings, ratios beside both accuracies.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

from benchmarks import suite


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite, write its JSON and Markdown report")
    run.add_argument("--suite", choices=sorted(suite.SUITES), default="quick")
    run.add_argument("--out", type=Path, default=suite.HERE / "results" / "suite")
    run.add_argument("--work", type=Path, default=None, help="scratch folder for the recordings (default a temporary one)")
    run.add_argument("--minian", type=Path, default=None, help="Minian 2.0.2's virtual environment, to compare side by side")
    args = ap.parse_args(argv)
    report = suite.run(args.suite, work=args.work, minian=args.minian)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    paths = suite.write(report, args.out, f"{args.suite}-{stamp}-{report['machine']['commit'] or 'nocommit'}")
    print(json.dumps({"json": str(paths[0]), "report": str(paths[1]), "failed_floors": report["failed_floors"]}))
    if report["failed_floors"]:
        print("below the accuracy floors: " + "; ".join(report["failed_floors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
