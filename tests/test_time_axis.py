"""time_axis="sigma": forecasts along the scheduler's noise level instead of the step index."""

from __future__ import annotations

import warnings

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from spectrum_cache import SpectrumConfig, SpectrumForecaster
from spectrum_cache.bench.methods import parse_method
from spectrum_cache.bench.runner import BenchError, shifted_scheduler
from spectrum_cache.forecast import TaylorForecaster, make_forecaster
from spectrum_cache.integrations.adapters import TimestepRange
from spectrum_cache.integrations.generation import BareClock, SchedulerClock

N = 20


def _shifted_positions(shift: float = 3.0, n: int = N) -> list[float]:
    sigmas = [1 - i / n for i in range(n)]
    levels = [shift * s / (1 + (shift - 1) * s) for s in sigmas]
    return [(n - 1) * (levels[0] - v) / (levels[0] - levels[-1]) for v in levels]


def test_default_axis_is_the_step_index_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(3, 5, generator=gen) for _ in range(N)]
    plain = SpectrumForecaster(num_inference_steps=N)
    spaced = SpectrumForecaster(num_inference_steps=N, time_points=list(range(N)))
    for s in (0, 1, 2, 3, 5, 8):
        plain.update(s, feats[s])
        spaced.update(s, feats[s])
    for s in (9, 12, 19):
        assert torch.equal(plain.predict(s), spaced.predict(s))


@pytest.mark.parametrize("kind", ["taylor1", "chebyshev-linear"])
def test_a_feature_linear_in_sigma_is_extrapolated_exactly_only_on_the_sigma_axis(kind: str) -> None:
    points = _shifted_positions()
    direction = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))

    def feature(step: int) -> torch.Tensor:
        return 1.0 + points[step] * direction  # linear in the noise level, not in the step

    def build(time_points):
        if kind == "taylor1":
            return TaylorForecaster(1, N, time_points)
        return SpectrumForecaster(blend_weight=0.0, num_inference_steps=N, time_points=time_points)

    on_sigma, on_step = build(points), build(None)
    for s in (0, 1, 2, 4):
        on_sigma.update(s, feature(s))
        on_step.update(s, feature(s))
    for s in (6, 10, 15):
        assert torch.allclose(on_sigma.predict(s), feature(s), atol=1e-4)
        assert not torch.allclose(on_step.predict(s), feature(s), atol=1e-2)


def test_chebyshev_fit_uses_the_positions() -> None:
    points = _shifted_positions()
    f = SpectrumForecaster(num_inference_steps=N, time_points=points)
    assert f.tau(0) == -1.0
    assert f.tau(3) == pytest.approx(2 * points[3] / N - 1)
    assert f.time(2.5) == pytest.approx((points[2] + points[3]) / 2)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (list(range(N - 1)), "one value per step"),
        ([0.0] * N, "strictly increasing"),
        ([float(s) for s in range(N - 1)] + [float("nan")], "finite"),
        ([float(s) - 1 for s in range(N)], "within"),
    ],
)
def test_bad_time_points_are_refused(points: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_forecaster("reuse", N, time_points=points)


def test_config_validates_the_axis() -> None:
    assert SpectrumConfig(time_axis="sigma").time_axis == "sigma"
    with pytest.raises(ValueError, match="time_axis must be one of step, sigma"):
        SpectrumConfig(time_axis="timestep")


def _clock(shift: float, n: int = N) -> SchedulerClock:
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(n, sigmas=[1 - i / n for i in range(n)])
    return SchedulerClock(scheduler, TimestepRange())


def test_scheduler_positions_follow_its_sigmas() -> None:
    linear, note = _clock(1.0).sigma_positions()
    assert note is None and linear == pytest.approx(list(range(N)), abs=1e-4)
    shifted, note = _clock(3.0).sigma_positions()
    assert note is None and shifted == pytest.approx(_shifted_positions(), abs=1e-4)
    assert shifted[0] == 0.0 and shifted[-1] == N - 1


def test_a_bare_loop_has_no_sigmas_and_says_so() -> None:
    positions, note = BareClock(N).sigma_positions()
    assert positions is None and "pass scheduler=" in note


def test_pipeline_runs_follow_the_axis() -> None:
    """On a linear flow-matching schedule the two axes agree; on a shifted one (SD3's shift 3) they differ,
    and the sigma axis's schedule of passes is unchanged."""
    from families import flux
    from spectrum_cache import disable_spectrum, enable_spectrum, spectrum_summary

    pipe, kwargs = flux()

    def run(axis: str, shift: float) -> torch.Tensor:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        enable_spectrum(pipe, SpectrumConfig(time_axis=axis, warmup_steps=3, flex_window=3.0))
        try:
            out = pipe(**{**kwargs, "num_inference_steps": N}, generator=torch.Generator().manual_seed(0)).images
            computed = spectrum_summary(pipe).branches[0].computed_steps
        finally:
            disable_spectrum(pipe)
        return out, computed

    (step_linear, passes), (sigma_linear, sigma_passes) = run("step", 1.0), run("sigma", 1.0)
    assert passes == sigma_passes
    assert torch.allclose(step_linear, sigma_linear, atol=1e-5)
    step_shifted, sigma_shifted = run("step", 3.0)[0], run("sigma", 3.0)[0]
    assert (step_shifted - sigma_shifted).abs().max() > 1e-4


def test_bare_loop_with_sigma_axis_warns_and_uses_steps() -> None:
    from families import flux
    from spectrum_cache import SpectrumWarning, disable_spectrum, enable_spectrum
    from helpers import denoise_loop, flux_inputs

    transformer = flux()[0].transformer
    outs = {}
    for axis in ("step", "sigma"):
        enable_spectrum(transformer, SpectrumConfig(num_inference_steps=N, time_axis=axis, warmup_steps=3))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outs[axis] = denoise_loop(transformer, N, **flux_inputs(transformer))
        disable_spectrum(transformer)
        notes = [str(w.message) for w in caught if issubclass(w.category, SpectrumWarning)]
        assert any("time_axis='sigma'" in n for n in notes) == (axis == "sigma")
    assert torch.equal(outs["step"], outs["sigma"])


def test_bench_names_and_shift() -> None:
    method = parse_method("spectrum-a3-w0.5-d2-l1-pair-linear-sigma")
    assert method.name == "spectrum-a3.0-w0.5-d2-l1.0-pair-linear-sigma"
    config = method.spectrum
    assert (config.degree, config.ridge_lambda, config.time_axis, config.difference_forecaster) == (2, 1.0, "sigma", "linear")
    assert parse_method("taylor2-a0.75-sigma").spectrum.time_axis == "sigma"
    assert parse_method("spectrum-a0.75-w1").spectrum.time_axis == "step"
    with pytest.raises(ValueError, match="degree must be an integer in"):
        parse_method("spectrum-a3-w0.5-d40")
    shifted = shifted_scheduler(FlowMatchEulerDiscreteScheduler(), 3.0)
    assert shifted.config.shift == 3.0
    from diffusers import DDIMScheduler

    with pytest.raises(BenchError, match="--scheduler-shift: .*DDIMScheduler has no sigma shift"):
        shifted_scheduler(DDIMScheduler(), 3.0)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "three"])
def test_scheduler_shift_option_refuses_bad_values(text: str) -> None:
    import argparse

    from spectrum_cache.options import shift_float

    with pytest.raises(argparse.ArgumentTypeError, match="must be a"):
        shift_float(text)
    assert shift_float("3") == 3.0
