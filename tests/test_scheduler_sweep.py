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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from families import flux, sdxl
from families_image import pixart_sigma, sana, sd3
from families_video import cogvideox
from spectrum_cache import SpectrumConfig, compute_steps, disable_spectrum, enable_spectrum, spectrum_summary
from test_integration import latents

# numpy 2 warns on every sigma conversion of several diffusers schedulers (thousands per run).
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

STEP_COUNTS = (1, 2, 3, 4, 12)
EVERY_STEP = SpectrumConfig(warmup_steps=max(STEP_COUNTS))
# warmup 1: forecasting from 2 steps on (compute_steps 2 -> [0], 12 -> [0, 2, 4, 7, 11]).
REAL = SpectrumConfig(warmup_steps=1)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], tuple[Any, dict[str, Any]]]
    scheduler: str  # a diffusers class name
    options: tuple[tuple[str, Any], ...] = ()  # from_config overrides
    calls: Callable[[int], int] = lambda n: n  # denoiser calls for n steps
    needs: str | None = None  # an optional module the scheduler imports
    min_steps: int = 1  # fewer steps than this the scheduler cannot run

    def make(self, config: Any) -> Any:
        import diffusers

        return getattr(diffusers, self.scheduler).from_config(config, **dict(self.options))


def _second_order(n: int) -> int:
    # A predictor and a corrector call per step; the last step's corrector is skipped (sigma_next = 0).
    return 2 * n - 1


def _pndm(n: int) -> int:
    # PLMS has no history on its first step, so it evaluates it twice (timesteps t0, t1, t1, t2, ...);
    # a one-step run is a single call.
    return n + 1 if n > 1 else 1


def _runge_kutta(n: int) -> int:
    # PNDM's Runge-Kutta warm-up: 4 calls on each of the first 3 steps (it needs at least 4 steps).
    return n + 9


FLOW_SIGMAS = (("use_flow_sigmas", True), ("prediction_type", "flow_prediction"), ("flow_shift", 3.0))
CASES = [
    Case("flux-flowmatch-euler", flux, "FlowMatchEulerDiscreteScheduler"),
    # FluxPipeline passes sigmas, which FlowMatchHeun's set_timesteps does not take; SD3's passes none.
    Case("sd3-flowmatch-heun", sd3, "FlowMatchHeunDiscreteScheduler", calls=_second_order),
    Case("flux-flowmatch-lcm", flux, "FlowMatchLCMScheduler"),
    Case("flux-unipc-flow", flux, "UniPCMultistepScheduler", FLOW_SIGMAS),
    # FluxPipeline passes mu, which DPMSolverMultistep takes only with exponential dynamic shifting.
    Case("flux-dpmpp-flow", flux, "DPMSolverMultistepScheduler",
         (*FLOW_SIGMAS, ("use_dynamic_shifting", True), ("time_shift_type", "exponential"))),
    Case("sana-dpmpp-flow", sana, "DPMSolverMultistepScheduler"),  # Sana's own (flow sigmas, shift 3)
    Case("pixart-dpmpp", pixart_sigma, "DPMSolverMultistepScheduler"),  # PixArt-Sigma's own
    Case("sdxl-euler", sdxl, "EulerDiscreteScheduler"),
    Case("sdxl-euler-ancestral", sdxl, "EulerAncestralDiscreteScheduler"),
    Case("sdxl-unipc", sdxl, "UniPCMultistepScheduler"),
    Case("sdxl-dpmpp-2m", sdxl, "DPMSolverMultistepScheduler"),
    Case("sdxl-dpmpp-2m-karras", sdxl, "DPMSolverMultistepScheduler", (("use_karras_sigmas", True),)),
    Case("sdxl-dpmpp-singlestep", sdxl, "DPMSolverSinglestepScheduler"),
    Case("sdxl-ddim", sdxl, "DDIMScheduler"),
    # The configuration Stable Diffusion checkpoints ship (PLMS only).
    Case("sdxl-pndm", sdxl, "PNDMScheduler", (("skip_prk_steps", True), ("steps_offset", 1)), calls=_pndm),
    # diffusers' default PNDM: Runge-Kutta on the first 3 steps, then PLMS.
    Case("sdxl-pndm-runge-kutta", sdxl, "PNDMScheduler", calls=_runge_kutta, min_steps=4),
    Case("sdxl-lms", sdxl, "LMSDiscreteScheduler"),
    Case("sdxl-heun", sdxl, "HeunDiscreteScheduler", calls=_second_order),
    Case("sdxl-heun-karras", sdxl, "HeunDiscreteScheduler", (("use_karras_sigmas", True),), calls=_second_order),
    Case("sdxl-kdpm2", sdxl, "KDPM2DiscreteScheduler", calls=_second_order),
    Case("sdxl-kdpm2-ancestral", sdxl, "KDPM2AncestralDiscreteScheduler", calls=_second_order),
    Case("sdxl-dpm-sde", sdxl, "DPMSolverSDEScheduler", calls=_second_order, needs="torchsde"),
    Case("sdxl-deis", sdxl, "DEISMultistepScheduler"),
    Case("sdxl-lcm", sdxl, "LCMScheduler"),
    Case("sdxl-tcd", sdxl, "TCDScheduler"),
    Case("cogvideox-ddim", cogvideox, "CogVideoXDDIMScheduler"),
    Case("cogvideox-dpm", cogvideox, "CogVideoXDPMScheduler"),
]


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
