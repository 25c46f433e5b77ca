"""spectrum-cache bench: a tiny run end to end, resume, 2 processes on gloo, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from spectrum_cache import SpectrumConfig, compute_steps
from spectrum_cache.bench.methods import default_methods, parse_method, parse_methods
from spectrum_cache.bench.prompts import bundled_prompts
from spectrum_cache.embedded.data import parse_caption
from spectrum_cache.cli import main

SRC = Path(__file__).resolve().parent.parent / "src"
STEPS = 8
# At 8 steps alpha=0.75 runs steps 0-4 and 6: 6 passes, so steps-6 is its plain-sampler mirror.
METHODS = "full,steps-6,spectrum-a0.75-w0.5,reuse-a0.75,diffusers-fbc-t0.2,diffusers-taylorseer-i2"
ARGS = ["--steps", str(STEPS), "--num-prompts", "2", "--methods", METHODS, "--extra-metrics", "off", "--device", "cpu"]


def _records(out: Path) -> dict[tuple[int, str], dict]:
    records = {}
    for path in sorted((out / "records").glob("*.json")):
        record = json.loads(path.read_text())
        records[record["prompt_index"], record["method"]] = record
    return records


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "results"
    assert main(["bench", *ARGS, "--out", str(out)]) == 0
    return out


def test_writes_records_table_plot_grid(bench_out: Path) -> None:
    records = _records(bench_out)
    names = [m.name for m in parse_methods(METHODS, STEPS)]
    assert set(records) == {(i, m) for i in range(2) for m in names}
    assert all(r["status"] == "done" for r in records.values())
    table = (bench_out / "table.md").read_text()
    for name in names:
        assert f"| {name} |" in table
    assert "PSNR" in table and "SSIM" in table and "checker acc." in table
    for png in ("quality_vs_speedup.png", "grid.png"):
        with Image.open(bench_out / png) as image:
            assert image.width > 200 and image.height > 100
    sizes = set()
    for record in records.values():
        with Image.open(bench_out / record["image"]) as image:
            sizes.add(image.size)
    (size,) = sizes  # every method's image at the model's own size
    assert size[0] == size[1] >= 8
    summary = {row["method"]: row for row in json.loads((bench_out / "summary.json").read_text())}
    assert set(summary) == set(names)


def test_values_are_sane(bench_out: Path) -> None:
    records = _records(bench_out)
    schedule = compute_steps(SpectrumConfig(flex_window=0.75), STEPS)
    for i in range(2):
        full = records[i, "full"]
        assert full["psnr"] is None and full["ssim"] is None and full["speedup"] == 1.0
        assert full["passes"] == STEPS and full["denoiser_calls"] == 2 * STEPS  # CFG: two calls a step
        spectrum = records[i, "spectrum-a0.75-w0.5"]
        # Timed in the same run as the full sampler: the speedup uses that run's full-sampler time.
        assert spectrum["reference_seconds"] == full["seconds"] == full["reference_seconds"]
        assert spectrum["passes"] == len(schedule) == spectrum["expected_passes"]
        assert spectrum["computed_steps"] == schedule
        assert records[i, "reuse-a0.75"]["passes"] == len(schedule)
        assert records[i, "steps-6"]["passes"] == spectrum["passes"]
        assert records[i, "steps-6"]["sampler_steps"] == 6
        assert records[i, "diffusers-fbc-t0.2"]["passes"] <= STEPS
        # TaylorSeer computes steps 0-2, then every other step from 4: 0 1 2 4 6 = 5 passes.
        assert records[i, "diffusers-taylorseer-i2"]["passes"] == records[i, "diffusers-taylorseer-i2"]["expected_passes"] == 5
        for name in ("steps-6", "spectrum-a0.75-w0.5", "reuse-a0.75"):
            record = records[i, name]
            assert 10 < record["psnr"] < 80
            assert 0 < record["ssim"] <= 1
            assert record["speedup"] > 0 and record["seconds"] > 0
            assert record["peak_memory_mib"] > 0 and record["memory_kind"].startswith("rss")
            assert 0 <= record["checker_accuracy"] <= 1 and record["checker_total"] > 0
        # A forecast is not the full sampler: the images must differ.
        assert records[i, "spectrum-a0.75-w0.5"]["psnr"] != records[i, "reuse-a0.75"]["psnr"]


def test_rerun_skips_finished_items(bench_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {key: r["finished_at"] for key, r in _records(bench_out).items()}
    capsys.readouterr()
    assert main(["bench", *ARGS, "--out", str(bench_out)]) == 0
    assert "ran 0 items here, 12 already done" in capsys.readouterr().out
    assert {key: r["finished_at"] for key, r in _records(bench_out).items()} == before

    # One record lost: only that item runs again.
    (bench_out / "records" / "0001-reuse-a0.75.json").unlink()
    assert main(["bench", *ARGS, "--out", str(bench_out)]) == 0
    assert "ran 1 items here, 11 already done" in capsys.readouterr().out
    after = _records(bench_out)
    assert after[1, "reuse-a0.75"]["finished_at"] > before[1, "reuse-a0.75"]
    assert all(after[key]["finished_at"] == t for key, t in before.items() if key != (1, "reuse-a0.75"))

    # The rerun timed the full sampler again for its speedup: times from another run are not comparable.
    rerun = after[1, "reuse-a0.75"]
    assert rerun["reference_seconds"] > 0 and rerun["reference_seconds"] != after[1, "full"]["seconds"]
    assert rerun["speedup"] == pytest.approx(rerun["reference_seconds"] / rerun["seconds"])

    # Fewer prompts is a subset of the same run: nothing to do.
    subset = [a if a != "2" else "1" for a in ARGS]
    assert main(["bench", *subset, "--out", str(bench_out)]) == 0
    assert "ran 0 items here, 6 already done" in capsys.readouterr().out

    # A subset of the methods and prompts: the report still covers every record in the folder.
    subset = [a if a != METHODS else "full,steps-6" for a in subset]
    assert main(["bench", *subset, "--out", str(bench_out)]) == 0
    table = (bench_out / "table.md").read_text()
    assert table.startswith("# embedded model, 8 steps, 2 prompts")
    for name in (m.name for m in parse_methods(METHODS, STEPS)):
        assert f"| {name} |" in table


def test_other_settings_refuse_the_same_folder(
    bench_out: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["bench", *ARGS[2:], "--steps", "9", "--out", str(bench_out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps" in err
    # New weights (the embedded model retrained): the old records must not be reused.
    monkeypatch.setattr("spectrum_cache.bench.runner.weights_fingerprint", lambda model: "retrained")
    assert main(["bench", *ARGS, "--out", str(bench_out)]) == 2
    assert "weights" in capsys.readouterr().err


def test_two_processes_on_gloo_give_the_same_records(bench_out: Path, tmp_path: Path) -> None:
    """The README's form, without --device: on a machine without a GPU the two processes must still
    split the prompts (accelerate sets up no process group there unless asked for CPU)."""
    out = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    args = [a for a in ARGS if a not in ("--device", "cpu")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "spectrum_cache.cli", "bench", *args, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| full |") == 1  # one table, from the main process
    one, two = _records(bench_out), _records(out)
    assert set(one) == set(two)
    assert {r["rank"] for r in two.values()} == {0, 1}  # both processes did work
    assert {(r["prompt_index"], r["rank"]) for r in two.values()} == {(0, 0), (1, 1)}  # each prompt once
    for key, record in one.items():
        assert two[key]["passes"] == record["passes"]
        assert two[key]["psnr"] == pytest.approx(record["psnr"], abs=1e-4) if record["psnr"] is not None else two[key]["psnr"] is None
    assert (out / "table.md").exists() and (out / "grid.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "full,bogus"], "unknown method 'bogus'"),
        (["--prompts", "/no/such/prompts.txt"], "--prompts"),
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
        (["--seed", "18446744073709551615"], "--seed 18446744073709551615: with 2 prompts the seeds would pass 2**64-1"),
        (["--guidance-scale", "nan"], "argument --guidance-scale: must be a finite number"),
        (["--methods", "spectrum-a0.75-w2"], "blend_weight"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--out", str(tmp_path / "r"), "--num-prompts", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "r").exists()  # nothing was started


def test_bad_input_under_python_m_is_one_line_too(tmp_path: Path) -> None:
    """torchrun runs `python -m spectrum_cache.cli`, where cli.py is __main__ (a second copy of the module)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "spectrum_cache.cli", "bench", "--methods", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown method 'nope'" in done.stderr


def test_method_names() -> None:
    assert parse_method("spectrum-a3-w1").name == "spectrum-a3.0-w1.0"
    assert parse_method("taylor2-a3").spectrum.forecaster == "taylor2"
    assert parse_method("diffusers-taylorseer-i6").cache_value == 6
    uniform = parse_method("taylor1-a0-win4-warm3")  # a fixed every-4th-step schedule
    assert uniform.name == "taylor1-a0.0-win4-warm3" and uniform.expected_passes(50) == 14
    assert compute_steps(uniform.spectrum, 50)[:5] == [0, 1, 2, 6, 10]
    assert parse_method("spectrum-a0.75-w0.5-out").spectrum.forecast_output
    assert not parse_method("spectrum-a0.75-w0.5").spectrum.forecast_output
    # The default fit is every recorded step (the paper's); -hfull names it, -hK fits the last K.
    assert parse_method("spectrum-a0.75-w0.5").spectrum.history is None  # the default: the full fit
    full_fit = parse_method("spectrum-a0.75-w0.5-hfull")
    assert full_fit.spectrum.history is None and full_fit.name == "spectrum-a0.75-w0.5-hfull"
    assert parse_method("spectrum-a0.75-w0.5-h6").spectrum.history == 6
    with pytest.raises(ValueError, match="history must be an integer >= 5"):  # fewer points than coefficients
        parse_method("spectrum-a0.75-w0.5-h4")
    assert parse_method("diffusers-fbc-t0.2").cache_value == 0.2
    with pytest.raises(ValueError):
        parse_method("diffusers-fbc-i3")
    assert [m.name for m in parse_methods("spectrum-a0.75-w0.5,steps-3", 50)][0] == "full"
    names = [m.name for m in default_methods(50)]
    # The paper's schedules at 50 steps: 14 and 10 passes, each mirrored by a plain sampler.
    assert names[:5] == ["full", "steps-15", "steps-14", "steps-11", "steps-10"]  # + TaylorSeer's 15 and 11
    assert {"spectrum-a0.75-w0.5", "spectrum-a3.0-w1.0", "reuse-a0.75", "taylor2-a3.0", "diffusers-mag"} <= set(names)
    assert len(names) == len(set(names))


def test_bundled_prompts_parse_into_scenes() -> None:
    prompts = bundled_prompts()
    assert len(prompts) >= 8 and len(set(prompts)) == len(prompts)
    stated = [parse_caption(p) for p in prompts]
    assert all(s is not None and " and ".join(o.phrase() for o in s) == p for s, p in zip(stated, prompts, strict=True))
    assert parse_caption("a photo of a cat") is None
    assert len(stated[0]) == prompts[0].count(" and ") + 1


def test_learned_metrics_load_or_leave_a_note() -> None:
    """Offline or without the extras, each learned metric is skipped with a note, never an error."""
    import numpy as np
    import torch

    from spectrum_cache.bench.extra_metrics import NAMES, ExtraMetrics

    metrics = ExtraMetrics.load(torch.device("cpu"))
    noted = {note.split(":")[0] for note in metrics.notes}
    assert set(metrics.models) | noted == set(NAMES) and not set(metrics.models) & noted
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    scores = metrics.score(image, image, "a red circle")
    assert all(scores[name] is None for name in noted)
    off = ExtraMetrics.load(torch.device("cpu"), enabled=False)
    assert off.models == {} and off.notes == [] and off.skipped_line() is None


def test_defaults_are_the_embedded_model_on_the_bundled_prompts() -> None:
    from spectrum_cache.bench.cli import _options
    from spectrum_cache.cli import build_parser

    options = _options(build_parser().parse_args(["bench"]))
    assert options.model is None and options.steps == 50
    assert list(options.prompts) == bundled_prompts()
    assert [m.name for m in options.methods] == [m.name for m in default_methods(50)]


def test_any_pipeline_folder_with_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--model takes a pipeline folder (here the embedded one, loaded as a generic model): no checker."""
    from spectrum_cache.embedded import weights_path

    out = tmp_path / "results"
    args = ["--model", str(weights_path()), "--steps", "6", "--num-prompts", "1", "--threads", "1",
            "--methods", "full,spectrum-a0.75-w0.5", "--extra-metrics", "off", "--device", "cpu"]
    assert main(["bench", *args, "--out", str(out)]) == 0
    # --extra-metrics off is what the user asked for: nothing to warn about (tests/test_bench_messages.py).
    assert "warning" not in capsys.readouterr().err
    records = _records(out)
    assert set(records) == {(0, "full"), (0, "spectrum-a0.75-w0.5")}
    assert all("checker_accuracy" not in r for r in records.values())
    assert "checker" not in (out / "table.md").read_text()
    assert records[0, "spectrum-a0.75-w0.5"]["passes"] == 5  # steps 0-4, then the forecast step 5
    assert json.loads((out / "run.json").read_text())["weights"] is not None


def test_plot_labels_never_overlap_and_equal_checker_values_say_so() -> None:
    """Points in a row (equal values) get labels on separate lines; a checker panel where every method
    scores the same shows that value as text instead of a row of stacked labels."""
    from matplotlib.text import Text

    from spectrum_cache.bench.report import quality_figure

    names = ["steps-14", "spectrum-a0.75-w0.5", "spectrum-a0.75-w1.0", "reuse-a0.75", "taylor1-a0.75", "diffusers-mag"]
    rows = [{"method": "full", "status": "done", "speedup": 1.0, "psnr": None, "ssim": None, "checker_accuracy": 1.0}]
    rows += [{"method": name, "status": "done", "speedup": 2.6 + 0.05 * k, "psnr": 30.0, "ssim": 0.9 + 0.001 * k,
              "checker_accuracy": 1.0} for k, name in enumerate(names)]
    figure = quality_figure(rows, "test")
    renderer = figure.canvas.get_renderer()
    psnr_axes, ssim_axes, checker_axes = figure.axes
    for ax in (psnr_axes, ssim_axes):
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        assert sorted(t.get_text() for t in ax.texts) == sorted(names)
        assert not any(a.overlaps(b) for k, a in enumerate(boxes) for b in boxes[k + 1:])
    assert [t.get_text() for t in checker_axes.texts][0] == "every method: 1.000"


def test_grid_rows_are_labelled_with_their_prompts(bench_out: Path) -> None:
    from spectrum_cache.bench.report import grid_figure, load_records

    records = load_records(bench_out)
    figure = grid_figure(records, [m.name for m in parse_methods(METHODS, STEPS)], bench_out)
    labels = [" ".join(ax.get_ylabel().split()) for ax in figure.axes if ax.get_ylabel()]
    prompts = {r["prompt_index"]: r["prompt"] for r in records}
    assert labels == [prompts[i] for i in sorted(prompts)]


def test_psnr_matches_torchmetrics() -> None:
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from spectrum_cache.bench.metrics import psnr

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 16, 16, generator=generator), torch.rand(3, 3, 16, 16, generator=generator)
    b = (a + 0.05 * b).clamp(0, 1)
    expected = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    assert psnr(a, b) == pytest.approx(float(expected), rel=1e-5)
    assert psnr(a, a) == float("inf")


# Runs the command with the bench extra's packages unimportable, as on a base install (and peft, which
# diffusers imports when it is there and which needs accelerate: a base install cannot have it).
WITHOUT_BENCH_EXTRA = (
    "import sys\n"
    "for name in ('accelerate', 'matplotlib', 'torchmetrics', 'peft'):\n"
    "    sys.modules[name] = None\n"
    "from spectrum_cache.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_bench_without_the_extra_names_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", WITHOUT_BENCH_EXTRA, "bench", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "spectrum-cache: error: bench needs accelerate, matplotlib, torchmetrics (the bench extra): "
        "pip install accelerate matplotlib torchmetrics, or pip install -e \".[bench]\" in a checkout of spectrum-cache"
    ]
    assert not (tmp_path / "r").exists()


def test_generate_compare_runs_without_the_bench_extra(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "c.png"
    done = subprocess.run([sys.executable, "-c", WITHOUT_BENCH_EXTRA, "generate", "a red circle on the left",
                           "--steps", "8", "--compare", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PSNR" in done.stdout and (tmp_path / "c-compare.png").exists()


def test_measure_works_without_the_resource_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no `resource`: the module must import and report the peak as unavailable."""
    import importlib

    import spectrum_cache.bench.measure as measure

    monkeypatch.setitem(sys.modules, "resource", None)
    reloaded = importlib.reload(measure)
    try:
        assert reloaded.lifetime_peak_rss_mib() is None
    finally:
        monkeypatch.undo()
        importlib.reload(measure)
    assert measure.lifetime_peak_rss_mib() > 0


def test_pair_suffix_selects_guidance_aware_forecasting() -> None:
    from spectrum_cache.bench.methods import parse_method

    plain = parse_method("spectrum-a0.75-w0.5")
    assert plain.spectrum.guidance_forecast == "independent"  # the paper's, whatever the library default
    paired = parse_method("spectrum-a3-w1-pair")
    assert (paired.name, paired.spectrum.guidance_forecast, paired.spectrum.difference_forecaster) == (
        "spectrum-a3.0-w1.0-pair", "paired", "reuse")
    assert parse_method("spectrum-a3-w1-pair-reuse").name == "spectrum-a3.0-w1.0-pair"
    linear = parse_method("taylor1-a3-pair-linear")
    assert linear.spectrum.forecaster == "taylor1" and linear.spectrum.difference_forecaster == "linear"
    assert paired.expected_passes(50) == plain.expected_passes(50) - 4  # a3.0: 10 passes, a0.75: 14
    with pytest.raises(ValueError):
        parse_method("spectrum-a3-w1-pair-quadratic")


def test_the_plot_marks_the_quality_speedup_frontier() -> None:
    from spectrum_cache.bench.report import FRONTIER_LABEL, pareto_frontier, quality_figure

    points = [(1.0, 40.0, "a"), (2.0, 35.0, "b"), (2.0, 30.0, "c"), (3.0, 36.0, "d"), (4.0, 20.0, "e"), (0.5, 39.0, "f")]
    # c loses to b and d; b to d (faster and better); f to a.
    assert [p[2] for p in pareto_frontier(points)] == ["a", "d", "e"]
    rows = [{"method": m, "status": "done", "speedup": x, "psnr": q, "ssim": q / 50} for x, q, m in points]
    rows.append({"method": "full", "status": "done", "speedup": 1.0, "psnr": None, "ssim": None})
    figure = quality_figure(rows, "t")
    lines = [line for line in figure.axes[0].get_lines() if line.get_label() == FRONTIER_LABEL]
    assert len(lines) == 1 and list(lines[0].get_xdata()) == [1.0, 3.0, 4.0]
