"""The quick benchmark suite (``python -m benchmarks run --suite quick``), as CI runs it: accuracy floors only.

It simulates a clean and a realistic 256 x 256 x 1,000-frame recording, runs scopeline's core on both and
fails below :data:`benchmarks.suite.FLOORS`; times and memory are reported, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_quick_suite_meets_its_accuracy_floors_and_writes_its_report(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--suite", "quick", "--out", str(out),
                          "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    paths = json.loads(run.stdout.strip().splitlines()[-1])
    assert paths["failed_floors"] == []
    report = json.loads(open(paths["json"]).read())
    assert [r["artifacts"] for r in report["rows"]] == ["none", "all"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    for row in report["rows"]:
        for name, floor in report["floors"][row["artifacts"]].items():  # what the suite checked, read back
            assert (row[name] <= floor) if name == "shift_rmse_px" else (row[name] >= floor), (row["artifacts"], name)
        # the report's numbers are measurements, not placeholders
        assert row["units"] > 0 and row["wall_s"] > 0 and row["peak_tree_rss_MiB"] > 100
        assert row["motion_fps"] > 0 and row["decode_fps"] > 0 and row["store_read_fps"] > 0
    text = open(paths["report"]).read()
    assert "## accuracy floors" in text and "Below a floor: none." in text
    assert sorted(p.name.rsplit("-", 1)[-1] for p in out.glob("*.png")) == ["accuracy.png", "speed.png"]
