"""Step counts as the user asked for them: a refusal of an explicit schedule names the pipeline call's step count
(not one denoiser's part of it), and PNDM with its Runge-Kutta warm-up runs the steps it was asked for."""

from __future__ import annotations

import pytest
import torch

from families import sdxl, wan22
from helpers import flux_img2img
from spectrum_cache import SpectrumConfig, enable_spectrum, spectrum_summary

SCHEDULE = (0, 1, 2, 5, 9)


def test_a_two_expert_call_refuses_a_schedule_naming_the_calls_step_count():
    pipe, kwargs = wan22()  # boundary_ratio gives the first 8 of 12 steps to transformer, the last 4 to transformer_2
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=SCHEDULE))
    with pytest.raises(ValueError) as refused:
        pipe(**kwargs)
    message = str(refused.value)
    assert "planned for 12 steps, and this pipeline call has 12 steps, of which transformer runs 8 (steps 0 to 7)" \
        in message
    assert "boundary_ratio" in message and "the run has" not in message


def test_an_image_to_image_call_refuses_a_schedule_naming_the_calls_step_count():
    img2img, kwargs = flux_img2img()
    enable_spectrum(img2img, SpectrumConfig(num_inference_steps=20, compute_steps=SCHEDULE))
    kwargs = {**kwargs, "height": 8, "width": 12, "num_inference_steps": 20}
    with pytest.raises(ValueError, match=r"planned for 20 steps, and this pipeline call has 20 steps, of which "
                                         r"transformer runs 10 \(steps 10 to 19\): the call starts at step 10"):
        img2img(**kwargs, image=torch.rand(1, 3, 8, 12), strength=0.5)


def _runge_kutta_sdxl():
    from diffusers import PNDMScheduler

    pipe, kwargs = sdxl()
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)  # diffusers' default: skip_prk_steps=False
    assert not pipe.scheduler.config.skip_prk_steps
    return pipe, kwargs


def test_pndm_with_runge_kutta_runs_the_steps_asked_for():
    pipe, kwargs = _runge_kutta_sdxl()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=12, compute_steps=SCHEDULE))
    pipe(**kwargs)  # 21 denoiser calls: 4 on each of the 3 Runge-Kutta steps, then one on each of 9
    summary = spectrum_summary(pipe)
    assert all(b.num_inference_steps == 12 for b in summary.branches), str(summary)
    first = [b for b in summary.branches if not b.branch.endswith("]")]
    assert first and all(b.computed_steps == SCHEDULE for b in first), str(summary)
    # The Runge-Kutta steps' later calls are trajectories of their own, on those 3 steps only.
    later = [b for b in summary.branches if b.branch.endswith("]")]
    assert later and all(set(b.computed_steps) | set(b.forecast_steps) <= {0, 1, 2} for b in later), str(summary)


def test_pndm_with_runge_kutta_refuses_a_schedule_naming_the_steps_asked_for():
    pipe, kwargs = _runge_kutta_sdxl()
    enable_spectrum(pipe, SpectrumConfig(num_inference_steps=10, compute_steps=SCHEDULE))
    with pytest.raises(ValueError, match="planned for 10 steps, and the run has 12"):
        pipe(**kwargs)
