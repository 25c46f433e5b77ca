"""What `spectrum-cache bench` tells the user: the --methods grammar, the table's footnote, the plot's
labels, and how loudly the learned metrics' absence is reported."""

from __future__ import annotations

import re
import subprocess

import pytest

from spectrum_cache.bench.methods import TAIL_GRAMMAR, parse_method
from spectrum_cache.bench.report import markdown_table, nearer_points, quality_figure

from helpers import cli_env, console_script

# A value for each placeholder of the grammar's endings.
PLACEHOLDERS = {"W": "3", "K": "4"}


def _tail_alternatives() -> list[str]:
    """Every ending the --methods error names, one bracket at a time, placeholders filled in."""
    endings = []
    for group in re.findall(r"\[([^\]]+)\]", TAIL_GRAMMAR):
        for alternative in group.split("|"):
            endings.append(re.sub(r"[WK]$", lambda m: PLACEHOLDERS[m.group()], alternative))
    return endings


def test_the_methods_error_spells_out_every_ending_and_each_one_parses() -> None:
    with pytest.raises(ValueError) as raised:
        parse_method("bogus")
    message = str(raised.value)
    for part in ("-pair", "-pair-linear", "-pair-chebyshev", "-sigma", "spectrum-aALPHA-wW[-dD][-lL][-hK|-hfull][-winW]",
                 "{reuse|taylor1|taylor2}-aALPHA[-winW]"):
        assert part in message, part
    endings = _tail_alternatives()
    assert {"-pair", "-pair-linear", "-sigma", "-out", "-win3", "-warm4"} <= set(endings)
    for base in ("spectrum-a0.75-w0.5", "reuse-a3.0", "taylor2-a0.75"):
        for ending in endings:
            parse_method(base + ending)  # raises if the grammar promises what the parser refuses
    method = parse_method("spectrum-a0.75-w0.5-win3-warm4-out-pair-linear-sigma")
    assert (method.spectrum.window_size, method.spectrum.warmup_steps, method.spectrum.forecast_output) == (3, 4, True)
    assert (method.spectrum.guidance_forecast, method.spectrum.difference_forecaster, method.spectrum.time_axis) == (
        "paired", "linear", "sigma")


def _row(method: str, checker: float | None = None, **values: float) -> dict:
    row = {"method": method, "status": "done", "images": 2, "passes": 10.0, "ideal_speedup": 5.0, "speedup": 4.0,
           "seconds": 0.5, "psnr": 25.0, "psnr_identical": 0, "ssim": 0.9, "peak_memory_mib": 100.0,
           "memory_kind": "peak resident memory of the process", "lpips": None, "clip_score": None,
           "image_reward": None, "checker_accuracy": checker}
    return {**row, **values}


def test_the_footnote_explains_every_column_it_shows() -> None:
    with_checker = markdown_table([_row("full", 0.6, passes=50.0, speedup=1.0), _row("steps-10", 0.5)])
    assert "| checker acc. |" in with_checker and "| s / image |" in with_checker
    footnote = with_checker.strip().splitlines()[-1]
    assert "checker acc.: the share of the attributes each caption states" in footnote
    assert "s / image: seconds of one whole pipeline call per image (the fastest of --repeats)" in footnote
    without = markdown_table([_row("full", passes=50.0, speedup=1.0), _row("steps-10")])
    assert "checker" not in without and "s / image: seconds" in without


def test_no_plot_label_reads_as_another_points_unless_a_line_says_whose() -> None:
    """A row of close dots at a few checker values (the shape of the real checker panel): each label
    without a line back to its point is nearer its own point than any other."""
    from matplotlib.text import Text

    values = (0.614, 0.624, 0.634, 0.644)
    rows = [_row("full", 0.634, passes=50.0, speedup=1.0, psnr=None, ssim=None)]
    rows += [_row(f"spectrum-a{k}.0-w0.5", values[k % len(values)], speedup=2.0 + 0.09 * k, psnr=20 + (7 * k) % 15,
                  ssim=0.6 + ((11 * k) % 35) / 100) for k in range(32)]
    figure = quality_figure(rows, "labels")
    renderer = figure.canvas.get_renderer()
    checked = 0
    for ax in figure.axes:
        labels = [t for t in ax.texts if hasattr(t, "xy")]
        centres = {t.get_text(): tuple(ax.transData.transform(t.xy)) for t in labels}
        for label in labels:
            extent = Text.get_window_extent(label, renderer)
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            others = [c for name, c in centres.items() if name != label.get_text()]
            if label.arrow_patch is None:
                assert nearer_points(centres[label.get_text()], others, box) == 0, label.get_text()
            checked += 1
    assert checked == 3 * 32


@pytest.fixture(scope="module")
def metric_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """A small bench (the full sampler and Spectrum, 6 steps: one forecast step, 1 prompt) with each
    --extra-metrics mode."""
    started = {}
    # Started together: each is mostly a process starting up, and pytest keeps the other core idle.
    for name, flags in {"off": ["--extra-metrics", "off"], "auto": [], "auto -v": ["-v"],
                        "on": ["--extra-metrics", "on"]}.items():
        out = tmp_path_factory.mktemp("metrics") / "results"
        args = [console_script(), "bench", "--methods", "full,spectrum-a0.75-w0.5", "--steps", "6", "--num-prompts",
                "1", "--device", "cpu", "--out", str(out), *flags]
        started[name] = (args, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env=cli_env()))
    runs = {}
    for name, (args, process) in started.items():
        stdout, stderr = process.communicate(timeout=600)
        runs[name] = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        assert process.returncode == 0, stderr
    return runs


def _lines(proc: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith(f"spectrum-cache: {level}: ")]


def test_extra_metrics_off_or_auto_print_no_warning(metric_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    for name in ("off", "auto"):
        assert _lines(metric_runs[name], "warning") == [], metric_runs[name].stderr
        assert "learned metrics" not in metric_runs[name].stderr and "--extra-metrics off" not in metric_runs[name].stderr
    assert "learned metrics" not in metric_runs["off"].stderr  # off: not even with a note


def test_skipped_metrics_are_one_quiet_line_and_warnings_only_when_asked_for(
        metric_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    info = [line for line in _lines(metric_runs["auto -v"], "info") if "learned metrics" in line]
    assert _lines(metric_runs["auto -v"], "warning") == []
    warnings = _lines(metric_runs["on"], "warning")
    if not info:  # every learned metric loaded here: nothing to say in any mode
        assert warnings == []
        return
    (line,) = info
    skipped = [name for name in ("lpips", "clip_score", "image_reward") if f"{name}: skipped" in line]
    assert skipped and "--extra-metrics on warns for each" in line
    assert sorted(w.split(": ")[2] for w in warnings) == sorted(skipped)  # on: one warning per metric it lacks


def test_the_pass_counters_own_hook_raises_no_warning(metric_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """The bench counts passes with a hook inside the last block, which forecast steps skip on purpose;
    Spectrum's warning about hooks on skipped modules is not for the bench's user."""
    for proc in metric_runs.values():
        assert "SpectrumWarning" not in proc.stderr and "hooks of its own" not in proc.stderr, proc.stderr


def test_the_pass_counter_silences_only_its_own_warning() -> None:
    import warnings

    import torch

    from spectrum_cache.bench.measure import PassCounter
    from spectrum_cache.integrations import SpectrumWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with PassCounter(torch.nn.Sequential(torch.nn.Linear(2, 2))):
            warnings.warn("x: y has hooks of its own (PassCounter.__enter__.<locals>.count_pass)", SpectrumWarning)
            warnings.warn("x: gradients are enabled", SpectrumWarning)
        warnings.warn("after: z has hooks of its own (count_pass)", SpectrumWarning)
    assert [str(w.message) for w in caught] == ["x: gradients are enabled", "after: z has hooks of its own (count_pass)"]
