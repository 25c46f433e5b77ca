"""Every scheduler the supported families ship with or users commonly swap in, at 1, 2, 3, 4 and 12 steps,
through real tiny pipelines: FLUX (or SD3, whose pipeline takes FlowMatchHeun) for the flow-matching
schedulers, SDXL for the epsilon ones, Sana, PixArt-Sigma and CogVideoX with their own.

For each (scheduler, step count) one plain run is compared with two Spectrum runs:

1. the every-step schedule gives exactly the plain run's output (same seed);
2. the summary's step count is the number of steps that ran. The denoiser calls of the plain run are
   counted, and each scheduler's calls per step are known: order-2 samplers (Heun, KDPM2, KDPM2 ancestral,
   DPM-SDE, FlowMatchHeun) make 2N - 1 calls for N steps, PNDM's PLMS warm-up makes N + 1 and its Runge-Kutta
   warm-up N + 9, the rest N;
3. with a schedule that forecasts, the computed steps are ``compute_steps(config, N)``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from schedulers import CASES, Case
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary
from helpers import latents

# numpy 2 warns on every sigma conversion of several diffusers schedulers (thousands per run).
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

STEP_COUNTS = (1, 2, 3, 4, 12)
EVERY_STEP = SpectrumConfig(warmup_steps=max(STEP_COUNTS))
# warmup 1: forecasting from 2 steps on (compute_steps 2 -> [0], 12 -> [0, 2, 4, 7, 11]).
REAL = SpectrumConfig(warmup_steps=1)


def _run(pipe: Any, kwargs: dict[str, Any], steps: int) -> torch.Tensor:
    # FluxPipeline passes no generator to scheduler.step, so stochastic schedulers (FlowMatchLCM) draw their
    # noise from the global generator: seed it too.
    torch.manual_seed(1)
    return latents(pipe, kwargs, num_inference_steps=steps)


def _denoiser(pipe: Any) -> torch.nn.Module:
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def _count_calls(pipe: Any, kwargs: dict[str, Any], steps: int) -> tuple[torch.Tensor, int]:
    """The plain run's output and how many times it called the denoiser."""
    calls = [0]
    handle = _denoiser(pipe).register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        out = _run(pipe, kwargs, steps)
    finally:
        handle.remove()
    return out, calls[0]


def _first_calls(summary: Any) -> list[Any]:
    """Each branch's trajectory of the first call in a step (``default``, not ``default[1]``)."""
    return [b for b in summary.branches if not b.branch.endswith("]")]


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_scheduler_sweep(case: Case, steps: int) -> None:
    if case.needs is not None:
        pytest.importorskip(case.needs, reason=f"{case.scheduler} needs {case.needs}")
    if steps < case.min_steps:
        pytest.skip(f"{case.scheduler} runs at least {case.min_steps} steps")
    pipe, kwargs = case.build()
    pipe.scheduler = case.make(pipe.scheduler.config)
    plain, calls = _count_calls(pipe, kwargs, steps)
    assert calls == case.calls(steps), f"{case.scheduler} made {calls} denoiser calls for {steps} steps"

    enable_spectrum(pipe, EVERY_STEP)
    every = _run(pipe, kwargs, steps)
    assert torch.equal(every, plain), "the every-step schedule changed the output"
    summary = spectrum_summary(pipe)
    first = _first_calls(summary)
    assert first
    for branch in first:
        assert branch.num_inference_steps == steps, str(summary)  # not the number of denoiser calls
        assert list(branch.computed_steps) == list(range(steps)) and not branch.forecast_steps, str(summary)
    # Every call beyond the first in a step is a branch of its own ("default[1]"), inside the same N steps.
    assert sum(len(b.computed_steps) for b in summary.branches) == calls, str(summary)

    disable_spectrum(pipe)
    enable_spectrum(pipe, REAL)
    out = _run(pipe, kwargs, steps)
    assert torch.isfinite(out).all()
    summary = spectrum_summary(pipe)
    expected = compute_steps(REAL, steps)
    for branch in _first_calls(summary):
        assert branch.num_inference_steps == steps, str(summary)
        assert list(branch.computed_steps) == expected, str(summary)
        assert list(branch.forecast_steps) == [s for s in range(steps) if s not in expected], str(summary)
    for branch in summary.branches:
        assert branch.num_inference_steps == steps, str(summary)
        ran = sorted(branch.computed_steps + branch.forecast_steps)
        assert len(ran) == len(set(ran)) and all(0 <= s < steps for s in ran), str(summary)
        # A forecast needs a recorded feature: a later call's trajectory forecasts only off the schedule.
        assert not set(branch.forecast_steps) & set(expected), str(summary)
    if steps > 1 and len(expected) < steps:
        assert summary.passes_saved > 0
