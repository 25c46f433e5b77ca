"""Every scheduler the supported families ship with or users commonly swap in, as test cases: the pipeline to
run it in, its class and options, and how many denoiser calls it makes for N steps. Used by the scheduler sweep
and calibrate's sweep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from families import flux, sdxl
from families_image import pixart_sigma, sana, sd3
from families_video import cogvideox


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
