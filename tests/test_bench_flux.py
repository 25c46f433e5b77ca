"""benchmarks/flux_transformer_speed.py: the smoke mode runs and reports the paper's pass counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "flux_transformer_speed.py"


def test_flux_speed_smoke_mode() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| (full|spectrum alpha=[\d.]+) \| (\d+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+)x \|", done.stdout, re.M)}
    assert set(rows) == {"full", "spectrum alpha=0.75", "spectrum alpha=3.0"}, done.stdout
    # 50 steps: 14 and 10 network passes (METHOD.md), ideal speedup N / passes.
    assert rows["spectrum alpha=0.75"][0] == "14" and rows["spectrum alpha=0.75"][2] == "3.57"
    assert rows["spectrum alpha=3.0"][0] == "10" and rows["spectrum alpha=3.0"][2] == "5.00"
    assert rows["full"][3] == "1.00"
    assert all(float(r[1]) > 0 and float(r[3]) > 0 for r in rows.values())
