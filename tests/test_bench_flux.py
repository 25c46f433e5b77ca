"""benchmarks/flux_transformer_speed.py: the smoke mode runs, counts passes and times every call."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "flux_transformer_speed.py"
ROW = re.compile(r"^\| ([^|]+?) \| (\d+) \| ([\d.]+)x \| ([\d.]+) \| ([\d.]+|-) \| ([\d.]+)% \| ([\d.]+)x \| ([\d.]+)% \|", re.M)


def test_flux_speed_smoke_mode() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--config", "smoke", "--device", "cpu", "--threads", "1",
                           "--taylorseer", "4", "--history", "5", "--cachedit", "cachedit-dbcache-a3.0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {m.group(1): m.groups()[1:] for m in ROW.finditer(done.stdout)}
    assert set(rows) == {"full", "spectrum alpha=0.75", "spectrum alpha=3.0", "spectrum alpha=0.75 history=5",
                         "spectrum alpha=3.0 history=5", "diffusers TaylorSeer N=4 O=1", "cache-dit dbcache-a3.0"}, done.stdout
    # cache-dit's fixed mask is Spectrum's schedule: the probe (last block) sees the same 10 passes.
    assert rows["cache-dit dbcache-a3.0"][:2] == ("10", "5.00")
    # Bytes per feature element: float32 moments of degree 4 and two float32 features, or 4 float32 features.
    held = dict(re.findall(r"^\| (spectrum [^|]+?) \|.*\(([\d.]+) B\)", done.stdout, re.M))
    assert held == {"spectrum alpha=0.75": "28.0", "spectrum alpha=3.0": "28.0",
                    "spectrum alpha=0.75 history=5": "20.0", "spectrum alpha=3.0 history=5": "20.0"}, done.stdout
    # 50 steps: 14 and 10 network passes (METHOD.md), ideal speedup N / passes.
    assert rows["spectrum alpha=0.75"][:2] == ("14", "3.57")
    assert rows["spectrum alpha=3.0"][:2] == ("10", "5.00")
    assert rows["full"][:2] == ("50", "1.00") and rows["full"][3] == "-"
    for name in ("spectrum alpha=0.75", "spectrum alpha=3.0"):
        passes, ideal, pass_ms, forecast_ms, r, speedup, of_ideal = rows[name]
        # A forecast call is far cheaper than a pass, so the per-call speedup is most of the ideal.
        assert 0 < float(forecast_ms) < float(pass_ms) and 0 < float(r) < 50
        assert 1 < float(speedup) <= float(ideal) and 0 < float(of_ideal) <= 100
    # The floor (time embedding + forecast + head without hooks) is positive and below a network pass, and the
    # most-of-ideal it allows is printed for both schedules.
    floor = re.search(r"^forecast-step floor .*: ([\d.]+) ms, r ([\d.]+)%; .*: ([\d.]+)% at alpha=0.75, ([\d.]+)% at alpha=3.0$",
                      done.stdout, re.M)
    assert floor is not None, done.stdout
    assert 0 < float(floor.group(1)) < float(rows["full"][2]) and 0 < float(floor.group(3)) <= 100
    # TaylorSeer's passes are counted by the probe, not assumed: fewer than 50, more than 0.
    assert 0 < int(rows["diffusers TaylorSeer N=4 O=1"][0]) < 50
