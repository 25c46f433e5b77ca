import pytest

from spectrum_cache import SpectrumConfig, compute_steps
from spectrum_cache.schedule import adaptive_schedule


def test_paper_schedule_alpha_075():
    steps = compute_steps(SpectrumConfig(flex_window=0.75), 50)
    assert steps == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 31, 38, 46]


def test_paper_schedule_alpha_3():
    steps = compute_steps(SpectrumConfig(flex_window=3.0, num_inference_steps=50))
    assert steps == [0, 1, 2, 3, 4, 6, 11, 19, 30, 44]


def test_schedule_for_28_steps():
    # FLUX's default step count: warm-up 0..4, then windows floor(2), floor(2.75), floor(3.5), ...
    assert compute_steps(SpectrumConfig(), 28) == [0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 25]


def test_argument_overrides_config_step_count():
    config = SpectrumConfig(num_inference_steps=10)
    assert compute_steps(config) == [0, 1, 2, 3, 4, 6, 8]
    assert compute_steps(config, 50)[-1] == 46


def test_fewer_steps_than_warmup_runs_all():
    assert compute_steps(SpectrumConfig(warmup_steps=5), 3) == [0, 1, 2]


def test_window_one_without_growth_runs_every_step():
    assert adaptive_schedule(20, 1, 1, 0.0) == list(range(20))


def test_compute_steps_needs_a_step_count():
    with pytest.raises(ValueError, match="num_inference_steps"):
        compute_steps(SpectrumConfig())
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        compute_steps(SpectrumConfig(), 0)


@pytest.mark.parametrize(
    "speedup, passes",
    [(4, 12), (50 / 14, 14), (5, 10), (1, 50), (2, 25), (1.5, 33), (3, 16)],
)
def test_for_speedup_picks_most_passes_within_speedup(speedup, passes):
    config = SpectrumConfig.for_speedup(speedup, 50)
    steps = compute_steps(config)
    assert len(steps) == passes
    assert 50 / len(steps) >= speedup - 1e-9
    assert config.num_inference_steps == 50


def test_for_speedup_is_the_most_passes_among_adaptive_schedules():
    # No schedule on the searched family with more passes still reaches 4x.
    config = SpectrumConfig.for_speedup(4, 50)
    passes = len(compute_steps(config))
    for window in (1, 2):
        for k in range(0, 20000):
            n = len(adaptive_schedule(50, 5, window, k / 1000))
            if n <= 50 / 4:
                assert n <= passes
                break


def test_for_speedup_keeps_other_fields():
    config = SpectrumConfig.for_speedup(3, 28, blend_weight=1.0, degree=3)
    assert config.blend_weight == 1.0 and config.degree == 3 and config.num_inference_steps == 28


@pytest.mark.parametrize("speedup", [0.5, 0.99, 9.0, float("nan")])
def test_for_speedup_rejects_out_of_range(speedup):
    # Fewest passes for N=50 with 5 warm-up steps is 6, so at most 50/6 = 8.33x.
    with pytest.raises(ValueError, match=r"speedup must be a number in \[1, 8\.33"):
        SpectrumConfig.for_speedup(speedup, 50)


def test_for_speedup_rejects_bad_step_count():
    with pytest.raises(ValueError, match="num_inference_steps"):
        SpectrumConfig.for_speedup(2, 0)
