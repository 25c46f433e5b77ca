"""benchmarks/gpu_suite.py: ``--smoke`` runs every method of the GPU suite on CPU and records sane figures, so
the first GPU run cannot fail on a typo; a spent budget skips methods and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"
SPECTRUM = {"spectrum alpha=0.75": (14, 28.0), "spectrum alpha=0.75 history=5": (14, 20.0),
            "spectrum alpha=3.0": (10, 28.0), "spectrum alpha=3.0 history=5": (10, 20.0),
            "spectrum alpha=0.75 state_device=cpu": (14, 28.0),
            "spectrum alpha=0.75, regional compile": (14, 28.0),
            "spectrum alpha=3.0, regional compile": (10, 28.0)}
PEERS = {"diffusers TaylorSeer N=4 O=1", "diffusers TaylorSeer N=6 O=1", "cache-dit dbcache-a0.75",
         "cache-dit taylorseer-a3.0"}
WAN_SPECTRUM = ("spectrum alpha=3.0, 8 steps", "spectrum alpha=3.0 state_device=cpu, 8 steps")
FLUX_METHODS = {"full", "full, regional compile", *SPECTRUM, *PEERS}


def _suite(out: Path, *extra: str) -> tuple[dict, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text(), done.stdout


def test_smoke_runs_every_method_with_sane_figures(tmp_path: Path) -> None:
    record, table, stdout = _suite(tmp_path)
    assert record["smoke"] is True and record["dtype"] == "float32" and record["versions"]["torch"]
    rows = {row["method"]: row for row in record["flux"]["rows"]}
    assert set(rows) == FLUX_METHODS, sorted(rows)
    failed = {name: row.get("error") or row.get("reason") for name, row in rows.items() if row["status"] != "ok"}
    assert not failed, failed
    steps = record["flux"]["steps"]
    for name, row in rows.items():
        assert row["passes"] == len(row["calls"][0]) - sum(not ran for _, ran in row["calls"][0])
        assert row["total_speedup"] > 0 and row["pass_ms"] > 0 and row["output_finite"], (name, row)
        assert 0 < row["of_ideal"] <= 1 + 1e-9 and row["ideal"] == steps / row["passes"], (name, row)
        assert f"| {name} | ok | {row['passes']} |" in table, name
        if name.startswith("full"):
            assert row["passes"] == steps and row["forecast_ms"] is None
        else:
            assert 0 < row["r"] < 1 and 0 < row["forecast_ms"] < row["pass_ms"], (name, row)
    for name, (passes, per_element) in SPECTRUM.items():
        assert rows[name]["passes"] == passes and rows[name]["expected_passes"] == passes, name
        assert round(rows[name]["bytes_per_element"], 1) == per_element, (name, rows[name]["bytes_per_element"])
    # cache-dit's mask is Spectrum's schedule; TaylorSeer's passes are counted, not assumed.
    assert rows["cache-dit dbcache-a0.75"]["passes"] == 14 and rows["cache-dit taylorseer-a3.0"]["passes"] == 10
    assert 0 < rows["diffusers TaylorSeer N=6 O=1"]["passes"] < rows["diffusers TaylorSeer N=4 O=1"]["passes"] < steps
    # Regional compile really compiled the blocks (dynamo's eager backend in the smoke run: the same latents).
    for name in ("full, regional compile", *(name for name in SPECTRUM if name.endswith("compile"))):
        assert rows[name]["dynamo_graphs"] > 0 and rows[name]["graph_breaks"] == 0, rows[name]
        assert rows[name]["rel_diff_vs_eager"] < 1e-6, rows[name]
        assert "speedup_vs_compiled_full" in rows[name] or name.startswith("full")
    assert 0 < record["flux"]["floor"]["r"] < 1
    wan = {row["method"]: row for row in record["wan"]["rows"]}
    assert set(wan) == {"full", *WAN_SPECTRUM} and all(r["status"] == "ok" for r in wan.values()), wan
    assert wan["full"]["passes"] == 3
    for name in WAN_SPECTRUM:
        assert wan[name]["passes"] == 3 and 0 < wan[name]["r"] < 1 and wan[name]["held_bytes"] > 0, wan[name]
    assert "3 of 8" in table
    # Progress lines carry the elapsed time, so a killed run shows where it was.
    assert "start spectrum alpha=3.0, regional compile" in stdout and "+" in stdout.splitlines()[0]


def test_spent_budget_lists_every_method_as_skipped(tmp_path: Path) -> None:
    record, table, _ = _suite(tmp_path, "--budget-s", "0.001")
    rows = {row["method"]: row for row in record["flux"]["rows"]}
    assert set(rows) == FLUX_METHODS and all(row["status"] == "skipped" and row["reason"] for row in rows.values())
    assert rows["full"]["reason"].startswith("budget")
    assert [row["status"] for row in record["wan"]["rows"]] == ["skipped"] * (1 + len(WAN_SPECTRUM))
    assert table.count("| skipped: ") == len(FLUX_METHODS) + 1 + len(WAN_SPECTRUM)


def test_a_failing_method_is_recorded_and_the_rest_still_run(tmp_path: Path) -> None:
    record, table, _ = _suite(tmp_path, "--no-wan", "--compile-backend", "no-such-backend")
    rows = {row["method"]: row for row in record["flux"]["rows"]}
    assert set(rows) == FLUX_METHODS
    compiled = {name for name in rows if name.endswith("regional compile")}
    assert all(rows[name]["status"] == "failed" for name in compiled), {n: rows[n] for n in compiled}
    assert "no-such-backend" in rows["full, regional compile"]["error"]
    assert all(row["status"] == "ok" for name, row in rows.items() if name not in compiled)
    assert "| full, regional compile | failed: InvalidBackend" in table
    assert record["wan"]["rows"] == [{"method": "wan", "status": "skipped", "reason": "--no-wan"}]
