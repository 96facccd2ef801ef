"""The benchmark suites of ``python -m benchmarks``: what each runs, the accuracy floors, the report.

Each case is one simulated recording through scopeline's core in a child process
(:func:`benchmarks.cnmf.run_one`: motion correction to Zarr, initialization, CNMF with default
parameters), scored against the simulator's ground truth with the Minian paper's metrics.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: accuracy floors of the quick suite (clean / realistic): the suite fails below them. Set under the numbers
#: measured at 0f3fee6 (clean F1 0.992, footprint 0.994, trace 0.967, spikes 0.773, RMSE 0.063 px; realistic
#: 0.988, 0.987, 0.970, 0.759, 0.083 px) with room for other machines' floating point, not for regressions.
FLOORS = {
    "none": {"f1": 0.95, "footprint_corr": 0.95, "trace_corr": 0.93, "spike_corr": 0.7, "shift_rmse_px": 0.2},
    "all": {"f1": 0.93, "footprint_corr": 0.95, "trace_corr": 0.93, "spike_corr": 0.68, "shift_rmse_px": 0.25},
}


def _cases(suite: str) -> list[dict]:
    """The runs of a suite: dicts of run_one's arguments and the part of the report each belongs to."""
    if suite == "quick":
        return [dict(part="accuracy", size=256, n=1000, cells=60, level=1.0, artifacts=a, bounds=True)
                for a in ("none", "all")]
    cases = [dict(part="accuracy", size=512, n=1000, cells=c, level=s, artifacts=a)
             for a in ("none", "all") for c in (100, 300, 500) for s in (0.2, 0.6, 1.0, 1.4, 1.8)]
    cases += [dict(part="speed", size=px, n=2000, cells=300 if px > 256 else 60, level=1.0, artifacts="all", bounds=True)
              for px in (256, 512, 608)]
    cases += [dict(part="memory", size=608, n=n, cells=500, level=1.0, artifacts="all")
              for n in (4000, 8000, 16000, 28000, 36000)]
    return cases


SUITES = {"quick": "256 px, two recordings, accuracy floors (CI)", "full": "accuracy matrix, speed, memory curve"}


def machine() -> dict:
    """Cores, memory (GiB), CPU model, commit (short hash, '+dirty' with uncommitted changes)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2 ** 20
    git = ["git", "-C", str(HERE)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return {"cores": os.cpu_count(), "memory_gb": round(mem, 1), "cpu": cpu,
            "commit": commit + ("+dirty" if commit and dirty else ""), "python": platform.python_version()}


def _row(case: dict, result: dict) -> dict:
    """One case's numbers, flat: accuracy, speed per stage (frames/s), CPU, memory, the bound."""
    ours = result["scopeline"]
    acc = ours["accuracy"]
    n = case["n"]
    row = {k: case[k] for k in ("part", "size", "n", "cells", "level", "artifacts")}
    row.update({k: acc.get(k) for k in ("f1", "precision", "recall", "footprint_corr", "trace_corr", "spike_corr")})
    row.update(shift_rmse_px=ours["shift_rmse_px"], units=ours["units"], wall_s=ours["wall_s"], cpu_s=ours.get("cpu_s"),
               fps=round(n / ours["wall_s"], 1) if ours["wall_s"] else None,
               peak_tree_rss_MiB=ours.get("peak_tree_rss_MiB"), peak_rss_MiB=ours.get("peak_rss_MiB"),
               **{f"{s}_fps": round(n / ours["seconds"][s], 1) for s in ("motion", "initialization", "cnmf")
                  if ours["seconds"].get(s)}, **(ours.get("bound") or {}))
    if "minian" in result:
        row["minian"] = result["minian"].get("summary")
        row["speedup_vs_minian"] = result.get("speedup_vs_minian")
    return row


def run(suite: str, work: Path | None = None, minian: Path | None = None, progress=print) -> dict:
    """Run a suite; the report: machine, rows (one per case), floors checked, what failed them."""
    from benchmarks import cnmf as bench

    scratch = Path(work) if work else Path(tempfile.mkdtemp(prefix="scopeline-suite-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in _cases(suite):
        args = {k: case[k] for k in ("size", "n", "cells", "level", "artifacts")}
        progress(f"{suite}: {case['part']} {args}")
        result = bench.run_one(**args, seed=0, work=scratch, minian=minian, bounds=case.get("bounds", False))
        rows.append(_row(case, result))
    failed = []
    if suite == "quick":
        for row in rows:
            for name, floor in FLOORS[row["artifacts"]].items():
                value = row[name]
                bad = value is None or (value > floor if name == "shift_rmse_px" else value < floor)
                if bad:
                    failed.append(f"{row['artifacts']} {name} {value} (floor {floor})")
    return {"suite": suite, "machine": machine(), "rows": rows, "floors": FLOORS if suite == "quick" else None,
            "failed_floors": failed}


def _plots(report: dict, out: Path, stem: str) -> list[Path]:
    """PNG plots of a report: accuracy by signal (full), frames/s per stage beside the bound, memory by frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, made = report["rows"], []
    acc = [r for r in rows if r["part"] == "accuracy"]
    if acc:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
        for ax, name in zip(axes, ("f1", "trace_corr", "spike_corr")):
            for (cells, art), group in _groups(acc, ("cells", "artifacts")).items():
                group = sorted(group, key=lambda r: r["level"])
                ax.plot([r["level"] for r in group], [r[name] for r in group], "o-",
                        label=f"{cells} cells, {'clean' if art == 'none' else 'realistic'}")
            ax.set_xlabel("signal level")
            ax.set_title(name)
            ax.set_ylim(0, 1.02)
        axes[0].legend(fontsize=7)
        made.append(_save(fig, out / f"{stem}-accuracy.png"))
    timed = [r for r in rows if r.get("decode_fps")]
    if timed:
        fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
        names = ["motion_fps", "initialization_fps", "cnmf_fps", "fps", "decode_fps", "store_read_fps"]
        width = 0.8 / len(timed)
        for i, r in enumerate(timed):
            ax.bar([k + i * width for k in range(len(names))], [r.get(n) or 0 for n in names], width,
                   label=f"{r['size']} px, {'clean' if r['artifacts'] == 'none' else 'realistic'}")
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))],
                      ["motion", "initialization", "CNMF", "end to end", "decode (bound)", "store read (bound)"], fontsize=8)
        ax.set_ylabel("frames / s")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        made.append(_save(fig, out / f"{stem}-speed.png"))
    mem = [r for r in rows if r["part"] == "memory"]
    if mem:
        fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
        mem = sorted(mem, key=lambda r: r["n"])
        ax.plot([r["n"] for r in mem], [r["peak_tree_rss_MiB"] for r in mem], "o-")
        ax.set_xlabel("frames")
        ax.set_ylabel("peak memory, process tree (MiB)")
        ax.set_ylim(0, None)
        made.append(_save(fig, out / f"{stem}-memory.png"))
    return made


def _groups(rows, keys) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown(report: dict, plots: list[Path]) -> str:
    """The report as Markdown: the machine, one table per part, the floors, the plots."""
    m = report["machine"]
    lines = [f"# scopeline benchmark: {report['suite']} suite", "",
             f"Machine: {m['cores']} cores, {m['memory_gb']} GiB, {m['cpu']}; Python {m['python']}; commit {m['commit']}.", ""]
    cols = {"accuracy": ["size", "n", "cells", "level", "artifacts", "units", "f1", "precision", "recall",
                         "footprint_corr", "trace_corr", "spike_corr", "shift_rmse_px", "fps", "peak_tree_rss_MiB"],
            "speed": ["size", "n", "cells", "artifacts", "motion_fps", "initialization_fps", "cnmf_fps", "fps", "cpu_s",
                      "decode_fps", "store_read_fps", "peak_tree_rss_MiB"],
            "memory": ["size", "n", "cells", "wall_s", "fps", "peak_tree_rss_MiB", "peak_rss_MiB"]}
    for part, names in cols.items():
        rows = [r for r in report["rows"] if r["part"] == part]
        if part == "accuracy" and rows and rows[0].get("decode_fps"):
            names = names + ["motion_fps", "initialization_fps", "cnmf_fps", "cpu_s", "decode_fps", "store_read_fps"]
        if not rows:
            continue
        lines += [f"## {part}", "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_cell(r.get(n)) for n in names) + " |" for r in rows]
        if part == "memory":
            peaks = [r["peak_tree_rss_MiB"] for r in rows]
            lines += ["", f"max / min peak memory over frame counts: {max(peaks) / min(peaks):.2f}"]
        lines.append("")
    lines += ["fps: frames per second (end to end: motion + initialization + CNMF); decode: one pass of the "
              "recording's files through scopeline's reader; store read: one read of the stored corrected movie; "
              "peak memory of the whole process tree, sampled every 0.5 s.", ""]
    if report["floors"]:
        lines += ["## accuracy floors", "", "```", json.dumps(report["floors"], indent=1), "```", "",
                  "Below a floor: " + ("; ".join(report["failed_floors"]) if report["failed_floors"] else "none."), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return "" if v is None else str(v)


def write(report: dict, out: Path, stem: str) -> tuple[Path, Path]:
    """``STEM.json``, ``STEM.md`` and its plots in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out, stem)
    js = out / f"{stem}.json"
    js.write_text(json.dumps(report, indent=1) + "\n")
    md = out / f"{stem}.md"
    md.write_text(markdown(report, plots))
    return js, md
