"""benchmarks/checker_diagnostics.py: the probes run and print their figures; cleaning the masks keeps
ground-truth renders scoring as the checker does; a sampler started from a barely noised render gives
the render back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "checker_diagnostics.py"


def test_checker_diagnostics_smoke() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "2", "--num", "8", "--steps", "4", "--threads", "1",
                           "--from-truth", "1,0.5"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shapes = re.findall(r"^  (circle|square|triangle): (nan|[\d.]+) \((\d) of 2 found\)$", done.stdout, re.M)
    assert [s[0] for s in shapes] == ["circle", "square", "triangle"], done.stdout
    words = re.findall(r"^  (a [a-z ]+): x (nan|[\d.]+), y (nan|[\d.]+), r95 (nan|[\d.]+) px \((\d) of 2 found(, data \(([\d.]+), ([\d.]+)\))?\)$",
                       done.stdout, re.M)
    assert [w[0] for w in words] == ["a red circle on the left", "a red circle on the right", "a red circle at the top",
                                     "a red circle at the bottom", "a red circle in the center", "a small red circle",
                                     "a large red circle"], done.stdout
    assert [(w[6], w[7]) for w in words[:2]] == [("0.24", "0.50"), ("0.76", "0.50")], done.stdout  # the data's regions
    assert all(w[5] == "" for w in words[5:]), done.stdout
    rows = re.findall(r"^  ([a-z ]+): ([\d.]+) / ([\d.]+)$", done.stdout, re.M)
    scores = {name: (float(model), float(truth)) for name, model, truth in rows}
    assert set(scores) == {"as the checker", "holes filled", "largest region", "both"}, done.stdout
    for model, truth in scores.values():
        assert 0.0 <= model <= 1.0
        # Renders have solid, single-region masks: cleaning them must not cost the checker its accuracy.
        assert truth >= 0.9, done.stdout
    starts = dict(re.findall(r"^  t0 ([\d.]+): ([\d.]+) \(color [\d.]+ shape [\d.]+ position [\d.]+ size [\d.]+\)$",
                             done.stdout, re.M))
    assert set(starts) == {"1", "0.5"}, done.stdout
    assert all(0.0 <= float(v) <= 1.0 for v in starts.values())


def test_from_truth_at_low_noise_gives_the_render_back(load_benchmark) -> None:
    checker_diagnostics = load_benchmark("checker_diagnostics")
    from spectrum_cache.embedded import evaluate, load_pipeline

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    scenes = evaluate.eval_scenes(8)
    # One Euler step from t0 = 0.02 changes the render by about 2% of a velocity: the checker must see the
    # truth again (a wrong scale, packing or sign in the probe would not).
    near = checker_diagnostics.from_truth(pipe, scenes, 0.02, 50, 4.0)
    assert sum(near.total.values()) > 0 and near.accuracy >= 0.9


def test_checker_diagnostics_rejects_bad_from_truth() -> None:
    # Started together: each is mostly a process starting up, and pytest keeps the other core idle.
    started = [subprocess.Popen([sys.executable, str(SCRIPT), "--from-truth", bad], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for bad in ("0", "1.5", "a")]
    for process in started:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2 and "--from-truth takes comma-separated numbers in (0, 1]" in stderr, stderr
    # 0.02 is not on a 3-step schedule (1, 2/3, 1/3): the pipeline could not start there.
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "3", "--from-truth", "1,0.02"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--steps times each t0 must be a whole number; 0.02 x 3 is not" in done.stderr, done.stderr
